/**
 * The CNI plugin (`routecat` with CNI_COMMAND set): Calico's pure layer-3 attachment.
 *   ADD    addresses from IPAM under `<network>.<CNI_CONTAINERID>` -> veth pair (host `cali<hash>`,
 *          MAC ee:ee:ee:ee:ee:ee; container CNI_IFNAME with /32 and /128, routes via 169.254.1.1 and
 *          the host veth's link-local) -> WorkloadEndpoint -> wait for the agent's "up" report.
 *          A failure midway undoes what this invocation did, in reverse.
 *   DEL    idempotent and best effort: release by handle, delete the endpoint, delete the veth.
 *   CHECK  interface, addresses, routes, endpoint as ADD left them.
 *   GC     releases this network's handles not in `cni.dev/valid-attachments`.
 *   STATUS error 50 when the datastore cannot be reached.
 * It never touches an interface other than the attachment's own two.
 */
import { errorMessage } from '../errors.ts';
import { logger } from '../log.ts';
import { createExecRunner } from '../agent/dataplane/exec.ts';
import { CNI_CODES, CniError } from './errors.ts';
import type { CniEnv, NetConf } from './config.ts';
import { identify, type WorkloadIdentity } from './naming.ts';
import { attachmentResult, encodeResult, isV6 } from './result.ts';
import { VethDataplane } from './veth.ts';
import { buildWep, networkProfile, waitForEndpointUp } from './endpoint.ts';
import { invoke, toCniError, type Handlers, type InvokeOptions } from './invoke.ts';
import type { Backend, BackendFactory } from './backend.ts';
import type { AssignRequest } from '../ipam/api.ts';

const log = logger('cni');

export interface CniDeps extends InvokeOptions {
  readonly backend?: BackendFactory;
  readonly veth?: VethDataplane;
  readonly sleep?: (ms: number) => Promise<void>;
}

type Ctx = { env: CniEnv; conf: NetConf; backend: Backend };

function vethSpec(env: CniEnv, conf: NetConf, id: WorkloadIdentity, addrs: readonly string[]) {
  return { hostVeth: id.hostVeth, containerIf: env.ifname, netns: env.netns, mtu: conf.mtu, ipv4: addrs.filter((a) => !isV6(a)), ipv6: addrs.filter(isV6) };
}

/** The IPAM request of an ADD (both the main plugin and the standalone routecat-ipam). */
export function assignRequest(id: WorkloadIdentity, conf: NetConf, attrs: Record<string, string>): AssignRequest {
  return {
    handleId: id.handleId,
    hostname: id.node,
    num4: conf.ipam.assignIpv4 ? 1 : 0,
    num6: conf.ipam.assignIpv6 ? 1 : 0,
    pools4: conf.ipam.pools4.length > 0 ? conf.ipam.pools4 : undefined,
    pools6: conf.ipam.pools6.length > 0 ? conf.ipam.pools6 : undefined,
    attributes: attrs,
  };
}

function attributes(id: WorkloadIdentity): Record<string, string> {
  return { namespace: id.namespace, ...(id.pod ? { pod: id.pod } : {}), node: id.node, containerID: id.containerId, timestamp: new Date().toISOString() };
}

async function add({ env, conf, backend }: Ctx, veth: VethDataplane, sleep?: (ms: number) => Promise<void>): Promise<string> {
  const id = identify(env, conf);
  if (!(await veth.netnsExists(env.netns))) throw new CniError(CNI_CODES.unknownContainer, `network namespace ${env.netns} does not exist`);
  if (await veth.hostLink(id.hostVeth)) {
    throw new CniError(CNI_CODES.interfaceExists, `host interface ${id.hostVeth} for ${id.orchestrator === 'k8s' ? `pod ${id.namespace}/${id.workload}` : `container ${id.containerId}`} already exists (ADD of an existing attachment; DEL it first)`);
  }
  if (await veth.containerLink(env.netns, env.ifname)) throw new CniError(CNI_CODES.interfaceExists, `interface ${env.ifname} already exists in ${env.netns}`);

  const undo: { what: string; run: () => Promise<unknown> }[] = [];
  try {
    let assigned;
    try {
      undo.push({ what: `release handle ${id.handleId}`, run: () => backend.ipam.releaseByHandle(id.handleId) });
      assigned = await backend.ipam.autoAssign(assignRequest(id, conf, attributes(id)));
    } catch (err) {
      throw toCniError(err, `IPAM assignment for ${id.handleId}`);
    }
    if (conf.ipam.assignIpv4 && assigned.ipv4.length === 0) throw new CniError(CNI_CODES.ipamFailed, `IPAM assigned no IPv4 address for ${id.handleId}`);
    if (conf.ipam.assignIpv6 && assigned.ipv6.length === 0) throw new CniError(CNI_CODES.ipamFailed, `IPAM assigned no IPv6 address for ${id.handleId}`);
    const addrs = [...assigned.ipv4, ...assigned.ipv6];
    log.info(`ADD ${id.containerId}: ${addrs.join(', ')} on ${id.hostVeth} <-> ${env.ifname}`);

    undo.push({ what: `delete ${id.hostVeth}`, run: () => veth.deleteHostVeth(id.hostVeth) });
    let containerMac: string;
    try {
      ({ containerMac } = await veth.create(vethSpec(env, conf, id, addrs)));
    } catch (err) {
      throw toCniError(err, `setting up ${id.hostVeth} / ${env.ifname}`);
    }

    if (!conf.profiles && id.orchestrator === 'cni') {
      await backend.endpoints.ensureProfile(networkProfile(conf.name)).catch((err: unknown) => log.warn(`profile ${conf.name}: ${errorMessage(err)}`));
    }
    const wep = buildWep({ id, network: conf.name, containerMac, ipNetworks: addrs, profiles: conf.profiles, labels: conf.labels });
    undo.push({ what: `delete WorkloadEndpoint ${id.namespace}/${id.wepName}`, run: () => backend.endpoints.delete(id.namespace, id.wepName) });
    try {
      await backend.endpoints.put(wep);
    } catch (err) {
      throw toCniError(err, `writing WorkloadEndpoint ${id.namespace}/${id.wepName}`);
    }

    if (conf.policySetupTimeoutSeconds > 0) {
      const up = await waitForEndpointUp(backend.endpoints, id.node, id.namespace, id.wepName, conf.policySetupTimeoutSeconds * 1000, sleep);
      // As Calico: a slow agent delays the container by at most the timeout, it does not fail it.
      if (!up) log.warn(`endpoint ${id.namespace}/${id.wepName} not reported up by the agent within ${conf.policySetupTimeoutSeconds}s; continuing`);
    }
    return encodeResult(attachmentResult({ cniVersion: conf.cniVersion, hostVeth: id.hostVeth, containerIf: env.ifname, containerMac, sandbox: env.netns, ipv4: assigned.ipv4, ipv6: assigned.ipv6, dns: conf.dns }));
  } catch (err) {
    for (const step of undo.reverse()) {
      try {
        await step.run();
      } catch (e) {
        log.warn(`rollback: ${step.what} failed: ${errorMessage(e)}`);
      }
    }
    throw err;
  }
}

async function del({ env, conf, backend }: Ctx, veth: VethDataplane): Promise<undefined> {
  const id = identify(env, conf);
  let datastoreErr: unknown;
  let ownsVeth = true;
  try {
    const released = await backend.ipam.releaseByHandle(id.handleId);
    const wep = await backend.endpoints.get(id.namespace, id.wepName);
    // A newer sandbox of the same pod may own the endpoint (and veth name) by now: leave both alone.
    if (wep?.spec?.containerID && wep.spec.containerID !== id.containerId) ownsVeth = false;
    else if (wep) await backend.endpoints.delete(id.namespace, id.wepName);
    log.info(`DEL ${id.containerId}: released ${released.join(', ') || 'nothing'}${ownsVeth ? '' : `; ${id.wepName} belongs to ${wep?.spec?.containerID}, kept`}`);
  } catch (err) {
    datastoreErr = err;
  }
  if (ownsVeth) await veth.deleteHostVeth(id.hostVeth);
  if (datastoreErr) throw toCniError(datastoreErr, `DEL ${id.containerId}`);
  return undefined;
}

async function check({ env, conf, backend }: Ctx, veth: VethDataplane): Promise<undefined> {
  const id = identify(env, conf);
  const addrs = await backend.ipam.ipsByHandle(id.handleId);
  const problems: string[] = [];
  if (addrs.length === 0) problems.push(`no addresses allocated under handle ${id.handleId}`);
  problems.push(...(await veth.check(vethSpec(env, conf, id, addrs))));
  const wep = await backend.endpoints.get(id.namespace, id.wepName);
  if (!wep) problems.push(`WorkloadEndpoint ${id.namespace}/${id.wepName} is missing`);
  else {
    const want = [...addrs].sort().join(',');
    const have = [...(wep.spec?.ipNetworks ?? [])].sort().join(',');
    if (want !== have) problems.push(`WorkloadEndpoint ${id.wepName} has ipNetworks [${have}], IPAM has [${want}]`);
    if (wep.spec?.interfaceName !== id.hostVeth) problems.push(`WorkloadEndpoint ${id.wepName} has interfaceName ${wep.spec?.interfaceName}, expected ${id.hostVeth}`);
  }
  const prev = conf.prevResult as { ips?: { address?: string }[] } | undefined;
  if (prev?.ips) {
    const prevIps = prev.ips.map((i) => i.address ?? '').sort().join(',');
    if (prevIps !== [...addrs].sort().join(',')) problems.push(`prevResult addresses [${prevIps}] differ from IPAM's [${[...addrs].sort().join(',')}]`);
  }
  if (problems.length > 0) throw new CniError(CNI_CODES.checkFailed, `CHECK ${id.containerId}/${env.ifname}: ${problems.join('; ')}`);
  return undefined;
}

/** Releases this network's handles that no valid attachment names; returns the handles released. */
export async function gcHandles(conf: NetConf, backend: Backend): Promise<{ handle: string; released: string[] }[]> {
  if (!conf.validAttachments) throw new CniError(CNI_CODES.invalidConfig, 'invalid network configuration: field cni.dev/valid-attachments: required for GC');
  const prefix = `${conf.name}.`;
  const valid = new Set(conf.validAttachments.map((a) => `${prefix}${a.containerId}`));
  const handles = new Set<string>();
  for (const a of await backend.ipam.allocations()) if (a.handleId?.startsWith(prefix) && !valid.has(a.handleId)) handles.add(a.handleId);
  const out: { handle: string; released: string[] }[] = [];
  for (const handle of handles) out.push({ handle, released: await backend.ipam.releaseByHandle(handle) });
  return out;
}

async function gc({ conf, backend }: Ctx, veth: VethDataplane): Promise<undefined> {
  const stale = await gcHandles(conf, backend);
  if (stale.length === 0) return undefined;
  const released = new Set(stale.flatMap((s) => s.released));
  const containers = new Set(stale.map((s) => s.handle.slice(conf.name.length + 1)));
  // Endpoints of this node whose container and addresses were just collected go too.
  for (const wep of await backend.endpoints.listForNode(conf.nodename)) {
    const s = wep.spec;
    if (!s?.containerID || !containers.has(s.containerID)) continue;
    if (!(s.ipNetworks ?? []).every((n) => released.has(n))) continue;
    await backend.endpoints.delete(wep.metadata.namespace ?? 'default', wep.metadata.name);
    if (s.interfaceName) await veth.deleteHostVeth(s.interfaceName).catch((err: unknown) => log.warn(`GC: ${errorMessage(err)}`));
  }
  log.info(`GC ${conf.name}: released ${stale.map((s) => `${s.handle} (${s.released.join(', ')})`).join('; ')}`);
  return undefined;
}

export async function status({ backend }: Ctx): Promise<undefined> {
  try {
    await backend.ping();
  } catch (err) {
    throw new CniError(CNI_CODES.pluginNotAvailable, `datastore unreachable: ${errorMessage(err)}`);
  }
  return undefined;
}

/** The plugin's entry point: returns the exit status; the result or error JSON goes to stdout. */
export function runCni(env: Readonly<Record<string, string | undefined>>, stdin: string, stdout: (text: string) => void, deps: CniDeps = {}): Promise<number> {
  const veth = deps.veth ?? new VethDataplane(createExecRunner({ timeoutMs: 20_000 }));
  const handlers: Handlers = {
    ADD: (ctx) => add(ctx, veth, deps.sleep),
    DEL: (ctx) => del(ctx, veth),
    CHECK: (ctx) => check(ctx, veth),
    GC: (ctx) => gc(ctx, veth),
    STATUS: (ctx) => status(ctx),
  };
  return invoke(env, stdin, stdout, handlers, deps);
}
