/**
 * Watches the current network namespace for link, address and route changes by running
 * `ip -o -N monitor link address route` (one line per netlink message, numbers instead of names;
 * iproute2 6.x ignores -json for monitor) and emits parsed events. If `ip` dies it is restarted
 * with exponential backoff; every (re)start emits `started`, after which the consumer must resync
 * (markDirty), since events may have been missed. stop() kills it.
 *
 * It only reports; it never changes anything in the kernel. Link changes are derived from the state
 * this monitor has seen: `added` means first seen by this monitor (links that existed before it
 * started show up as `added` on their first change).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { logger, type Logger } from '../../log.ts';
import { canonicalCidr } from './kernel.ts';

export type MonitorObject = 'link' | 'address' | 'route';

export type KernelEvent =
  | { readonly type: 'started'; readonly restarts: number }
  | { readonly type: 'exited'; readonly code: number | null; readonly signal: string | null; readonly restartInMs: number }
  | {
      readonly type: 'link';
      readonly change: 'added' | 'removed' | 'up' | 'down' | 'renamed' | 'changed';
      readonly name: string;
      readonly index: number;
      readonly adminUp: boolean;
      readonly operState: string;
      readonly oldName?: string;
    }
  | {
      readonly type: 'address';
      readonly change: 'added' | 'removed';
      readonly iface: string;
      readonly index: number;
      readonly family: 4 | 6;
      readonly address: string;
    }
  | {
      readonly type: 'route';
      readonly change: 'added' | 'removed';
      /** Canonical CIDR, or `default`. */
      readonly dst: string;
      readonly dev?: string;
      readonly protocol?: number;
      readonly table?: number;
      /** As printed, else the kernel's default (0 for IPv4, 1024 for IPv6). */
      readonly metric?: number;
      /** rtm_type number when not unicast (2 local, 3 broadcast, 5 multicast, ...). */
      readonly routeType?: number;
    };

/** One parsed line of `ip -o -N monitor`, before link state is compared with earlier lines. */
export type MonitorLine =
  | { readonly kind: 'link'; readonly deleted: boolean; readonly index: number; readonly name: string; readonly adminUp: boolean; readonly operState: string }
  | { readonly kind: 'address'; readonly deleted: boolean; readonly index: number; readonly iface: string; readonly family: 4 | 6; readonly address: string }
  | {
      readonly kind: 'route';
      readonly deleted: boolean;
      readonly dst: string;
      readonly dev?: string;
      readonly protocol?: number;
      readonly table?: number;
      readonly metric?: number;
      readonly routeType?: number;
    };

const LINK_RE = /^(\d+): ([^\s:@]+)(?:@[^\s:]+)?: <([^>]*)>(.*)$/;
const ADDR_RE = /^(\d+): (\S+)\s+(inet6?) (\S+)/;
const ROUTE_TYPES: Record<string, number> = {
  unicast: 1, local: 2, broadcast: 3, anycast: 4, multicast: 5, blackhole: 6, unreachable: 7, prohibit: 8, throw: 9, nat: 10,
};

/** Parses one line of `ip -o -N monitor link address route`; undefined for anything else. */
export function parseMonitorLine(raw: string): MonitorLine | undefined {
  let line = raw.trim();
  if (line === '') return undefined;
  let deleted = false;
  if (line.startsWith('Deleted ')) {
    deleted = true;
    line = line.slice('Deleted '.length);
  }
  const link = LINK_RE.exec(line);
  if (link) {
    const flags = link[3].split(',');
    const state = /\bstate (\S+)/.exec(link[4]);
    return {
      kind: 'link',
      deleted,
      index: Number(link[1]),
      name: link[2],
      adminUp: flags.includes('UP'),
      operState: state ? state[1] : 'UNKNOWN',
    };
  }
  const addr = ADDR_RE.exec(line);
  if (addr) {
    return { kind: 'address', deleted, index: Number(addr[1]), iface: addr[2], family: addr[3] === 'inet6' ? 6 : 4, address: addr[4] };
  }
  const words = line.split(/\s+/);
  let i = 0;
  let routeType: number | undefined;
  if (/^\d+$/.test(words[0])) routeType = Number(words[i++]);
  else if (words[0] in ROUTE_TYPES) routeType = ROUTE_TYPES[words[i++]];
  const dstText = words[i++];
  if (dstText === undefined) return undefined;
  let dst: string;
  if (dstText === 'default') dst = 'default';
  else {
    try {
      dst = canonicalCidr(dstText).cidr;
    } catch {
      return undefined;
    }
  }
  const out: { kind: 'route'; deleted: boolean; dst: string; dev?: string; protocol?: number; table?: number; metric?: number; routeType?: number } = {
    kind: 'route',
    deleted,
    dst,
  };
  if (routeType !== undefined && routeType !== 1) out.routeType = routeType;
  for (; i < words.length - 1; i++) {
    const v = words[i + 1];
    switch (words[i]) {
      case 'dev':
        out.dev = v;
        i++;
        break;
      case 'proto':
        if (/^\d+$/.test(v)) out.protocol = Number(v);
        i++;
        break;
      case 'table':
        if (/^\d+$/.test(v)) out.table = Number(v);
        i++;
        break;
      case 'metric':
        if (/^\d+$/.test(v)) out.metric = Number(v);
        i++;
        break;
    }
  }
  if (out.metric === undefined && dst !== 'default') out.metric = dst.includes(':') ? 1024 : 0;
  return out;
}

export interface KernelMonitorOptions {
  readonly ipPath?: string;
  readonly objects?: readonly MonitorObject[];
  /** Restart delay after `ip` exits: initialMs, doubling up to maxMs; reset after 10 s of running. */
  readonly backoff?: { readonly initialMs?: number; readonly maxMs?: number };
  readonly log?: Logger;
}

export class KernelMonitor {
  readonly #ipPath: string;
  readonly #objects: readonly MonitorObject[];
  readonly #initialMs: number;
  readonly #maxMs: number;
  readonly #log: Logger;
  readonly #listeners = new Set<(e: KernelEvent) => void>();
  /** ifindex -> last seen name and up-ness. */
  readonly #links = new Map<number, { name: string; up: boolean }>();
  #child: ChildProcess | undefined;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #running = false;
  #restarts = 0;
  #failures = 0;
  #startedAt = 0;
  #buf = '';

  constructor(opts: KernelMonitorOptions = {}) {
    this.#ipPath = opts.ipPath ?? 'ip';
    this.#objects = opts.objects ?? ['link', 'address', 'route'];
    this.#initialMs = opts.backoff?.initialMs ?? 100;
    this.#maxMs = opts.backoff?.maxMs ?? 10_000;
    this.#log = opts.log ?? logger('monitor');
  }

  get running(): boolean {
    return this.#running;
  }

  /** Process id of the current `ip monitor` (for tests that kill it). */
  get pid(): number | undefined {
    return this.#child?.pid;
  }

  onEvent(fn: (e: KernelEvent) => void): () => void {
    this.#listeners.add(fn);
    return () => this.#listeners.delete(fn);
  }

  start(): void {
    if (this.#running) return;
    this.#running = true;
    this.#spawn();
  }

  async stop(): Promise<void> {
    this.#running = false;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    const child = this.#child;
    this.#child = undefined;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    await new Promise<void>((resolve) => {
      const kill = setTimeout(() => child.kill('SIGKILL'), 2_000);
      child.once('exit', () => {
        clearTimeout(kill);
        resolve();
      });
      child.kill('SIGTERM');
    });
  }

  #emit(e: KernelEvent): void {
    for (const fn of this.#listeners) {
      try {
        fn(e);
      } catch (err) {
        this.#log.error('monitor listener threw', err);
      }
    }
  }

  #spawn(): void {
    const child = spawn(this.#ipPath, ['-o', '-N', 'monitor', ...this.#objects], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.#child = child;
    this.#buf = '';
    this.#startedAt = Date.now();
    child.stdout!.setEncoding('utf8');
    child.stdout!.on('data', (chunk: string) => {
      if (this.#child !== child) return;
      this.#buf += chunk;
      let nl: number;
      while ((nl = this.#buf.indexOf('\n')) >= 0) {
        const line = this.#buf.slice(0, nl);
        this.#buf = this.#buf.slice(nl + 1);
        this.#onLine(line);
      }
    });
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (chunk: string) => this.#log.warn(`ip monitor: ${chunk.trim()}`));
    child.on('spawn', () => {
      if (this.#child !== child) return;
      this.#emit({ type: 'started', restarts: this.#restarts });
    });
    child.on('error', (err) => this.#log.warn(`ip monitor: ${err.message}`));
    child.on('close', (code, signal) => {
      if (this.#child !== child) return;
      this.#child = undefined;
      if (!this.#running) return;
      if (Date.now() - this.#startedAt > 10_000) this.#failures = 0;
      const delay = Math.min(this.#maxMs, this.#initialMs * 2 ** this.#failures);
      this.#failures++;
      this.#log.warn(`ip monitor exited (${signal ?? `status ${code}`}); restarting in ${delay} ms`);
      this.#emit({ type: 'exited', code, signal, restartInMs: delay });
      this.#timer = setTimeout(() => {
        this.#timer = undefined;
        if (!this.#running) return;
        this.#restarts++;
        this.#spawn();
      }, delay);
    });
  }

  #onLine(line: string): void {
    const p = parseMonitorLine(line);
    if (!p) return;
    switch (p.kind) {
      case 'link': {
        const up = p.adminUp && (p.operState === 'UP' || p.operState === 'UNKNOWN');
        const prev = this.#links.get(p.index);
        const base = { type: 'link' as const, name: p.name, index: p.index, adminUp: p.adminUp, operState: p.operState };
        if (p.deleted) {
          this.#links.delete(p.index);
          this.#emit({ ...base, change: 'removed' });
          return;
        }
        this.#links.set(p.index, { name: p.name, up });
        if (!prev) this.#emit({ ...base, change: 'added' });
        else if (prev.name !== p.name) this.#emit({ ...base, change: 'renamed', oldName: prev.name });
        else if (prev.up !== up) this.#emit({ ...base, change: up ? 'up' : 'down' });
        else this.#emit({ ...base, change: 'changed' });
        return;
      }
      case 'address':
        this.#emit({ type: 'address', change: p.deleted ? 'removed' : 'added', iface: p.iface, index: p.index, family: p.family, address: p.address });
        return;
      case 'route': {
        const { kind, deleted, ...rest } = p;
        void kind;
        this.#emit({ type: 'route', change: deleted ? 'removed' : 'added', ...rest });
        return;
      }
    }
  }
}

/**
 * Whether an event can mean the kernel differs from what the reconcilers last saw: a (re)start
 * (events may have been missed), any link change, a main-table route of ours removed. Added routes
 * are ignored: ours are normally our own writes, and other protocols' (a BGP daemon's thousands)
 * change nothing we own; a periodic resync catches the rest.
 */
export function eventNeedsResync(e: KernelEvent, protocol: number): boolean {
  switch (e.type) {
    case 'started':
      return true;
    case 'exited':
      return false;
    case 'link':
      return true;
    case 'address':
      return false;
    case 'route':
      if (e.routeType !== undefined) return false;
      if (e.table !== undefined && e.table !== 254) return false;
      return e.change === 'removed' && (e.protocol === undefined || e.protocol === protocol);
  }
}
