/**
 * CNI results as the spec's JSON, in the version the configuration asked for: 1.x without the
 * per-address `version`, 0.3.x/0.4.0 with it. Pure.
 */
import { GATEWAY_V4, HOST_LINK_LOCAL } from './naming.ts';

export interface ResultInterface {
  readonly name: string;
  readonly mac?: string;
  readonly sandbox?: string;
}

export interface ResultIp {
  readonly address: string;
  readonly gateway?: string;
  readonly interface?: number;
}

export interface ResultRoute {
  readonly dst: string;
  readonly gw?: string;
}

export interface CniResult {
  readonly cniVersion: string;
  readonly interfaces?: readonly ResultInterface[];
  readonly ips: readonly ResultIp[];
  readonly routes?: readonly ResultRoute[];
  readonly dns?: unknown;
}

export const isV6 = (cidr: string): boolean => cidr.includes(':');

/** 0.3.x and 0.4.0 results carry `version: "4" | "6"` on every address. */
function versioned(cniVersion: string, ip: ResultIp): Record<string, unknown> {
  const out: Record<string, unknown> = { ...ip };
  if (cniVersion.startsWith('0.')) out.version = isV6(ip.address) ? '6' : '4';
  return out;
}

export function encodeResult(r: CniResult): string {
  const out: Record<string, unknown> = { cniVersion: r.cniVersion };
  if (r.interfaces) out.interfaces = r.interfaces;
  out.ips = r.ips.map((ip) => versioned(r.cniVersion, ip));
  if (r.routes && r.routes.length > 0) out.routes = r.routes;
  out.dns = r.dns && typeof r.dns === 'object' ? r.dns : {};
  return JSON.stringify(out);
}

export interface AttachmentResultInput {
  readonly cniVersion: string;
  readonly hostVeth: string;
  readonly containerIf: string;
  readonly containerMac: string;
  readonly sandbox: string;
  readonly ipv4: readonly string[];
  readonly ipv6: readonly string[];
  readonly dns?: unknown;
}

/** The ADD result: [host veth, container interface], addresses on interface 1, default routes. */
export function attachmentResult(i: AttachmentResultInput): CniResult {
  const ips: ResultIp[] = [...i.ipv4, ...i.ipv6].map((address) => ({ address, interface: 1 }));
  const routes: ResultRoute[] = [];
  if (i.ipv4.length > 0) routes.push({ dst: '0.0.0.0/0', gw: GATEWAY_V4 });
  if (i.ipv6.length > 0) routes.push({ dst: '::/0', gw: HOST_LINK_LOCAL });
  return {
    cniVersion: i.cniVersion,
    interfaces: [{ name: i.hostVeth, mac: 'ee:ee:ee:ee:ee:ee' }, { name: i.containerIf, mac: i.containerMac, sandbox: i.sandbox }],
    ips,
    routes,
    dns: i.dns,
  };
}

/** The IPAM-only result (routecat-ipam): addresses without interfaces, the configured routes. */
export function ipamResult(cniVersion: string, addresses: readonly string[], routes: readonly ResultRoute[], dns?: unknown): CniResult {
  return { cniVersion, ips: addresses.map((address) => ({ address })), routes, dns };
}
