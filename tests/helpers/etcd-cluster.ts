/**
 * A real multi-member etcd cluster for a test: every member on free loopback ports with its own
 * data directory, started together (a member is healthy only once there is a quorum), with
 * per-member kill/restart and cleanup. Nothing binds outside 127.0.0.1.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, run, running, waitHealthy } from './etcd.ts';

export interface EtcdMember {
  readonly name: string;
  /** Client URL, e.g. http://127.0.0.1:40123. */
  readonly endpoint: string;
  /** SIGKILL the member (its data stays). */
  kill(): Promise<void>;
  /** Start it again on the same ports and data; resolves once it is healthy. */
  restart(): Promise<void>;
}

export interface EtcdCluster {
  readonly members: readonly EtcdMember[];
  readonly endpoints: readonly string[];
  /** Run etcdctl against the given members (default: all). */
  etcdctl(args: string[], members?: readonly EtcdMember[]): Promise<string>;
  cleanup(): Promise<void>;
}

export async function startEtcdCluster(size = 3): Promise<EtcdCluster> {
  const dir = mkdtempSync(join(tmpdir(), 'routecat-etcd-cluster-'));
  const specs = [];
  for (let i = 1; i <= size; i++) specs.push({ name: `m${i}`, client: `http://127.0.0.1:${await freePort()}`, peer: `http://127.0.0.1:${await freePort()}` });
  const initialCluster = specs.map((s) => `${s.name}=${s.peer}`).join(',');
  const members: EtcdMember[] = specs.map((s) => {
    let proc: ChildProcess | undefined;
    let logs = '';
    let started = false;
    const launch = async () => {
      logs = '';
      const args = [
        '--name', s.name, '--data-dir', join(dir, s.name),
        '--listen-client-urls', s.client, '--advertise-client-urls', s.client,
        '--listen-peer-urls', s.peer, '--initial-advertise-peer-urls', s.peer,
        '--initial-cluster', initialCluster, '--initial-cluster-state', started ? 'existing' : 'new',
        '--initial-cluster-token', 'routecat-test', '--log-level', 'error',
        // Keep elections quick on a busy test machine.
        '--heartbeat-interval', '50', '--election-timeout', '500',
      ];
      started = true;
      const p = spawn('etcd', args, { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, ETCD_UNSUPPORTED_ARCH: process.env.ETCD_UNSUPPORTED_ARCH ?? '' } });
      p.stderr?.on('data', (d) => (logs = (logs + d).slice(-4000)));
      running.add(p);
      p.on('exit', () => running.delete(p));
      proc = p;
      await waitHealthy(s.client, p, () => logs, 30_000);
    };
    const kill = async () => {
      const p = proc;
      if (!p || p.exitCode !== null || p.signalCode !== null) return;
      await new Promise<void>((resolve) => {
        p.once('exit', () => resolve());
        p.kill('SIGKILL');
      });
    };
    return { name: s.name, endpoint: s.client, kill, restart: launch };
  });
  try {
    await Promise.all(members.map((m) => m.restart()));
  } catch (err) {
    await Promise.all(members.map((m) => m.kill()));
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  return {
    members,
    endpoints: members.map((m) => m.endpoint),
    etcdctl: (args, which = members) => run('etcdctl', ['--endpoints', which.map((m) => m.endpoint).join(','), ...args], { ...process.env, ETCDCTL_API: '3' }),
    cleanup: async () => {
      await Promise.all(members.map((m) => m.kill()));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
