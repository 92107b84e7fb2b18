/**
 * Starts a real etcd (Debian's etcd-server) for a test: free loopback ports, a temporary data
 * directory, and kill/restart/cleanup controls. Nothing binds outside 127.0.0.1.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface EtcdServer {
  /** Client URL, e.g. http://127.0.0.1:40123. */
  readonly endpoint: string;
  /**
   * The same server on a Unix socket (`unix:///tmp/.../etcd.sock:0`). A socket file is reachable
   * from every network namespace, so agents running inside test namespaces use this one.
   */
  readonly unixEndpoint: string;
  readonly dataDir: string;
  /** SIGKILL the server (data stays). */
  kill(): Promise<void>;
  /** Start it again on the same ports and data. */
  restart(): Promise<void>;
  /** Run etcdctl against this server. */
  etcdctl(...args: string[]): Promise<string>;
  cleanup(): Promise<void>;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

/** Runs a command to completion: its stdout, or an error with its stderr. `stdin` is fed to it when given. */
export function run(cmd: string, args: string[], env: NodeJS.ProcessEnv, timeoutMs = 15_000, stdin?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env, stdio: [stdin === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] });
    if (stdin !== undefined) child.stdin!.end(stdin);
    let out = '';
    let err = '';
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.stdout!.on('data', (d) => (out += d));
    child.stderr!.on('data', (d) => (err += d));
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      if (code === 0) resolve(out);
      else reject(new Error(`${cmd} ${args.join(' ')} exited ${code}: ${err.trim()}`));
    });
  });
}

export async function waitHealthy(endpoint: string, proc: ChildProcess, logs: () => string, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (proc.exitCode !== null) throw new Error(`etcd exited (${proc.exitCode}) while starting:\n${logs()}`);
    try {
      const res = await fetch(`${endpoint}/health`, { signal: AbortSignal.timeout(1_000) });
      if (res.ok && ((await res.json()) as { health?: string }).health === 'true') return;
    } catch {
      // not up yet
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`etcd at ${endpoint} not healthy after ${timeoutMs} ms:\n${logs()}`);
}

export const running = new Set<ChildProcess>();
process.on('exit', () => {
  for (const p of running) p.kill('SIGKILL');
});

export async function startEtcd(): Promise<EtcdServer> {
  const dataDir = mkdtempSync(join(tmpdir(), 'routecat-etcd-'));
  // etcd names a unix listener after the URL's host, relative to its working directory.
  const unixEndpoint = `unix://${dataDir}/etcd.sock:0`;
  const clientPort = await freePort();
  const peerPort = await freePort();
  const endpoint = `http://127.0.0.1:${clientPort}`;
  const peerUrl = `http://127.0.0.1:${peerPort}`;
  const args = [
    '--name', 'test', '--data-dir', join(dataDir, 'data'),
    '--listen-client-urls', `${endpoint},unix://etcd.sock:0`, '--advertise-client-urls', endpoint,
    '--listen-peer-urls', peerUrl, '--initial-advertise-peer-urls', peerUrl,
    '--initial-cluster', `test=${peerUrl}`, '--initial-cluster-state', 'new',
    '--log-level', 'error',
  ];
  let proc: ChildProcess | undefined;
  let logs = '';
  const launch = async () => {
    logs = '';
    rmSync(join(dataDir, 'etcd.sock:0'), { force: true }); // left behind by a killed server
    const p = spawn('etcd', args, { cwd: dataDir, stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, ETCD_UNSUPPORTED_ARCH: process.env.ETCD_UNSUPPORTED_ARCH ?? '' } });
    p.stderr?.on('data', (d) => (logs = (logs + d).slice(-4000)));
    running.add(p);
    p.on('exit', () => running.delete(p));
    proc = p;
    await waitHealthy(endpoint, p, () => logs);
  };
  const kill = async () => {
    const p = proc;
    if (!p || p.exitCode !== null) return;
    await new Promise<void>((resolve) => {
      p.once('exit', () => resolve());
      p.kill('SIGKILL');
    });
  };
  await launch();
  return {
    endpoint,
    unixEndpoint,
    dataDir,
    kill,
    restart: launch,
    etcdctl: (...a: string[]) => run('etcdctl', ['--endpoints', endpoint, ...a], { ...process.env, ETCDCTL_API: '3' }),
    cleanup: async () => {
      await kill();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}
