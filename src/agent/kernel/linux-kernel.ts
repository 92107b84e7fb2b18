/**
 * The real Kernel: the `ip` command (iproute2, JSON output) for links and routes, one long-lived
 * `ip -batch` process for route changes, and /proc/sys for sysctls, all in the current network
 * namespace. Reads cost one short-lived process each (`ip -json link show`, and one per address
 * family for routes); writes cost no process at all once the batch process runs.
 *
 * It never chooses what to change: it runs what it is given, and every route command it can emit
 * names the protocol (see routeOpCommand), so deletes cannot hit a foreign route.
 */
import { execFile } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { errorMessage } from '../../errors.ts';
import { IpBatch } from './ip-batch.ts';
import {
  KernelError,
  MAIN_TABLE,
  canonicalCidr,
  routeOpCommand,
  zeroCounters,
  type Kernel,
  type KernelCounters,
  type KernelRoute,
  type LinkInfo,
  type RouteBatchResult,
  type RouteOp,
  type RouteOpFailure,
} from './kernel.ts';

export interface LinuxKernelOptions {
  /** The `ip` executable; default `ip`. */
  readonly ipPath?: string;
  /** Where sysctls live; default `/proc/sys`. */
  readonly sysctlRoot?: string;
  /** Timeout of one read or one batch; default 60 s. */
  readonly timeoutMs?: number;
}

interface IpJsonLink {
  ifname?: string;
  ifindex?: number;
  flags?: string[];
  operstate?: string;
  address?: string;
}

interface IpJsonRoute {
  type?: string;
  dst?: string;
  dev?: string;
  gateway?: string;
  scope?: string;
  metric?: number;
  table?: string;
}

export class LinuxKernel implements Kernel {
  readonly #ipPath: string;
  readonly #sysctlRoot: string;
  readonly #timeoutMs: number;
  readonly #counters: KernelCounters = zeroCounters();
  readonly #batch: IpBatch;
  /** name -> ifindex at the last link read; a change means the batch process's cache is stale. */
  #knownLinks = new Map<string, number>();
  #batchStale = false;

  constructor(opts: LinuxKernelOptions = {}) {
    this.#ipPath = opts.ipPath ?? 'ip';
    this.#sysctlRoot = opts.sysctlRoot ?? '/proc/sys';
    this.#timeoutMs = opts.timeoutMs ?? 60_000;
    this.#batch = new IpBatch({
      ipPath: this.#ipPath,
      timeoutMs: this.#timeoutMs,
      onSpawn: () => {
        this.#counters.processesSpawned++;
      },
    });
  }

  async listLinks(): Promise<LinkInfo[]> {
    this.#counters.linkReads++;
    const raw = parseJsonArray<IpJsonLink>(await this.#ip(['-json', 'link', 'show']), 'ip -json link show');
    const links: LinkInfo[] = [];
    const seen = new Map<string, number>();
    for (const l of raw) {
      if (typeof l.ifname !== 'string' || typeof l.ifindex !== 'number') continue;
      seen.set(l.ifname, l.ifindex);
      links.push({
        name: l.ifname,
        index: l.ifindex,
        adminUp: Array.isArray(l.flags) && l.flags.includes('UP'),
        operState: typeof l.operstate === 'string' ? l.operstate : 'UNKNOWN',
        ...(typeof l.address === 'string' ? { mac: l.address } : {}),
      });
    }
    for (const [name, index] of this.#knownLinks) {
      if (seen.get(name) !== index) this.#batchStale = true;
    }
    this.#knownLinks = seen;
    return links;
  }

  async listRoutes(protocol: number): Promise<KernelRoute[]> {
    if (!Number.isInteger(protocol) || protocol < 0 || protocol > 255) {
      throw new KernelError('E_BAD_PROTO', `invalid route protocol ${protocol}`);
    }
    this.#counters.routeReads++;
    const args = (fam: string) => [fam, '-json', 'route', 'show', 'table', 'main', 'proto', String(protocol)];
    const [v4, v6] = await Promise.all([this.#ip(args('-4')), this.#ip(args('-6'))]);
    return [
      ...parseRoutes(v4, 4, protocol),
      ...parseRoutes(v6, 6, protocol),
    ];
  }

  async applyRoutes(ops: readonly RouteOp[]): Promise<RouteBatchResult> {
    const started = performance.now();
    const failures: RouteOpFailure[] = [];
    const commands: string[] = [];
    const indexOf: number[] = [];
    ops.forEach((op, i) => {
      try {
        commands.push(routeOpCommand(op));
        indexOf.push(i);
      } catch (err) {
        failures.push({ index: i, op, error: errorMessage(err) });
      }
    });
    if (commands.length > 0) {
      if (this.#batchStale) {
        // `ip` cached name -> ifindex of links that have since gone or changed.
        this.#batchStale = false;
        await this.#batch.restart();
      }
      this.#counters.batches++;
      this.#counters.commands += commands.length;
      let result;
      try {
        result = await this.#batch.run(commands);
      } catch (err) {
        this.#batchStale = true;
        throw err;
      }
      for (const f of result.failures) {
        const index = indexOf[f.index];
        failures.push({ index, op: ops[index], error: f.error });
        if (/Cannot find device|No such device/.test(f.error)) this.#batchStale = true;
      }
    }
    failures.sort((a, b) => a.index - b.index);
    this.#counters.commandFailures += failures.length;
    return { commands: commands.length, failures, durationMs: performance.now() - started };
  }

  readSysctl(path: string): string | undefined {
    const file = this.#sysctlFile(path);
    this.#counters.sysctlReads++;
    try {
      return readFileSync(file, 'utf8').trim();
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw new KernelError('E_SYSCTL', `cannot read sysctl ${path}: ${errorMessage(err)}`, { cause: err });
    }
  }

  writeSysctl(path: string, value: string): void {
    const file = this.#sysctlFile(path);
    this.#counters.sysctlWrites++;
    try {
      writeFileSync(file, value);
    } catch (err) {
      throw new KernelError('E_SYSCTL', `cannot write ${value} to sysctl ${path}: ${errorMessage(err)}`, { cause: err });
    }
  }

  counters(): KernelCounters {
    return { ...this.#counters };
  }

  async close(): Promise<void> {
    await this.#batch.close();
  }

  #sysctlFile(path: string): string {
    const parts = path.split('/');
    if (parts.some((p) => p === '' || p === '.' || p === '..')) {
      throw new KernelError('E_SYSCTL', `invalid sysctl path '${path}'`);
    }
    return `${this.#sysctlRoot}/${path}`;
  }

  #ip(args: string[]): Promise<string> {
    this.#counters.processesSpawned++;
    return new Promise((resolve, reject) => {
      execFile(
        this.#ipPath,
        args,
        { timeout: this.#timeoutMs, maxBuffer: 512 * 1024 * 1024, encoding: 'utf8' },
        (err, stdout, stderr) => {
          if (err) {
            reject(new KernelError('E_IP', `ip ${args.join(' ')} failed: ${stderr.trim() || err.message}`, { cause: err }));
          } else resolve(stdout);
        },
      );
    });
  }
}

function parseJsonArray<T>(text: string, what: string): T[] {
  const t = text.trim();
  if (t === '') return [];
  let v: unknown;
  try {
    v = JSON.parse(t);
  } catch (err) {
    throw new KernelError('E_IP_OUTPUT', `cannot parse the JSON output of ${what}: ${errorMessage(err)}`);
  }
  if (!Array.isArray(v)) throw new KernelError('E_IP_OUTPUT', `${what} did not print a JSON array`);
  return v as T[];
}

/** `ip -json route show` output -> KernelRoute (unicast routes only). */
export function parseRoutes(text: string, family: 4 | 6, protocol: number): KernelRoute[] {
  const out: KernelRoute[] = [];
  for (const r of parseJsonArray<IpJsonRoute>(text, 'ip -json route show')) {
    if (r.type !== undefined && r.type !== 'unicast') continue;
    if (typeof r.dst !== 'string') continue;
    const dst = r.dst === 'default' ? (family === 4 ? '0.0.0.0/0' : '::/0') : canonicalCidr(r.dst).cidr;
    out.push({
      family,
      dst,
      dev: typeof r.dev === 'string' ? r.dev : '',
      protocol,
      ...(family === 4 ? { scope: typeof r.scope === 'string' ? r.scope : 'global' } : {}),
      metric: typeof r.metric === 'number' ? r.metric : 0,
      table: MAIN_TABLE,
      ...(typeof r.gateway === 'string' ? { gateway: r.gateway } : {}),
    });
  }
  return out;
}
