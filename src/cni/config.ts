/**
 * The CNI invocation as data: the environment (CNI_COMMAND, CNI_CONTAINERID, ...) and the network
 * configuration on stdin, in Calico's field names (`etcd_endpoints`, `nodename`, `mtu`,
 * `ipam.assign_ipv4`, `policy_setup_timeout_seconds`, ...). Pure: never reads files or the network.
 * Every rejection is a CniError with the spec's code (4 environment, 6 undecodable, 7 invalid) and
 * a message that names the field and the value.
 */
import { hostname } from 'node:os';
import type { LogLevel } from '../log.ts';
import { CNI_CODES, CniError } from './errors.ts';

export const SUPPORTED_VERSIONS = ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'] as const;
export const COMMANDS = ['ADD', 'DEL', 'CHECK', 'VERSION', 'GC', 'STATUS'] as const;
export type CniCommand = (typeof COMMANDS)[number];

export interface CniEnv {
  readonly command: CniCommand;
  readonly containerId: string;
  readonly netns: string;
  readonly ifname: string;
  /** CNI_ARGS as key/value pairs (`K8S_POD_NAMESPACE`, `K8S_POD_NAME`, ...). */
  readonly args: Readonly<Record<string, string>>;
  readonly path: readonly string[];
}

export interface IpamConf {
  readonly type: string;
  readonly assignIpv4: boolean;
  readonly assignIpv6: boolean;
  readonly pools4: readonly string[];
  readonly pools6: readonly string[];
  /** Passed through into an IPAM-only result (host-local's `routes`). */
  readonly routes: readonly { dst: string; gw?: string }[];
}

export interface Attachment {
  readonly containerId: string;
  readonly ifname: string;
}

export interface NetConf {
  readonly cniVersion: string;
  readonly name: string;
  readonly type: string;
  readonly etcd: {
    readonly endpoints: readonly string[];
    readonly caFile?: string;
    readonly certFile?: string;
    readonly keyFile?: string;
  };
  readonly nodename: string;
  readonly mtu: number;
  readonly ipam: IpamConf;
  readonly logLevel: LogLevel;
  readonly policySetupTimeoutSeconds: number;
  /** Config `profiles`; undefined means the default (k8s: `kns.<namespace>`, else the network name). */
  readonly profiles?: readonly string[];
  readonly labels: Readonly<Record<string, string>>;
  readonly dns?: unknown;
  readonly prevResult?: unknown;
  /** GC: `cni.dev/valid-attachments`. */
  readonly validAttachments?: readonly Attachment[];
}

const invalid = (field: string, reason: string): CniError => new CniError(CNI_CODES.invalidConfig, `invalid network configuration: field ${field}: ${reason}`);
const show = (v: unknown): string => JSON.stringify(v) ?? String(v);

/** The spec's rule for container IDs: alphanumerics plus `_.-`, starting alphanumeric. */
const CONTAINER_ID_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;

export function isValidIfname(name: string): boolean {
  return name.length > 0 && name.length <= 15 && name !== '.' && name !== '..' && !/[/:\s]/.test(name);
}

export function parseCniArgs(raw: string | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const pair of (raw ?? '').split(';')) {
    if (!pair.trim()) continue;
    const eq = pair.indexOf('=');
    if (eq <= 0) throw new CniError(CNI_CODES.invalidEnv, `CNI_ARGS: '${pair}' is not KEY=VALUE`);
    out[pair.slice(0, eq).trim()] = pair.slice(eq + 1).trim();
  }
  return out;
}

export function parseEnv(env: Readonly<Record<string, string | undefined>>): CniEnv {
  const command = (env.CNI_COMMAND ?? '').toUpperCase();
  if (!(COMMANDS as readonly string[]).includes(command)) {
    throw new CniError(CNI_CODES.invalidEnv, `CNI_COMMAND '${env.CNI_COMMAND ?? ''}' is not one of ${COMMANDS.join(', ')}`);
  }
  const cmd = command as CniCommand;
  const perAttachment = cmd === 'ADD' || cmd === 'DEL' || cmd === 'CHECK';
  const containerId = env.CNI_CONTAINERID ?? '';
  const ifname = env.CNI_IFNAME ?? '';
  const netns = env.CNI_NETNS ?? '';
  if (perAttachment) {
    if (!containerId) throw new CniError(CNI_CODES.invalidEnv, `CNI_CONTAINERID is required for ${cmd}`);
    if (!CONTAINER_ID_RE.test(containerId)) throw new CniError(CNI_CODES.invalidEnv, `CNI_CONTAINERID '${containerId}': only letters, digits, '_', '.', '-', starting with a letter or digit`);
    if (!ifname) throw new CniError(CNI_CODES.invalidEnv, `CNI_IFNAME is required for ${cmd}`);
    if (!isValidIfname(ifname)) throw new CniError(CNI_CODES.invalidEnv, `CNI_IFNAME '${ifname}' is not a valid interface name (1-15 characters, no '/', ':' or spaces)`);
    if (cmd !== 'DEL' && !netns) throw new CniError(CNI_CODES.invalidEnv, `CNI_NETNS is required for ${cmd}`);
  }
  return { command: cmd, containerId, netns, ifname, args: parseCniArgs(env.CNI_ARGS), path: (env.CNI_PATH ?? '').split(':').filter(Boolean) };
}

/** Only `cniVersion` (VERSION may be called with nothing else). */
export function decodeJson(stdin: string): Record<string, unknown> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(stdin);
  } catch (err) {
    throw new CniError(CNI_CODES.undecodableConfig, `network configuration on stdin is not JSON: ${(err as Error).message}`);
  }
  if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) throw new CniError(CNI_CODES.undecodableConfig, 'network configuration on stdin is not a JSON object');
  return parsed as Record<string, unknown>;
}

export function checkVersion(raw: Record<string, unknown>): string {
  const v = raw.cniVersion;
  if (v === undefined || v === '') return '0.3.1'; // older runtimes omit it; the spec's floor for us
  if (typeof v !== 'string') throw invalid('cniVersion', `must be a string, got ${show(v)}`);
  if (!(SUPPORTED_VERSIONS as readonly string[]).includes(v)) {
    throw new CniError(CNI_CODES.incompatibleVersion, `cniVersion '${v}' is not supported (supported: ${SUPPORTED_VERSIONS.join(', ')})`);
  }
  return v;
}

function str(raw: Record<string, unknown>, field: string, path = field): string | undefined {
  const v = raw[field];
  if (v === undefined || v === null || v === '') return undefined;
  if (typeof v !== 'string') throw invalid(path, `must be a string, got ${show(v)}`);
  return v;
}

function bool(raw: Record<string, unknown>, field: string, path: string, dflt: boolean): boolean {
  const v = raw[field];
  if (v === undefined || v === null || v === '') return dflt;
  if (v === true || v === 'true') return true;
  if (v === false || v === 'false') return false;
  throw invalid(path, `must be "true" or "false", got ${show(v)}`);
}

function num(raw: Record<string, unknown>, field: string, dflt: number, min: number, max: number): number {
  const v = raw[field];
  if (v === undefined || v === null || v === '') return dflt;
  const n = typeof v === 'string' && /^\d+$/.test(v) ? Number(v) : v;
  if (typeof n !== 'number' || !Number.isFinite(n) || n < min || n > max) throw invalid(field, `must be a number from ${min} to ${max}, got ${show(v)}`);
  return n;
}

function strList(raw: Record<string, unknown>, field: string, path: string): string[] | undefined {
  const v = raw[field];
  if (v === undefined || v === null) return undefined;
  if (!Array.isArray(v) || v.some((x) => typeof x !== 'string' || x === '')) throw invalid(path, `must be a list of non-empty strings, got ${show(v)}`);
  return v as string[];
}

const LOG_LEVELS: Record<string, LogLevel> = { debug: 'debug', info: 'info', warning: 'warn', warn: 'warn', error: 'error', fatal: 'error', panic: 'error', none: 'silent' };

export interface ParseOptions {
  /** NODENAME from the environment, and the host name, for the `nodename` default. */
  readonly env?: Readonly<Record<string, string | undefined>>;
  readonly hostname?: string;
}

export function parseNetConf(raw: Record<string, unknown>, opts: ParseOptions = {}): NetConf {
  const cniVersion = checkVersion(raw);
  const name = str(raw, 'name');
  if (!name) throw invalid('name', 'is required');
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(name)) throw invalid('name', `'${name}': only letters, digits, '_', '.', '-', starting with a letter or digit`);
  const type = str(raw, 'type') ?? 'routecat';
  const dsType = str(raw, 'datastore_type');
  if (dsType && dsType !== 'etcdv3') throw invalid('datastore_type', `'${dsType}' is not supported (only etcdv3)`);
  const env = opts.env ?? {};
  const endpointsRaw = raw.etcd_endpoints ?? env.ETCD_ENDPOINTS;
  let endpoints: string[];
  if (endpointsRaw === undefined || endpointsRaw === '') endpoints = ['http://127.0.0.1:2379'];
  else if (typeof endpointsRaw === 'string') endpoints = endpointsRaw.split(',').map((s) => s.trim()).filter(Boolean);
  else if (Array.isArray(endpointsRaw) && endpointsRaw.every((e) => typeof e === 'string')) endpoints = endpointsRaw as string[];
  else throw invalid('etcd_endpoints', `must be a comma-separated string, got ${show(endpointsRaw)}`);
  for (const e of endpoints) {
    if (!/^(https?|unix|unixs):\/\/\S+$|^[\w.-]+:\d+$/.test(e)) throw invalid('etcd_endpoints', `'${e}' is not an endpoint URL (http://host:port)`);
  }
  const certFile = str(raw, 'etcd_cert_file');
  const keyFile = str(raw, 'etcd_key_file');
  if (Boolean(certFile) !== Boolean(keyFile)) throw invalid(certFile ? 'etcd_key_file' : 'etcd_cert_file', 'etcd_cert_file and etcd_key_file must be given together');

  const ipamRaw = raw.ipam ?? {};
  if (typeof ipamRaw !== 'object' || Array.isArray(ipamRaw) || ipamRaw === null) throw invalid('ipam', `must be an object, got ${show(ipamRaw)}`);
  const ipamObj = ipamRaw as Record<string, unknown>;
  const ipamType = str(ipamObj, 'type', 'ipam.type') ?? 'routecat-ipam';
  const assignIpv4 = bool(ipamObj, 'assign_ipv4', 'ipam.assign_ipv4', true);
  const assignIpv6 = bool(ipamObj, 'assign_ipv6', 'ipam.assign_ipv6', false);
  if (!assignIpv4 && !assignIpv6) throw invalid('ipam.assign_ipv4', 'assign_ipv4 and assign_ipv6 are both false: nothing to assign');
  const routesRaw = ipamObj.routes ?? [];
  if (!Array.isArray(routesRaw) || routesRaw.some((r) => !r || typeof r !== 'object' || typeof (r as { dst?: unknown }).dst !== 'string')) {
    throw invalid('ipam.routes', `must be a list of {"dst": "<cidr>"}, got ${show(routesRaw)}`);
  }
  const ipam: IpamConf = {
    type: ipamType,
    assignIpv4,
    assignIpv6,
    pools4: strList(ipamObj, 'ipv4_pools', 'ipam.ipv4_pools') ?? [],
    pools6: strList(ipamObj, 'ipv6_pools', 'ipam.ipv6_pools') ?? [],
    routes: routesRaw as { dst: string; gw?: string }[],
  };

  const levelName = (str(raw, 'log_level') ?? 'warning').toLowerCase();
  const logLevel = LOG_LEVELS[levelName];
  if (!logLevel) throw invalid('log_level', `'${levelName}' is not one of ${Object.keys(LOG_LEVELS).join(', ')}`);

  const labelsRaw = raw.labels ?? {};
  if (typeof labelsRaw !== 'object' || Array.isArray(labelsRaw) || labelsRaw === null || Object.values(labelsRaw).some((v) => typeof v !== 'string')) {
    throw invalid('labels', `must be an object of string values, got ${show(labelsRaw)}`);
  }

  let mtu = num(raw, 'mtu', 1500, 0, 65535);
  if (mtu === 0) mtu = 1500;
  if (mtu < 68) throw invalid('mtu', `must be at least 68, got ${mtu}`);

  let validAttachments: Attachment[] | undefined;
  const va = raw['cni.dev/valid-attachments'] ?? raw['cni.dev/attachments'];
  if (va !== undefined) {
    if (!Array.isArray(va)) throw invalid('cni.dev/valid-attachments', `must be a list, got ${show(va)}`);
    validAttachments = va.map((a, i) => {
      const o = (a ?? {}) as Record<string, unknown>;
      if (typeof o.containerID !== 'string' || typeof o.ifname !== 'string') throw invalid(`cni.dev/valid-attachments[${i}]`, `needs containerID and ifname strings, got ${show(a)}`);
      return { containerId: o.containerID, ifname: o.ifname };
    });
  }

  return {
    cniVersion,
    name,
    type,
    etcd: { endpoints, caFile: str(raw, 'etcd_ca_cert_file'), certFile, keyFile },
    nodename: str(raw, 'nodename') ?? (env.NODENAME || undefined) ?? opts.hostname ?? hostname(),
    mtu,
    ipam,
    logLevel,
    policySetupTimeoutSeconds: num(raw, 'policy_setup_timeout_seconds', 10, 0, 3600),
    profiles: strList(raw, 'profiles', 'profiles'),
    labels: labelsRaw as Record<string, string>,
    dns: raw.dns,
    prevResult: raw.prevResult,
    validAttachments,
  };
}
