/**
 * Throwaway network namespaces for the kernel e2e tests: unique names (`rck-<pid>-<n>`), workloads
 * wired the way Calico's CNI plugin wires them, the kernel-child agent started inside a namespace,
 * and cleanup that always runs (after hooks, SIGINT/SIGTERM, process exit). Nothing here ever
 * changes the machine's own namespace: every command names a namespace.
 */
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { readlinkSync } from 'node:fs';
import { createInterface } from 'node:readline';

export interface RunResult {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs a command with a timeout; never rejects (look at `code`). */
export function run(cmd: string, args: readonly string[], opts: { timeoutMs?: number; input?: string } = {}): Promise<RunResult> {
  return new Promise((resolve) => {
    const child = execFile(cmd, [...args], { timeout: opts.timeoutMs ?? 15_000, maxBuffer: 256 * 1024 * 1024, encoding: 'utf8' }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? ((err as { code: number }).code) : 1) : 0;
      resolve({ code, stdout, stderr });
    });
    if (opts.input !== undefined) child.stdin?.end(opts.input);
  });
}

/** Runs a command and returns stdout; throws with stderr when it fails. */
export async function must(cmd: string, args: readonly string[], opts: { timeoutMs?: number; input?: string } = {}): Promise<string> {
  const r = await run(cmd, args, opts);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.code}): ${r.stderr.trim()}`);
  return r.stdout;
}

/** Polls until cond() is true; throws after timeoutMs. Returns the elapsed time. */
export async function waitFor(what: string, cond: () => boolean | Promise<boolean>, timeoutMs = 5_000, everyMs = 25): Promise<number> {
  const start = Date.now();
  while (Date.now() - start < timeoutMs) {
    if (await cond()) return Date.now() - start;
    await new Promise((r) => setTimeout(r, everyMs));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
}

/** Calico's fixed host-side veth MAC, and the IPv6 link-local address it yields (EUI-64). */
export const HOST_VETH_MAC = 'ee:ee:ee:ee:ee:ee';
export const HOST_VETH_LL6 = 'fe80::ecee:eeff:feee:eeee';

export interface Workload {
  readonly ns: string;
  readonly hostIface: string;
  readonly ipv4?: string;
  readonly ipv6?: string;
}

export interface AgentLine {
  readonly type: string;
  readonly [k: string]: unknown;
}

export class AgentChild {
  readonly proc: ChildProcess;
  readonly lines: AgentLine[] = [];
  readonly stderr: string[] = [];
  readonly #waiters = new Set<() => void>();
  readonly exited: Promise<number | null>;

  constructor(proc: ChildProcess) {
    this.proc = proc;
    createInterface({ input: proc.stdout! }).on('line', (l) => {
      try {
        this.lines.push(JSON.parse(l) as AgentLine);
      } catch {
        this.stderr.push(`stdout: ${l}`);
      }
      for (const w of this.#waiters) w();
    });
    createInterface({ input: proc.stderr! }).on('line', (l) => this.stderr.push(l));
    this.exited = new Promise((resolve) => proc.on('exit', (code) => resolve(code)));
  }

  /** Waits for a line (at or after index `from`) matching pred. */
  async waitLine(what: string, pred: (l: AgentLine) => boolean, timeoutMs = 10_000, from = 0): Promise<AgentLine> {
    const find = () => this.lines.slice(from).find(pred);
    const found = find();
    if (found) return found;
    return new Promise((resolve, reject) => {
      const check = () => {
        const l = find();
        if (l) {
          done();
          resolve(l);
        }
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`timed out after ${timeoutMs} ms waiting for agent ${what}; last lines:\n${this.lines.slice(-5).map((x) => JSON.stringify(x)).join('\n')}\nstderr:\n${this.stderr.slice(-10).join('\n')}`));
      }, timeoutMs);
      const done = () => {
        clearTimeout(timer);
        this.#waiters.delete(check);
      };
      this.#waiters.add(check);
    });
  }

  #nextId = 0;

  send(obj: unknown): void {
    this.proc.stdin!.write(JSON.stringify(obj) + '\n');
  }

  /** Sends a request and waits for the apply that covers it (started after the agent read it). */
  request(obj: Record<string, unknown>, timeoutMs = 5_000): Promise<AgentLine> {
    const id = ++this.#nextId;
    const from = this.lines.length;
    this.send({ ...obj, id });
    return this.waitLine(`the apply for request ${JSON.stringify(obj)}`, (l) => l.type === 'applied' && Array.isArray(l.ids) && l.ids.includes(id), timeoutMs, from);
  }

  /** Closes stdin (the agent stops its monitor and exits); SIGKILL if it does not within timeoutMs. */
  async stop(timeoutMs = 5_000): Promise<void> {
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) return;
    this.proc.stdin!.end();
    const timer = setTimeout(() => this.proc.kill('SIGKILL'), timeoutMs);
    await this.exited;
    clearTimeout(timer);
  }
}

export class KernelLab {
  readonly #namespaces: string[] = [];
  readonly #children = new Set<ChildProcess>();
  #n = 0;
  readonly #onSignal = (sig: NodeJS.Signals) => {
    this.cleanupSync();
    process.exit(sig === 'SIGINT' ? 130 : 143);
  };
  readonly #onExit = () => this.cleanupSync();

  constructor() {
    process.once('SIGINT', this.#onSignal);
    process.once('SIGTERM', this.#onSignal);
    process.once('exit', this.#onExit);
  }

  get namespaces(): readonly string[] {
    return this.#namespaces;
  }

  /** A fresh namespace `rck-<pid>-<n>` with lo up and DAD off (so IPv6 addresses work at once). */
  async netns(): Promise<string> {
    const name = `rck-${process.pid}-${++this.#n}`;
    await must('ip', ['netns', 'add', name]);
    this.#namespaces.push(name);
    await must('ip', ['-n', name, 'link', 'set', 'lo', 'up']);
    await this.exec(name, ['sysctl', '-q', '-w', 'net.ipv6.conf.all.accept_dad=0', 'net.ipv6.conf.default.accept_dad=0']);
    return name;
  }

  /** Runs argv inside the namespace; returns stdout, throws on failure. */
  exec(ns: string, argv: readonly string[], opts: { timeoutMs?: number; input?: string } = {}): Promise<string> {
    return must('ip', ['netns', 'exec', ns, ...argv], opts);
  }

  /** `ip -n <ns> ...` (throws on failure). */
  ip(ns: string, ...args: string[]): Promise<string> {
    return must('ip', ['-n', ns, ...args]);
  }

  /** `ip -n <ns> -batch -` with the given lines (throws on failure). */
  ipBatch(ns: string, lines: readonly string[]): Promise<string> {
    return must('ip', ['-n', ns, '-batch', '-'], { input: lines.join('\n') + '\n', timeoutMs: 60_000 });
  }

  /** An uplink with an address and a default route, so the host can proxy-ARP for 169.254.1.1. */
  async hostUplink(host: string): Promise<void> {
    await this.ipBatch(host, [
      'link add rcup0 type veth peer name rcup1',
      'link set rcup0 up',
      'link set rcup1 up',
      'address add 192.168.200.1/24 dev rcup0',
      'route add default dev rcup0',
    ]);
  }

  /**
   * A workload like Calico's CNI makes it: a veth whose host side (`hostIface`, MAC
   * ee:ee:ee:ee:ee:ee) stays in `host`, eth0 in the workload namespace with a /32 (and /128), a
   * link-scope route to 169.254.1.1 and the default route via it, and the IPv6 default route via the
   * host side's link-local address. No neighbour entries.
   */
  async workload(host: string, hostIface: string, ipv4?: string, ipv6?: string, ns?: string): Promise<Workload> {
    const wns = ns ?? (await this.netns());
    await this.ip(host, 'link', 'add', hostIface, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', wns);
    await this.ip(host, 'link', 'set', hostIface, 'address', HOST_VETH_MAC, 'up');
    const lines = ['link set eth0 up'];
    if (ipv4) {
      lines.push(`address add ${ipv4}/32 dev eth0`, 'route add 169.254.1.1 dev eth0 scope link', 'route add default via 169.254.1.1 dev eth0');
    }
    if (ipv6) lines.push(`address add ${ipv6}/128 dev eth0 nodad`, `-6 route add default via ${HOST_VETH_LL6} dev eth0`);
    for (const l of lines) await this.ip(wns, ...l.split(' '));
    return { ns: wns, hostIface, ...(ipv4 ? { ipv4 } : {}), ...(ipv6 ? { ipv6 } : {}) };
  }

  /**
   * Starts tests/helpers/kernel-child.ts inside `ns` with the given JSON argument (on argv; a large
   * one-shot argument goes through stdin instead, argv strings are limited to 128 KiB).
   */
  agent(ns: string, args: unknown): AgentChild {
    const json = JSON.stringify(args);
    const viaStdin = json.length > 64 * 1024 && !(args as { watch?: boolean }).watch;
    const argv = ['netns', 'exec', ns, process.execPath, '--import', 'tsx', 'tests/helpers/kernel-child.ts'];
    const proc = spawn('ip', viaStdin ? argv : [...argv, json], {
      stdio: ['pipe', 'pipe', 'pipe'],
      // The child refuses to run in this (the outer) namespace.
      env: { ...process.env, ROUTECAT_OUTER_NETNS: readlinkSync('/proc/self/ns/net') },
    });
    this.#children.add(proc);
    proc.on('exit', () => this.#children.delete(proc));
    if (viaStdin) proc.stdin!.end(json);
    return new AgentChild(proc);
  }

  /** Routes of protocol 192 in `ns` as `dst dev` strings (both families), sorted. */
  async protoRoutes(ns: string, proto = 192): Promise<string[]> {
    const out: string[] = [];
    for (const fam of ['-4', '-6']) {
      const rs = JSON.parse((await this.ip(ns, fam, '-json', 'route', 'show', 'proto', String(proto))) || '[]') as { dst: string; dev: string }[];
      for (const r of rs) out.push(`${r.dst} ${r.dev}`);
    }
    return out.sort();
  }

  /** Kills whatever is left in our namespaces (only our own test processes run there). */
  async #killLeftovers(ns: string): Promise<void> {
    const r = await run('ip', ['netns', 'pids', ns]);
    for (const pid of r.stdout.split(/\s+/).filter(Boolean)) {
      try {
        process.kill(Number(pid), 'SIGKILL');
      } catch {
        // gone already
      }
    }
  }

  async cleanup(): Promise<void> {
    for (const c of this.#children) {
      if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    }
    for (const ns of [...this.#namespaces].reverse()) {
      await this.#killLeftovers(ns);
      await run('ip', ['netns', 'del', ns]);
    }
    this.#namespaces.length = 0;
    process.removeListener('SIGINT', this.#onSignal);
    process.removeListener('SIGTERM', this.#onSignal);
    process.removeListener('exit', this.#onExit);
  }

  cleanupSync(): void {
    for (const c of this.#children) {
      try {
        c.kill('SIGKILL');
      } catch {
        // ignore
      }
    }
    for (const ns of [...this.#namespaces].reverse()) {
      try {
        const pids = execFileSync('ip', ['netns', 'pids', ns], { encoding: 'utf8', timeout: 5_000 });
        for (const pid of pids.split(/\s+/).filter(Boolean)) process.kill(Number(pid), 'SIGKILL');
      } catch {
        // ignore
      }
      try {
        execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore', timeout: 5_000 });
      } catch {
        // ignore
      }
    }
    this.#namespaces.length = 0;
  }
}
