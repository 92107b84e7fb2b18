/**
 * Names Calico's CNI plugin gives things, as pure functions: the host-side veth, the IPAM handle,
 * the WorkloadEndpoint's name and identity, and the IPv6 link-local address of a MAC.
 */
import { createHash } from 'node:crypto';
import type { CniEnv, NetConf } from './config.ts';

/** Calico's fixed MAC for every host-side workload veth. */
export const HOST_VETH_MAC = 'ee:ee:ee:ee:ee:ee';
/** The IPv4 gateway every workload routes via (answered by proxy ARP on the host veth). */
export const GATEWAY_V4 = '169.254.1.1';
export const DEFAULT_IFACE_PREFIX = 'cali';

/** `cali` + the first 11 hex digits of sha1(key): 15 characters, the kernel's limit. */
export function hostVethName(key: string, prefix = DEFAULT_IFACE_PREFIX): string {
  return prefix + createHash('sha1').update(key).digest('hex').slice(0, Math.max(1, 15 - prefix.length));
}

/** The EUI-64 IPv6 link-local address of a MAC (ee:ee:ee:ee:ee:ee -> fe80::ecee:eeff:feee:eeee). */
export function linkLocalFromMac(mac: string): string {
  const b = mac.split(':').map((h) => parseInt(h, 16));
  if (b.length !== 6 || b.some((x) => !Number.isInteger(x) || x < 0 || x > 255)) throw new Error(`'${mac}' is not a MAC address`);
  const eui = [b[0] ^ 0x02, b[1], b[2], 0xff, 0xfe, b[3], b[4], b[5]];
  const groups: string[] = [];
  for (let i = 0; i < 8; i += 2) groups.push(((eui[i] << 8) | eui[i + 1]).toString(16));
  return `fe80::${groups.join(':')}`;
}

export const HOST_LINK_LOCAL = linkLocalFromMac(HOST_VETH_MAC);

/** Who the attachment is for: a Kubernetes pod (CNI_ARGS K8S_POD_*) or a plain CNI container. */
export interface WorkloadIdentity {
  readonly orchestrator: 'k8s' | 'cni';
  readonly namespace: string;
  /** k8s: the pod name; cni: the container id. */
  readonly workload: string;
  readonly pod?: string;
  readonly node: string;
  readonly containerId: string;
  readonly endpoint: string;
  readonly wepName: string;
  readonly hostVeth: string;
  readonly handleId: string;
}

const esc = (s: string): string => s.replace(/-/g, '--');

/** Calico's WorkloadEndpoint name: `<node>-k8s-<pod>-<endpoint>` / `<node>-cni-<containerid>-<endpoint>`, dashes doubled. */
export function wepName(node: string, orchestrator: 'k8s' | 'cni', workload: string, endpoint: string): string {
  return `${esc(node)}-${orchestrator}-${esc(workload)}-${esc(endpoint)}`;
}

export function handleId(network: string, containerId: string): string {
  return `${network}.${containerId}`;
}

export function identify(env: CniEnv, conf: NetConf): WorkloadIdentity {
  const ns = env.args.K8S_POD_NAMESPACE;
  const pod = env.args.K8S_POD_NAME;
  const k8s = Boolean(ns && pod);
  const namespace = k8s ? ns! : 'default';
  const workload = k8s ? pod! : env.containerId;
  const orchestrator = k8s ? 'k8s' : 'cni';
  return {
    orchestrator,
    namespace,
    workload,
    pod: k8s ? pod : undefined,
    node: conf.nodename,
    containerId: env.containerId,
    endpoint: env.ifname,
    wepName: wepName(conf.nodename, orchestrator, workload, env.ifname),
    hostVeth: hostVethName(k8s ? `${namespace}.${pod}` : env.containerId),
    handleId: handleId(conf.name, env.containerId),
  };
}
