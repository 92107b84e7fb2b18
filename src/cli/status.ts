/**
 * `routecat status`: what the node agent (or route reflector) on this host is doing, read from its
 * control socket under --run-dir (HTTP over a Unix socket, with undici): the agent summary, then
 * the BGP peers like `calicoctl node status` ("IPv4 BGP status" / "IPv6 BGP status" tables).
 * `-o json` prints the raw documents (`/status` with `/bgp` as its `bgp` field).
 */
import { Client } from 'undici';
import { errorMessage } from '../errors.ts';
import { controlSocketPath } from '../agent/status/control.ts';
import { parseRoleArgs } from './role-options.ts';
import type { RoleRunner } from './main.ts';

export async function fetchControl(runDir: string, path: string, timeoutMs = 5_000): Promise<unknown> {
  const client = new Client('http://localhost', { socketPath: controlSocketPath(runDir), bodyTimeout: timeoutMs, headersTimeout: timeoutMs });
  try {
    const res = await client.request({ method: 'GET', path });
    const text = await res.body.text();
    if (res.statusCode !== 200) throw new Error(`${path}: HTTP ${res.statusCode}: ${text}`);
    return JSON.parse(text);
  } finally {
    await client.close();
  }
}

interface AgentStatus {
  node?: string;
  version?: string;
  datastore?: { status?: string; resyncs?: number };
  ready?: boolean;
  dataplane?: string;
  lastApply?: { at?: string; durationMs?: number; error?: string };
  endpoints?: Array<{ id: string; iface: string; status: string; addresses: string[] }>;
  counts?: Record<string, number>;
  problems?: Array<{ key: string; reason: string }>;
  /** Set by a route reflector's control socket. */
  role?: string;
  bgp?: BgpStatusDoc;
}

/** The control socket's /bgp document (BgpNodeStatus), as far as the CLI reads it. */
export interface BgpStatusDoc {
  state?: string;
  reason?: string;
  restarting?: boolean;
  fibSynced?: boolean;
  problems?: Array<{ key: string; reason: string }>;
  speaker?: {
    asn?: number;
    routerId?: string;
    clusterId?: string;
    peers?: BgpPeerDoc[];
    locRib?: Record<string, number>;
    localRoutes?: number;
  };
}

export interface BgpPeerDoc {
  address: string;
  port?: number;
  kind?: string;
  source?: string;
  state?: string;
  since?: string;
  info?: string;
  prefixesReceived?: number;
  prefixesAdvertised?: number;
  gracefulRestart?: boolean;
}

/** calicoctl's names for how a peer came to be. */
const PEER_TYPE: Record<string, string> = {
  mesh: 'node-to-node mesh',
  global: 'global',
  'node-specific': 'node specific',
  'rr-client': 'route reflector client',
  reflector: 'route reflector',
};

/** calicoctl's SINCE: the time of day for the last 24 hours, else the date. */
export function formatSince(iso: string | undefined, now: Date = new Date()): string {
  if (!iso) return '';
  const t = new Date(iso);
  if (Number.isNaN(t.getTime())) return iso;
  const pad = (n: number) => String(n).padStart(2, '0');
  if (Math.abs(now.getTime() - t.getTime()) < 86_400_000) return `${pad(t.getHours())}:${pad(t.getMinutes())}:${pad(t.getSeconds())}`;
  return `${t.getFullYear()}-${pad(t.getMonth() + 1)}-${pad(t.getDate())}`;
}

/** A boxed table like calicoctl's (centred headers, left-aligned cells, counts right-aligned). */
export function boxTable(headers: readonly string[], rows: ReadonlyArray<readonly string[]>, rightAligned: ReadonlySet<number> = new Set()): string[] {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const rule = `+${widths.map((w) => '-'.repeat(w + 2)).join('+')}+`;
  const centre = (text: string, w: number) => {
    const left = Math.floor((w - text.length) / 2);
    return ' '.repeat(left) + text + ' '.repeat(w - text.length - left);
  };
  const line = (cells: readonly string[], head: boolean) =>
    `| ${cells.map((c, i) => (head ? centre(c, widths[i]!) : rightAligned.has(i) ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join(' | ')} |`;
  return [rule, line(headers, true), rule, ...rows.map((r) => line(r, false)), rule];
}

/** The "IPv4 BGP status" and "IPv6 BGP status" sections. */
export function formatBgpStatus(b: BgpStatusDoc, now: Date = new Date()): string[] {
  const lines: string[] = [];
  const sp = b.speaker;
  if (!sp) {
    lines.push(`BGP: ${b.state ?? 'not running'}${b.reason ? ` (${b.reason})` : ''}`);
  } else {
    const rib = Object.entries(sp.locRib ?? {}).map(([afi, n]) => `${n} ${afi}`).join(', ');
    lines.push(
      `BGP: AS ${sp.asn ?? '?'}, router id ${sp.routerId ?? '?'}${sp.clusterId ? `, route reflector cluster ${sp.clusterId}` : ''}; ${sp.localRoutes ?? 0} local routes${rib ? `; Loc-RIB ${rib}` : ''}${b.restarting ? `; graceful restart${b.fibSynced ? ' (done)' : ' (in progress)'}` : ''}`,
    );
  }
  const peers = sp?.peers ?? [];
  const headers = ['PEER ADDRESS', 'PEER TYPE', 'STATE', 'SINCE', 'INFO', 'RECEIVED', 'ADVERTISED'];
  for (const fam of [4, 6] as const) {
    const mine = peers.filter((p) => (p.address.includes(':') ? 6 : 4) === fam);
    lines.push('', `IPv${fam} BGP status`);
    if (mine.length === 0) {
      lines.push(`No IPv${fam} peers found.`);
      continue;
    }
    const rows = mine.map((p) => [
      p.port !== undefined && p.port !== 179 ? (fam === 6 ? `[${p.address}]:${p.port}` : `${p.address}:${p.port}`) : p.address,
      PEER_TYPE[p.kind ?? ''] ?? p.kind ?? '',
      p.state ?? '?',
      formatSince(p.since, now),
      [p.gracefulRestart ? 'graceful restart: routes kept' : '', p.info ?? ''].filter(Boolean).join('; '),
      String(p.prefixesReceived ?? 0),
      String(p.prefixesAdvertised ?? 0),
    ]);
    lines.push(...boxTable(headers, rows, new Set([5, 6])));
  }
  for (const p of b.problems ?? []) lines.push(`  skipped ${p.key}: ${p.reason}`);
  return lines;
}

export function formatStatus(s: AgentStatus, now: Date = new Date()): string {
  const lines = [
    `routecat ${s.role ?? 'node'} '${s.node ?? '?'}' (${s.version ?? '?'}): ${s.ready ? 'ready' : 'NOT ready'}`,
    `  datastore: ${s.datastore?.status ?? '?'} (${s.datastore?.resyncs ?? 0} full syncs)`,
  ];
  if (s.role === 'reflector') {
    if (s.bgp) lines.push('', ...formatBgpStatus(s.bgp, now));
    return lines.join('\n');
  }
  lines.push(
    `  dataplane: ${s.dataplane ?? '?'}; last apply ${s.lastApply?.at ?? 'never'}${s.lastApply?.durationMs !== undefined ? ` in ${s.lastApply.durationMs} ms` : ''}${s.lastApply?.error ? `; ERROR: ${s.lastApply.error}` : ''}`,
  );
  if (s.counts) lines.push(`  programmed: ${Object.entries(s.counts).map(([k, v]) => `${v} ${k}`).join(', ')}`);
  const eps = s.endpoints ?? [];
  lines.push('', `Local endpoints (${eps.length}):`);
  if (eps.length > 0) {
    const w = Math.max(8, ...eps.map((e) => e.id.length));
    lines.push(`  ${'ENDPOINT'.padEnd(w)}  ${'INTERFACE'.padEnd(15)}  ${'STATUS'.padEnd(6)}  ADDRESSES`);
    for (const e of eps) lines.push(`  ${e.id.padEnd(w)}  ${e.iface.padEnd(15)}  ${e.status.padEnd(6)}  ${e.addresses.join(', ')}`);
  }
  lines.push('', ...(s.bgp ? formatBgpStatus(s.bgp, now) : ['BGP: not running (policy only)']));
  if (s.problems && s.problems.length > 0) {
    lines.push('', `Skipped bad data in the datastore (${s.problems.length}):`);
    for (const p of s.problems.slice(0, 20)) lines.push(`  ${p.key}: ${p.reason}`);
  }
  return lines.join('\n');
}

export const runStatus: RoleRunner = async (args, env, io) => {
  const parsed = parseRoleArgs('status', args, env, io.out, (cli) => {
    cli.option('-o, --output <format>', 'output format: table (default) or json');
    cli.option('--json', 'same as -o json');
  });
  if (!parsed) return 0;
  const format = parsed.options.json ? 'json' : String(parsed.options.output ?? 'table');
  if (format !== 'json' && format !== 'table' && format !== 'wide') {
    io.err(`routecat status: unknown output format '${format}' (use table or json)`);
    return 2;
  }
  const runDir = String(parsed.config.values.runDir);
  let status: unknown;
  try {
    status = await fetchControl(runDir, '/status');
  } catch (err) {
    io.err(`routecat status: cannot reach the node agent at ${controlSocketPath(runDir)}: ${errorMessage(err)} (is 'routecat node' running with the same --run-dir?)`);
    return 1;
  }
  const doc = status as AgentStatus;
  // BGP: its own endpoint (absent on a node run with --no-bgp: 404).
  try {
    doc.bgp = (await fetchControl(runDir, '/bgp')) as BgpStatusDoc;
  } catch {
    delete doc.bgp;
  }
  io.out(format === 'json' ? JSON.stringify(doc, null, 2) : formatStatus(doc));
  return 0;
};
