/**
 * `routecat proxy` on the hosts of a NodeLab: a proxy inside a host namespace on 127.0.0.1:2379
 * (the namespace's own loopback) in front of the lab's etcd (its Unix socket, reachable from every
 * namespace), and the host's agent, `routecat ctl` and Prometheus scrapes going through it.
 * Processes are the lab's (NodeLab.cleanup() kills them); this module owns no state of its own.
 */
import { join } from 'node:path';
import type { NodeLab } from './node-lab.ts';
import type { LabProcess } from './netns.ts';
import { REPO } from './cni-runtime.ts';
import { waitFor } from './wait.ts';

/** What every client inside a host namespace uses: that host's proxy. */
export const LOCAL_PROXY = 'http://127.0.0.1:2379';
const MAIN = join(REPO, 'src/main.ts');
const PROXY_HEALTH = 'http://127.0.0.1:9097';

/** Starts `routecat proxy` in the host's namespace and waits until it is ready (its cache listed). */
export async function startHostProxy(lab: NodeLab, hostName: string): Promise<LabProcess> {
  const h = lab.hosts.get(hostName)!;
  const p = lab.lab.spawn(h.ns, process.execPath, ['--import', 'tsx', MAIN, 'proxy', '--listen', '127.0.0.1:2379', '--etcd-endpoints', lab.etcd.unixEndpoint, '--log-level', 'info']);
  await waitFor(`the proxy on ${hostName} to be ready`, async () => (await lab.lab.exec(h.ns, 'curl', ['-sf', `${PROXY_HEALTH}/readiness`], { timeoutMs: 3_000 })).code === 0, 30_000, () => p.output().slice(-2000));
  return p;
}

/**
 * NodeLab.startAgent with the agent's datastore being its host's proxy instead of etcd: the same
 * command line on a view of the lab whose etcd endpoint is LOCAL_PROXY.
 */
export function startAgentViaProxy(lab: NodeLab, hostName: string, extra: readonly string[], opts: { readonly bgp?: boolean } = {}): LabProcess {
  const view = Object.assign(Object.create(lab) as NodeLab, { etcd: { ...lab.etcd, unixEndpoint: LOCAL_PROXY } });
  return view.startAgent(hostName, extra, opts);
}

/** `routecat ctl ARGS` run inside the host's namespace against its proxy; throws on failure. */
export async function ctlViaProxy(lab: NodeLab, hostName: string, args: readonly string[], stdin = ''): Promise<string> {
  const h = lab.hosts.get(hostName)!;
  const r = await lab.lab.exec(h.ns, process.execPath, ['--import', 'tsx', MAIN, 'ctl', ...args, '--etcd-endpoints', LOCAL_PROXY], { timeoutMs: 30_000, stdin });
  if (r.code !== 0) throw new Error(`routecat ctl ${args.join(' ')} on ${hostName} exited ${r.code}: ${r.stderr}${r.stdout}`);
  return r.stdout;
}

/** Prometheus text as name{labels} -> value (samples without labels under their bare name). */
export function parseMetrics(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line.startsWith('#') || line.trim() === '') continue;
    const m = /^(\S+?(?:\{[^}]*\})?)\s+(\S+)/.exec(line);
    if (m) out.set(m[1]!, Number(m[2]));
  }
  return out;
}

/** The proxy's own metrics on a host (scraped inside its namespace). */
export async function proxyMetrics(lab: NodeLab, hostName: string): Promise<Map<string, number>> {
  return parseMetrics(await lab.lab.must(lab.hosts.get(hostName)!.ns, 'curl', ['-sf', `${PROXY_HEALTH}/metrics`], { timeoutMs: 5_000 }));
}

/** etcd's metrics on its client URL. */
export async function etcdMetrics(lab: NodeLab): Promise<Map<string, number>> {
  const res = await fetch(`${lab.etcd.endpoint}/metrics`, { signal: AbortSignal.timeout(5_000) });
  return parseMetrics(await res.text());
}
