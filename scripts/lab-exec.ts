/**
 * Running commands for `scripts/lab`: short commands inside one of the lab's namespaces (with a
 * timeout, never throwing for an exit status), and long-running processes started detached with
 * their output in a log file, so that they outlive `scripts/lab up` and `down` finds them by pid.
 *
 * Refuses any namespace whose name does not start with LAB_NS_PREFIX: nothing here ever runs a
 * command in the machine's own network namespace except `ip netns add/del/list/pids`.
 */
import { spawn } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { run as runCommand, type ExecResult } from '../tests/helpers/netns.ts';

export const LAB_NS_PREFIX = 'rclab-';

export interface RunResult extends ExecResult {
  readonly ms: number;
}

export interface RunOptions {
  readonly timeoutMs?: number;
  readonly input?: string;
  /** Replaces the environment (PATH is kept from ours unless given). */
  readonly env?: Readonly<Record<string, string>>;
}

/** Runs a command in the current namespace; resolves with its exit status, never rejects. */
export async function run(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const started = Date.now();
  const env = opts.env ? { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', ...opts.env } : undefined;
  const r = await runCommand(cmd, args, { timeoutMs: opts.timeoutMs ?? 20_000, stdin: opts.input, env });
  return { ...r, ms: Date.now() - started };
}

function checkNs(ns: string): void {
  if (!ns.startsWith(LAB_NS_PREFIX)) throw new Error(`refusing to run in namespace '${ns}': not one of the lab's (${LAB_NS_PREFIX}*)`);
}

/** `cmd args` inside the lab namespace `ns`. */
export function inNs(ns: string, cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  checkNs(ns);
  return run('ip', ['netns', 'exec', ns, cmd, ...args], opts);
}

/** Like inNs, but throws (naming the namespace and the command) unless it exits 0. */
export async function mustInNs(ns: string, cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<string> {
  const r = await inNs(ns, cmd, args, opts);
  if (r.code !== 0 || r.timedOut) {
    const how = r.timedOut ? `timed out after ${opts.timeoutMs ?? 20_000} ms` : `exited ${r.code}`;
    throw new Error(`[${ns}] ${cmd} ${args.join(' ')} ${how}: ${(r.stderr || r.stdout).trim()}`);
  }
  return r.stdout;
}

export interface Detached {
  readonly pid: number;
  /** Set once the process has exited while we were still watching (null: killed by a signal). */
  exited(): { code: number | null; signal: string | null } | undefined;
}

/**
 * Starts `cmd args` inside `ns`, detached from us (its own process group, stdin closed, stdout and
 * stderr appended to `logFile`), so it keeps running after `scripts/lab up` exits. `ip netns exec`
 * execs the command, so the pid is the command's own.
 */
export function startDetached(ns: string, cmd: string, args: readonly string[], logFile: string, env?: Readonly<Record<string, string>>): Detached {
  checkNs(ns);
  const fd = openSync(logFile, 'a');
  try {
    const child = spawn('ip', ['netns', 'exec', ns, cmd, ...args], { detached: true, stdio: ['ignore', fd, fd], env: env ? { ...process.env, ...env } : process.env });
    if (child.pid === undefined) throw new Error(`could not start ${cmd} in ${ns}`);
    let exit: { code: number | null; signal: string | null } | undefined;
    child.on('exit', (code, signal) => (exit = { code, signal }));
    child.on('error', () => (exit = { code: null, signal: null }));
    child.unref();
    return { pid: child.pid, exited: () => exit };
  } finally {
    closeSync(fd);
  }
}

/** A gate that lets at most `limit` calls run at once (the others wait their turn, in order). */
export function limiter(limit: number): <T>(f: () => Promise<T>) => Promise<T> {
  let active = 0;
  const queue: Array<() => void> = [];
  return async <T>(f: () => Promise<T>): Promise<T> => {
    if (active >= limit) await new Promise<void>((res) => queue.push(res));
    active++;
    try {
      return await f();
    } finally {
      active--;
      queue.shift()?.();
    }
  };
}

/** Runs `jobs` with at most `limit` at a time; results in the jobs' order. */
export function pool<T>(limit: number, jobs: ReadonlyArray<() => Promise<T>>): Promise<T[]> {
  const gate = limiter(limit);
  return Promise.all(jobs.map((j) => gate(j)));
}
