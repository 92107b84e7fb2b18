/**
 * The lab's state on disk and its removal. `scripts/lab up` records every namespace and process it
 * makes in <state dir>/state.json as it goes (so a half-finished run can be cleaned up), writes its
 * logs and the reachability matrix beside it; `teardown()` stops every process of the lab and
 * deletes every namespace and file it made.
 *
 * What counts as the lab's: the processes recorded in state.json (if their command line still
 * names the state dir: a reused pid is left alone), every process inside a namespace named
 * rclab-*, and those namespaces. Never anything else: no root-namespace interface, route or rule.
 */
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { LAB_NS_PREFIX, run } from './lab-exec.ts';
import type { MatrixWorkload } from './lab-matrix.ts';

export const STATE_DIR = process.env.ROUTECAT_LAB_DIR ?? '/run/routecat-lab';
if (!basename(STATE_DIR).startsWith('routecat-lab')) throw new Error(`ROUTECAT_LAB_DIR '${STATE_DIR}': the directory's name must start with 'routecat-lab' (down deletes it)`);
export const STATE_FILE = join(STATE_DIR, 'state.json');
export const MATRIX_FILE = join(STATE_DIR, 'matrix.json');
export const LOG_DIR = join(STATE_DIR, 'logs');

export interface ProcRecord {
  /** etcd1, proxy-host1, node-host1, reflector, listener-red-web, ... */
  readonly name: string;
  readonly ns: string;
  readonly pid: number;
  readonly log: string;
}

export interface WorkloadRecord extends MatrixWorkload {
  /** Host-side veth the CNI plugin made. */
  readonly iface: string;
}

export interface LabState {
  readonly mode: 'mesh' | 'reflector';
  readonly startedAt: string;
  readonly namespaces: string[];
  readonly processes: ProcRecord[];
  readonly workloads: WorkloadRecord[];
  /** Set when `up` finished: how long it took. */
  upSeconds?: number;
}

export function readState(): LabState | undefined {
  try {
    return JSON.parse(readFileSync(STATE_FILE, 'utf8')) as LabState;
  } catch {
    return undefined;
  }
}

/** Writes state.json atomically (a crash mid-write leaves the previous one). */
export function writeState(s: LabState): void {
  mkdirSync(STATE_DIR, { recursive: true });
  writeFileSync(`${STATE_FILE}.tmp`, `${JSON.stringify(s, null, 2)}\n`);
  renameSync(`${STATE_FILE}.tmp`, STATE_FILE);
}

/** The lab's namespaces that exist now. */
export async function labNamespaces(): Promise<string[]> {
  const r = await run('ip', ['netns', 'list'], { timeoutMs: 10_000 });
  if (r.code !== 0) throw new Error(`ip netns list failed: ${r.stderr.trim()}`);
  return r.stdout.split('\n').map((l) => l.trim().split(/\s+/)[0] ?? '').filter((n) => n.startsWith(LAB_NS_PREFIX)).sort();
}

/** Running (a zombie that init has not reaped yet counts as gone: it holds nothing any more). */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

function cmdline(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ');
  } catch {
    return '';
  }
}

/** Pids of the lab that are running: recorded ones still naming the state dir, and all inside rclab-* namespaces. */
export async function labPids(state: LabState | undefined, namespaces: readonly string[]): Promise<Map<number, string>> {
  const pids = new Map<number, string>();
  for (const p of state?.processes ?? []) if (alive(p.pid) && cmdline(p.pid).includes(STATE_DIR)) pids.set(p.pid, p.name);
  for (const ns of namespaces) {
    const r = await run('ip', ['netns', 'pids', ns], { timeoutMs: 10_000 });
    for (const tok of r.stdout.split(/\s+/)) {
      const pid = Number(tok);
      if (Number.isInteger(pid) && pid > 1 && pid !== process.pid && !pids.has(pid)) pids.set(pid, `${basename(cmdline(pid).split(' ')[0] || '?')} in ${ns}`);
    }
  }
  return pids;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** SIGTERM, then SIGKILL after `graceMs`; returns those still alive after that. */
async function stop(pids: ReadonlyMap<number, string>, graceMs: number): Promise<string[]> {
  const signal = (sig: NodeJS.Signals): void => {
    for (const pid of pids.keys()) {
      try {
        process.kill(pid, sig);
      } catch {
        // gone already
      }
    }
  };
  const living = (): number[] => [...pids.keys()].filter(alive);
  signal('SIGTERM');
  for (let waited = 0; waited < graceMs && living().length > 0; waited += 100) await sleep(100);
  if (living().length > 0) signal('SIGKILL');
  for (let i = 0; i < 30 && living().length > 0; i++) await sleep(100);
  return living().map((pid) => `${pids.get(pid)} (pid ${pid})`);
}

/**
 * Stops the lab's processes in reverse order of their dependencies, so each can stop cleanly: the
 * workloads' listeners, agents and reflector first, then the proxies, then etcd (and the rest).
 */
async function stopAll(pids: ReadonlyMap<number, string>): Promise<string[]> {
  const stages = [/^(listener|node|reflector)-?/, /^proxy-/, /./];
  const left = new Map(pids);
  const stuck: string[] = [];
  for (const re of stages) {
    const now = new Map([...left].filter(([, name]) => re.test(name)));
    for (const pid of now.keys()) left.delete(pid);
    if (now.size > 0) stuck.push(...(await stop(now, 3_000)));
  }
  return stuck;
}

export interface TeardownReport {
  readonly processes: number;
  readonly namespaces: number;
  readonly removedDir: boolean;
}

/**
 * Stops every process of the lab, deletes its namespaces and the state dir. Safe to run any number
 * of times and after any half-finished `up`. Throws naming what could not be removed.
 */
export async function teardown(say: (line: string) => void = () => {}): Promise<TeardownReport> {
  const state = readState();
  const namespaces = await labNamespaces();
  const pids = await labPids(state, namespaces);
  if (pids.size > 0) say(`stopping ${pids.size} lab processes (${[...new Set([...pids.values()].map((n) => n.replace(/-.*| in .*/, '')))].join(', ')})`);
  const stuck = await stopAll(pids);
  if (stuck.length > 0) throw new Error(`these lab processes did not stop, even after SIGKILL: ${stuck.join(', ')}`);
  const left: string[] = [];
  let deleted = 0;
  if (namespaces.length > 0) say(`deleting ${namespaces.length} namespaces (${LAB_NS_PREFIX}*)`);
  for (const ns of namespaces) {
    const r = await run('ip', ['netns', 'del', ns], { timeoutMs: 10_000 });
    if (r.code === 0) deleted++;
    else left.push(`${ns}: ${r.stderr.trim()}`);
  }
  if (left.length > 0) throw new Error(`could not delete namespaces: ${left.join('; ')}`);
  const hadDir = existsSync(STATE_DIR);
  rmSync(STATE_DIR, { recursive: true, force: true });
  return { processes: pids.size, namespaces: deleted, removedDir: hadDir };
}
