/**
 * Network-namespace lab for end-to-end tests: creates namespaces, veth pairs and processes inside
 * them, remembers all of it and removes all of it on cleanup() (also on process exit/SIGINT/SIGTERM).
 *
 * It never configures the machine's root namespace: every `ip link`/`sysctl`/`iptables` runs via
 * `ip netns exec <one of our namespaces>`; the only root-namespace commands are `ip netns add/del`.
 * Namespace names are `<prefix>-<pid>-<n>-<name>`, unique per run, so a crashed run cannot collide
 * with a new one; sweepStaleNamespaces() removes those whose pid is no longer alive.
 */
import { execFileSync, spawn as spawnChild, type ChildProcess } from 'node:child_process';

export interface ExecResult {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
  readonly timedOut: boolean;
}

export interface ExecOptions {
  readonly timeoutMs?: number;
  readonly stdin?: string;
  /** The command's whole environment (default: ours). */
  readonly env?: Readonly<Record<string, string>>;
}

export interface LabProcess {
  readonly ns: string;
  readonly child: ChildProcess;
  /** Everything the process printed so far. */
  output(): string;
  /** Resolve when the output matches `re`; reject after timeoutMs or when the process exits. */
  waitFor(re: RegExp, timeoutMs?: number): Promise<void>;
  kill(): Promise<void>;
}

export interface Lab {
  readonly prefix: string;
  /** Namespaces created so far (full names). */
  readonly namespaces: readonly string[];
  /** Create a namespace with lo up; returns its full (unique) name. */
  addNs(name: string): Promise<string>;
  /** A veth pair with one end in each namespace (both ends stay down). */
  veth(nsA: string, ifA: string, nsB: string, ifB: string): Promise<void>;
  /** Run `cmd args` inside `ns`; never throws for a non-zero exit status. */
  exec(ns: string, cmd: string, args: readonly string[], opts?: ExecOptions): Promise<ExecResult>;
  /** Like exec but throws on a non-zero exit status or timeout. */
  must(ns: string, cmd: string, args: readonly string[], opts?: ExecOptions): Promise<string>;
  /** Run a shell script (bash -c) inside `ns`, throwing on failure. */
  sh(ns: string, script: string, opts?: ExecOptions): Promise<string>;
  /** A long-running process inside `ns`; killed by cleanup(). */
  spawn(ns: string, cmd: string, args: readonly string[]): LabProcess;
  /** Kill our processes and delete our namespaces. Safe to call twice. */
  cleanup(): Promise<void>;
}

const DEFAULT_TIMEOUT_MS = 10_000;

/** Run a command in the current namespace, collecting output; never throws for exit status. */
export function run(cmd: string, args: readonly string[], opts: ExecOptions = {}): Promise<ExecResult> {
  return new Promise((resolve) => {
    const child = spawnChild(cmd, [...args], { stdio: ['pipe', 'pipe', 'pipe'], env: opts.env ?? process.env });
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, opts.timeoutMs ?? DEFAULT_TIMEOUT_MS);
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', (err) => {
      clearTimeout(timer);
      resolve({ code: null, stdout, stderr: stderr + String(err), timedOut });
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr, timedOut });
    });
    child.stdin.on('error', () => undefined);
    child.stdin.end(opts.stdin ?? '');
  });
}

function describeFailure(what: string, r: ExecResult): Error {
  const how = r.timedOut ? 'timed out' : `exited ${r.code}`;
  return new Error(`${what} ${how}: ${(r.stderr || r.stdout).trim()}`);
}

// Every live lab, so that exit handlers can clean up synchronously.
const liveLabs = new Set<{ syncCleanup(): void }>();
let handlersInstalled = false;

function installExitHandlers(): void {
  if (handlersInstalled) return;
  handlersInstalled = true;
  const syncAll = (): void => {
    for (const lab of liveLabs) lab.syncCleanup();
    liveLabs.clear();
  };
  process.on('exit', syncAll);
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.once(sig, () => {
      syncAll();
      process.exit(sig === 'SIGINT' ? 130 : 143);
    });
  }
}

let labCounter = 0;

export function createLab(prefix: string): Lab {
  if (!/^[a-z][a-z0-9]{0,11}$/.test(prefix)) throw new Error(`lab prefix '${prefix}': 1-12 of [a-z0-9], starting with a letter`);
  installExitHandlers();
  const labId = ++labCounter;
  const namespaces: string[] = [];
  const processes = new Set<LabProcess>();
  let nsCounter = 0;
  let closed = false;

  const killAllSync = (): void => {
    for (const p of processes) {
      if (p.child.exitCode === null && p.child.signalCode === null) {
        try {
          p.child.kill('SIGKILL');
        } catch {
          // already gone
        }
      }
    }
    processes.clear();
  };

  const entry = {
    syncCleanup(): void {
      killAllSync();
      for (const ns of namespaces.splice(0).reverse()) {
        try {
          execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore', timeout: 5_000 });
        } catch {
          // best effort at exit
        }
      }
    },
  };
  liveLabs.add(entry);

  const lab: Lab = {
    prefix,
    namespaces,

    async addNs(name: string): Promise<string> {
      if (closed) throw new Error('lab is cleaned up');
      if (!/^[A-Za-z0-9_-]{1,20}$/.test(name)) throw new Error(`namespace name '${name}' is not safe`);
      const full = `${prefix}-${process.pid}-${labId}x${++nsCounter}-${name}`;
      const r = await run('ip', ['netns', 'add', full]);
      if (r.code !== 0) throw describeFailure(`ip netns add ${full}`, r);
      namespaces.push(full);
      await lab.must(full, 'ip', ['link', 'set', 'lo', 'up']);
      return full;
    },

    async veth(nsA: string, ifA: string, nsB: string, ifB: string): Promise<void> {
      for (const ns of [nsA, nsB]) if (!namespaces.includes(ns)) throw new Error(`namespace '${ns}' is not from this lab`);
      await lab.must(nsA, 'ip', ['link', 'add', ifA, 'type', 'veth', 'peer', 'name', ifB, 'netns', nsB]);
    },

    async exec(ns: string, cmd: string, args: readonly string[], opts: ExecOptions = {}): Promise<ExecResult> {
      if (!namespaces.includes(ns)) throw new Error(`namespace '${ns}' is not from this lab; refusing to run ${cmd}`);
      return run('ip', ['netns', 'exec', ns, cmd, ...args], opts);
    },

    async must(ns: string, cmd: string, args: readonly string[], opts: ExecOptions = {}): Promise<string> {
      const r = await lab.exec(ns, cmd, args, opts);
      if (r.code !== 0 || r.timedOut) throw describeFailure(`[${ns}] ${cmd} ${args.join(' ')}`, r);
      return r.stdout;
    },

    sh(ns: string, script: string, opts: ExecOptions = {}): Promise<string> {
      return lab.must(ns, 'bash', ['-c', script], opts);
    },

    spawn(ns: string, cmd: string, args: readonly string[]): LabProcess {
      if (!namespaces.includes(ns)) throw new Error(`namespace '${ns}' is not from this lab`);
      const child = spawnChild('ip', ['netns', 'exec', ns, cmd, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      const listeners = new Set<() => void>();
      const onData = (d: string): void => {
        out += d;
        for (const l of listeners) l();
      };
      child.stdout.setEncoding('utf8').on('data', onData);
      child.stderr.setEncoding('utf8').on('data', onData);
      child.on('close', () => {
        for (const l of listeners) l();
      });
      const proc: LabProcess = {
        ns,
        child,
        output: () => out,
        waitFor(re: RegExp, timeoutMs = DEFAULT_TIMEOUT_MS): Promise<void> {
          return new Promise((resolve, reject) => {
            const check = (): void => {
              if (re.test(out)) done();
              else if (child.exitCode !== null || child.signalCode !== null) {
                done(new Error(`${cmd} in ${ns} exited before printing ${re}: ${out.trim()}`));
              }
            };
            const timer = setTimeout(() => done(new Error(`${cmd} in ${ns}: no ${re} after ${timeoutMs} ms: ${out.trim()}`)), timeoutMs);
            const done = (err?: Error): void => {
              clearTimeout(timer);
              listeners.delete(check);
              if (err) reject(err);
              else resolve();
            };
            listeners.add(check);
            check();
          });
        },
        async kill(): Promise<void> {
          processes.delete(proc);
          if (child.exitCode !== null || child.signalCode !== null) return;
          await new Promise<void>((resolve) => {
            const timer = setTimeout(resolve, 3_000);
            child.once('close', () => {
              clearTimeout(timer);
              resolve();
            });
            child.kill('SIGKILL');
          });
        },
      };
      processes.add(proc);
      return proc;
    },

    async cleanup(): Promise<void> {
      closed = true;
      for (const p of [...processes]) await p.kill();
      for (const ns of namespaces.splice(0).reverse()) {
        const r = await run('ip', ['netns', 'del', ns]);
        if (r.code !== 0 && !/No such file/.test(r.stderr)) {
          throw describeFailure(`ip netns del ${ns}`, r);
        }
      }
      liveLabs.delete(entry);
    },
  };
  return lab;
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Delete namespaces `<prefix>-<pid>-...` left behind by runs whose process is gone. */
export async function sweepStaleNamespaces(prefix: string): Promise<string[]> {
  const r = await run('ip', ['netns', 'list']);
  if (r.code !== 0) return [];
  const removed: string[] = [];
  for (const line of r.stdout.split('\n')) {
    const name = line.trim().split(/\s+/)[0];
    if (!name?.startsWith(`${prefix}-`)) continue;
    const pid = Number(name.slice(prefix.length + 1).split('-')[0]);
    if (!Number.isInteger(pid) || pid <= 0 || pid === process.pid || pidAlive(pid)) continue;
    const del = await run('ip', ['netns', 'del', name]);
    if (del.code === 0) removed.push(name);
  }
  return removed;
}

/** Whether this process can build labs (root and a working `ip netns`). */
export async function labSupport(): Promise<{ ok: true } | { ok: false; reason: string }> {
  if (typeof process.getuid === 'function' && process.getuid() !== 0) return { ok: false, reason: 'needs root' };
  const r = await run('ip', ['netns', 'list'], { timeoutMs: 5_000 });
  if (r.code !== 0) return { ok: false, reason: `ip netns unavailable: ${r.stderr.trim()}` };
  return { ok: true };
}

// ---------------------------------------------------------------------------------------------
// Calico-style wiring
// ---------------------------------------------------------------------------------------------

/** The MAC Calico gives every host-side workload veth; its link-local is HOST_LINK_LOCAL. */
export const HOST_VETH_MAC = 'ee:ee:ee:ee:ee:ee';
export const HOST_LINK_LOCAL = 'fe80::ecee:eeff:feee:eeee';
export const GATEWAY_V4 = '169.254.1.1';

const sysctl = (key: string, value: string | number): string => `sysctl -qw ${key}=${value}`;

/** Make `ns` a router host: forwarding on, DAD and rp_filter off, the host's own addresses on lo. */
export async function prepareHost(lab: Lab, ns: string, addrs: { ipv4: string; ipv6?: string }): Promise<void> {
  await lab.sh(
    ns,
    [
      sysctl('net.ipv4.ip_forward', 1),
      sysctl('net.ipv6.conf.all.forwarding', 1),
      sysctl('net.ipv6.conf.all.accept_dad', 0),
      sysctl('net.ipv6.conf.default.accept_dad', 0),
      sysctl('net.ipv4.conf.all.rp_filter', 0),
      sysctl('net.ipv4.conf.default.rp_filter', 0),
      `ip addr add ${addrs.ipv4}/32 dev lo`,
      addrs.ipv6 ? `ip -6 addr add ${addrs.ipv6}/128 dev lo nodad` : 'true',
    ].join(' && '),
  );
}

export interface WorkloadSpec {
  /** Short name used in the namespace name. */
  readonly name: string;
  /** Host-side interface, e.g. cali1234. */
  readonly hostIface: string;
  readonly ipv4: string;
  readonly ipv6?: string;
}

/**
 * Create a workload namespace wired to `hostNs` the way Calico's CNI plugin does it: eth0 with a
 * /32 (and /128), a link-scope route to 169.254.1.1 and a default route via it, a permanent
 * neighbour entry for 169.254.1.1 with the host veth's MAC, an IPv6 default route via the host
 * veth's link-local address; on the host side the veth up with proxy_arp and a host route.
 * Returns the workload namespace's full name.
 */
export async function addWorkload(lab: Lab, hostNs: string, wl: WorkloadSpec): Promise<string> {
  const ns = await lab.addNs(wl.name);
  await lab.sh(ns, [sysctl('net.ipv6.conf.all.accept_dad', 0), sysctl('net.ipv6.conf.default.accept_dad', 0)].join(' && '));
  await lab.veth(hostNs, wl.hostIface, ns, 'eth0');
  const h = wl.hostIface;
  await lab.sh(
    hostNs,
    [
      `ip link set ${h} address ${HOST_VETH_MAC}`,
      sysctl(`net.ipv6.conf.${h}.accept_dad`, 0),
      `ip link set ${h} up`,
      sysctl(`net.ipv4.conf.${h}.proxy_arp`, 1),
      sysctl(`net.ipv4.neigh.${h}.proxy_delay`, 0),
      sysctl(`net.ipv4.conf.${h}.forwarding`, 1),
      sysctl(`net.ipv4.conf.${h}.rp_filter`, 0),
      `ip route add ${wl.ipv4}/32 dev ${h}`,
      wl.ipv6 ? `ip -6 route add ${wl.ipv6}/128 dev ${h}` : 'true',
    ].join(' && '),
  );
  await lab.sh(
    ns,
    [
      'ip link set eth0 up',
      `ip addr add ${wl.ipv4}/32 dev eth0`,
      `ip route add ${GATEWAY_V4} dev eth0 scope link`,
      `ip route add default via ${GATEWAY_V4} dev eth0`,
      `ip neigh add ${GATEWAY_V4} lladdr ${HOST_VETH_MAC} dev eth0 nud permanent`,
      wl.ipv6 ? `ip -6 addr add ${wl.ipv6}/128 dev eth0 nodad` : 'true',
      wl.ipv6 ? `ip -6 route add default via ${HOST_LINK_LOCAL} dev eth0` : 'true',
    ].join(' && '),
  );
  return ns;
}
