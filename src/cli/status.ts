/**
 * `routecat status`: what the node agent on this host is doing, read from its control socket
 * under --run-dir (HTTP over a Unix socket, with undici). `--json` prints the raw document.
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
  bgp?: { peers?: Array<Record<string, unknown>> };
}

export function formatStatus(s: AgentStatus): string {
  const lines = [
    `routecat node '${s.node ?? '?'}' (${s.version ?? '?'}): ${s.ready ? 'ready' : 'NOT ready'}`,
    `  datastore: ${s.datastore?.status ?? '?'} (${s.datastore?.resyncs ?? 0} full syncs)`,
    `  dataplane: ${s.dataplane ?? '?'}; last apply ${s.lastApply?.at ?? 'never'}${s.lastApply?.durationMs !== undefined ? ` in ${s.lastApply.durationMs} ms` : ''}${s.lastApply?.error ? `; ERROR: ${s.lastApply.error}` : ''}`,
  ];
  if (s.counts) lines.push(`  programmed: ${Object.entries(s.counts).map(([k, v]) => `${v} ${k}`).join(', ')}`);
  const eps = s.endpoints ?? [];
  lines.push('', `Local endpoints (${eps.length}):`);
  if (eps.length > 0) {
    const w = Math.max(8, ...eps.map((e) => e.id.length));
    lines.push(`  ${'ENDPOINT'.padEnd(w)}  ${'INTERFACE'.padEnd(15)}  ${'STATUS'.padEnd(6)}  ADDRESSES`);
    for (const e of eps) lines.push(`  ${e.id.padEnd(w)}  ${e.iface.padEnd(15)}  ${e.status.padEnd(6)}  ${e.addresses.join(', ')}`);
  }
  const peers = s.bgp?.peers;
  if (peers) {
    lines.push('', `BGP peers (${peers.length}):`);
    for (const p of peers) lines.push(`  ${String(p.address ?? '?').padEnd(20)} ${String(p.type ?? '').padEnd(14)} ${String(p.state ?? '?').padEnd(12)} ${String(p.since ?? '')} ${p.info ? String(p.info) : ''}`);
  }
  if (s.problems && s.problems.length > 0) {
    lines.push('', `Skipped bad data in the datastore (${s.problems.length}):`);
    for (const p of s.problems.slice(0, 20)) lines.push(`  ${p.key}: ${p.reason}`);
  }
  return lines.join('\n');
}

export const runStatus: RoleRunner = async (args, env, io) => {
  const parsed = parseRoleArgs('status', args, env, io.out, (cli) => cli.option('--json', 'print the raw status document'));
  if (!parsed) return 0;
  const runDir = String(parsed.config.values.runDir);
  let status: unknown;
  try {
    status = await fetchControl(runDir, '/status');
  } catch (err) {
    io.err(`routecat status: cannot reach the node agent at ${controlSocketPath(runDir)}: ${errorMessage(err)} (is 'routecat node' running with the same --run-dir?)`);
    return 1;
  }
  io.out(parsed.options.json ? JSON.stringify(status, null, 2) : formatStatus(status as AgentStatus));
  return 0;
};
