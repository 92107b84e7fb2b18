/**
 * `routecat ctl ipam show | check | release`: calicoctl ipam's habits over block IPAM. Reads the
 * datastore, formats text; the only write is `release`, which goes through the Ipam API. The
 * command-line parsing lives in src/cli/ctl.ts; this module gets parsed arguments and an etcd
 * connection description.
 */
import type { EtcdOptions } from '../datastore/etcd.ts';
import { UsageError, errorMessage } from '../errors.ts';
import type { Allocation, BlockInfo, Ipam } from './api.ts';
import { cidrContains, cidrSize, parseCidr } from './block-math.ts';
import { canonicalIp, consistencyProblems, endpointIps, findLeaks, nodeTunnelIps } from './check.ts';
import { createIpam } from './ipam.ts';
import { HANDLE_PREFIX, IPPOOL_PREFIX, NODE_PREFIX, WORKLOAD_ENDPOINT_PREFIX, blockPrefix, decodeBlock, decodeHandle } from './keys.ts';
import { decodePool, type Pool } from './pools.ts';

export interface IpamCtlIo {
  out(text: string): void;
  err(text: string): void;
}

export interface IpamCtlArgs {
  readonly action: string | undefined;
  /** `--ip` values and positional addresses together. */
  readonly ips: readonly string[];
  readonly showBlocks: boolean;
}

/** Columns separated by three spaces, padded to the widest cell (as `ctl get`). */
export function formatColumns(rows: readonly (readonly string[])[]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('   ').trimEnd()).join('\n');
}

function percent(part: bigint, whole: bigint): string {
  if (whole === 0n) return '0%';
  return `${Math.round((Number(part) / Number(whole)) * 1000) / 10}%`;
}

/** The pool summary (and block table) of `ctl ipam show`. */
export function formatShow(pools: readonly Pool[], blocks: readonly BlockInfo[], showBlocks: boolean): string {
  const rows: string[][] = [['GROUPING', 'CIDR', 'IPS TOTAL', 'IPS IN USE', 'IPS FREE', ...(showBlocks ? ['AFFINITY', 'STATE'] : [])]];
  const sorted = [...pools].sort((a, b) => a.cidr.version - b.cidr.version || (a.cidr.base < b.cidr.base ? -1 : a.cidr.base > b.cidr.base ? 1 : 0));
  const placed = new Set<string>();
  for (const pool of sorted) {
    const inPool = blocks.filter((b) => cidrContains(pool.cidr, parseCidr(b.cidr, false)));
    const total = cidrSize(pool.cidr);
    const used = BigInt(inPool.reduce((n, b) => n + b.allocated, 0));
    const name = pool.disabled ? `IP Pool ${pool.name} (disabled)` : `IP Pool ${pool.name}`;
    rows.push([name, pool.cidrText, total.toString(), `${used} (${percent(used, total)})`, `${total - used} (${percent(total - used, total)})`, ...(showBlocks ? ['', ''] : [])]);
    if (showBlocks) {
      for (const b of inPool) {
        placed.add(b.cidr);
        rows.push(blockRow(b));
      }
    }
  }
  if (showBlocks) for (const b of blocks) if (!placed.has(b.cidr)) rows.push(blockRow(b, ' (no pool)'));
  return formatColumns(rows);
}

function blockRow(b: BlockInfo, note = ''): string[] {
  const size = BigInt(b.size);
  const used = BigInt(b.allocated);
  return [`  Block${note}`, b.cidr, String(b.size), `${b.allocated} (${percent(used, size)})`, `${b.size - b.allocated} (${percent(size - used, size)})`, b.affinity ?? '-', b.affinityState ?? '-'];
}

/** `ctl ipam show --ip ADDR` */
export function formatIp(ip: string, a: Allocation | undefined): string {
  if (!a) return `IP ${ip} is not assigned`;
  const lines = [`IP ${a.ip} is in use`, `  Block:   ${a.block}`, `  Handle:  ${a.handleId ?? '(none)'}`];
  const attrs = Object.entries(a.attributes).sort(([x], [y]) => x.localeCompare(y));
  if (attrs.length === 0) lines.push('  Attributes: (none)');
  else {
    lines.push('  Attributes:');
    for (const [k, v] of attrs) lines.push(`    ${k}: ${v}`);
  }
  return lines.join('\n');
}

async function loadPools(client: import('etcd3').Etcd3): Promise<Pool[]> {
  const kvs = await client.getAll().prefix(IPPOOL_PREFIX).strings();
  const out: Pool[] = [];
  for (const [key, value] of Object.entries(kvs)) {
    try {
      out.push(decodePool(key.slice(IPPOOL_PREFIX.length), value));
    } catch {
      // a pool that does not decode holds no addresses
    }
  }
  return out;
}

async function runShow(ipam: Ipam, client: import('etcd3').Etcd3, args: IpamCtlArgs, io: IpamCtlIo): Promise<number> {
  if (args.ips.length > 0) {
    for (const ip of args.ips) {
      if (!canonicalIp(ip)) throw new UsageError(`--ip ${ip}: not an IP address`);
      io.out(formatIp(canonicalIp(ip)!, await ipam.lookup(ip)));
    }
    return 0;
  }
  const [pools, blocks] = await Promise.all([loadPools(client), ipam.blocks()]);
  io.out(formatShow(pools, blocks, args.showBlocks));
  return 0;
}

async function runCheck(ipam: Ipam, client: import('etcd3').Etcd3, io: IpamCtlIo): Promise<number> {
  const [allocations, weps, nodes, handles, b4, b6] = await Promise.all([
    ipam.allocations(),
    client.getAll().prefix(WORKLOAD_ENDPOINT_PREFIX).strings(),
    client.getAll().prefix(NODE_PREFIX).strings(),
    client.getAll().prefix(HANDLE_PREFIX).strings(),
    client.getAll().prefix(blockPrefix(4)).strings(),
    client.getAll().prefix(blockPrefix(6)).strings(),
  ]);
  const endpoints = Object.entries(weps).map(([key, value]) => {
    const [ns = '', name = ''] = key.slice(WORKLOAD_ENDPOINT_PREFIX.length).split('/');
    return endpointIps(ns, name, value);
  });
  const tunnels = Object.values(nodes).flatMap(nodeTunnelIps);
  const report = findLeaks(allocations, endpoints, tunnels);
  const problems: string[] = [];
  try {
    const blockDocs = Object.entries({ ...b4, ...b6 }).map(([k, v]) => decodeBlock(k, v));
    const handleDocs = Object.entries(handles).map(([k, v]) => decodeHandle(k, v));
    problems.push(...consistencyProblems(blockDocs, handleDocs));
  } catch (err) {
    problems.push(errorMessage(err));
  }
  io.out(`Checked ${report.allocationsChecked} IPAM allocation(s) against ${report.endpointsChecked} workload endpoint(s).`);
  if (report.leaked.length > 0) {
    io.out(`Found ${report.leaked.length} leaked allocation(s) (allocated, but no workload endpoint uses the address):`);
    io.out(formatColumns([['IP', 'HANDLE', 'BLOCK', 'ATTRIBUTES'], ...report.leaked.map((a) => [a.ip, a.handleId ?? '(none)', a.block, Object.entries(a.attributes).map(([k, v]) => `${k}=${v}`).join(',')])]).replace(/^/gm, '  '));
  }
  if (report.unallocated.length > 0) {
    io.out(`Found ${report.unallocated.length} workload endpoint address(es) not allocated by IPAM:`);
    io.out(formatColumns([['ENDPOINT', 'IP'], ...report.unallocated.map((u) => [u.endpoint, u.ip])]).replace(/^/gm, '  '));
  }
  if (problems.length > 0) {
    io.out(`Found ${problems.length} IPAM inconsistenc${problems.length === 1 ? 'y' : 'ies'}:`);
    for (const p of problems) io.out(`  ${p}`);
  }
  const bad = report.leaked.length + report.unallocated.length + problems.length;
  if (bad === 0) io.out('No problems found.');
  return bad > 0 ? 1 : 0;
}

async function runRelease(ipam: Ipam, args: IpamCtlArgs, io: IpamCtlIo): Promise<number> {
  if (args.ips.length === 0) throw new UsageError('ipam release needs --ip ADDR (repeatable)');
  for (const ip of args.ips) if (!canonicalIp(ip)) throw new UsageError(`--ip ${ip}: not an IP address`);
  const released = new Set((await ipam.releaseIps(args.ips)).map((c) => canonicalIp(c)!));
  let missing = 0;
  for (const ip of args.ips) {
    const c = canonicalIp(ip)!;
    if (released.has(c)) io.out(`Released ${c}`);
    else {
      io.err(`IP ${c} is not assigned; nothing to release`);
      missing++;
    }
  }
  if (released.size > 0) io.out(`Successfully released ${released.size} IP(s)`);
  return missing > 0 ? 1 : 0;
}

export async function runIpamCtl(args: IpamCtlArgs, etcd: EtcdOptions, io: IpamCtlIo): Promise<number> {
  const actions = ['show', 'check', 'release'];
  if (!args.action || !actions.includes(args.action)) {
    throw new UsageError(`ipam needs a subcommand: ${actions.join(', ')}${args.action ? ` (got '${args.action}')` : ''}`);
  }
  const { connectEtcd } = await import('../datastore/etcd.ts');
  const client = connectEtcd(etcd);
  try {
    const ipam = createIpam(client);
    if (args.action === 'show') return await runShow(ipam, client, args, io);
    if (args.action === 'check') return await runCheck(ipam, client, io);
    return await runRelease(ipam, args, io);
  } finally {
    client.close();
  }
}
