/**
 * The agent, the CNI plugin and `routecat ctl` running through `routecat proxy`, end to end with
 * real parts: a real etcd, two host namespaces on one segment with NO static routes, in each a
 * proxy on the namespace's 127.0.0.1:2379 (upstream: etcd's Unix socket) and `routecat node`
 * (BGP on) whose only datastore is that proxy; the IPPool, the network's Profile and a policy are
 * applied with ctl through a proxy; containers are made by the CNI plugin pointed at the proxy.
 * Covers: workload routes, cross-host ping over BGP-learned routes, a deny policy taking effect on
 * real packets, and etcd serving one watch stream per proxy rather than one per component.
 * Serial; needs root; namespaces are `rcpx-*`, removed afterwards (also on failure).
 */
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { waitFor } from '../helpers/wait.ts';
import { NodeLab } from '../helpers/node-lab.ts';
import { labSupport, sweepStaleNamespaces } from '../helpers/netns.ts';
import { createCniRuntime, type CniRuntime } from '../helpers/cni-runtime.ts';
import { LOCAL_PROXY, ctlViaProxy, etcdMetrics, proxyMetrics, startAgentViaProxy, startHostProxy } from '../helpers/proxy-lab.ts';

const support = await labSupport();
const skip = support.ok ? false : support.reason;

const NET = 'rcpxnet';
const POOL = '10.71.0.0/16';
const HOSTS = [
  { name: 'pa', ip: '10.203.0.1', ip6: 'fd00:203::1', block: POOL, block6: 'fd00:71::/48' },
  { name: 'pb', ip: '10.203.0.2', ip6: 'fd00:203::2', block: POOL, block6: 'fd00:71::/48' },
] as const;

const MANIFESTS = `apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: rcpx-pool}
spec: {cidr: ${POOL}, blockSize: 26, ipipMode: Never, vxlanMode: Never, natOutgoing: false, nodeSelector: all()}
---
apiVersion: projectcalico.org/v3
kind: Profile
metadata: {name: ${NET}}
spec:
  ingress: [{action: Allow}]
  egress: [{action: Allow}]
`;

/** A container made by the CNI plugin: its id, host, namespace and IPv4 address. */
type Container = Readonly<Record<'id' | 'host' | 'ns' | 'ip', string>>;

describe('agent, CNI plugin and ctl through a per-host routecat proxy', { skip, timeout: 300_000, concurrency: 1 }, () => {
  let lab: NodeLab;
  const ns = (hostName: string): string => lab.hosts.get(hostName)!.ns;
  const containers = new Map<string, Container>();
  const runtimes = new Map<string, CniRuntime>();
  const logs = (tail = 2500) =>
    [...lab.hosts.values()]
      .flatMap((h) => [h.agent && `--- ${h.name} agent:\n${h.agent.output().slice(-tail)}`, proxies.get(h.name) && `--- ${h.name} proxy:\n${proxies.get(h.name)!.output().slice(-tail)}`])
      .filter(Boolean)
      .join('\n');
  const proxies = new Map<string, { output(): string }>();

  async function addContainer(id: string, hostName: string): Promise<Container> {
    const cns = await lab.lab.addNs(id);
    const conf = { cniVersion: '1.0.0', name: NET, type: 'routecat', etcd_endpoints: LOCAL_PROXY, nodename: hostName, policy_setup_timeout_seconds: 20, ipam: { type: 'routecat-ipam', assign_ipv4: 'true', assign_ipv6: 'false' } };
    const add = await runtimes.get(hostName)!.exec('routecat', 'ADD', conf, { containerId: id, netns: `/run/netns/${cns}`, ifname: 'eth0' });
    assert.equal(add.code, 0, `ADD ${id} on ${hostName}: ${add.stdout}\n${add.stderr}`);
    assert.doesNotMatch(add.stderr, /not reported up/, `${id}: ADD saw the agent report the endpoint up (through the proxy)`);
    const c = { id, host: hostName, ns: cns, ip: (add.json!.ips as Array<{ address: string }>)[0]!.address.split('/')[0]! };
    containers.set(id, c);
    return c;
  }

  const ping = async (from: string, to: string): Promise<boolean> =>
    (await lab.lab.exec(containers.get(from)!.ns, 'ping', ['-c', '1', '-W', '1', containers.get(to)!.ip], { timeoutMs: 5_000 })).code === 0;

  /** Kills every process and deletes every namespace of the lab; safe to call twice. */
  const cleanup = async (): Promise<void> => {
    for (const rt of runtimes.values()) rt.cleanup();
    runtimes.clear();
    await lab?.cleanup();
  };

  before(async () => {
    await sweepStaleNamespaces('rcpx');
    lab = await NodeLab.create('rcpx', 'iptables');
    try {
      await lab.addHosts(HOSTS, { staticRoutes: false });
      for (const h of HOSTS) proxies.set(h.name, await startHostProxy(lab, h.name));
      await ctlViaProxy(lab, 'pa', ['apply', '-f', '-'], MANIFESTS);
      for (const h of HOSTS) {
        runtimes.set(h.name, createCniRuntime(ns(h.name)));
        startAgentViaProxy(lab, h.name, ['--log-level', 'info'], { bgp: true });
      }
      await lab.waitApplied('0', 60_000);
    } catch (err) {
      await cleanup();
      throw err;
    }
  });
  after(cleanup);

  test('ctl through the proxy: the pool and profile are in etcd', async () => {
    const pools = await ctlViaProxy(lab, 'pb', ['get', 'ippools', '-o', 'json']);
    assert.match(pools, /rcpx-pool/);
    assert.match(await lab.etcd.etcdctl('get', `/calico/resources/v3/projectcalico.org/profiles/${NET}`, '--print-value-only'), /"Allow"/);
  });

  test('CNI ADD through the proxy: workload routes on each host, ping across hosts over BGP-learned routes', async () => {
    await Promise.all([addContainer('ca1', 'pa'), addContainer('cb1', 'pb')]);
    for (const c of containers.values()) {
      await waitFor(`${c.id}'s route on ${c.host}`, async () => /dev cali/.test(await lab.lab.must(ns(c.host), 'ip', ['route', 'get', c.ip])), 20_000, logs);
    }
    // The other host's block is learned by BGP (protocol 193), not configured.
    for (const [here, there] of [['pa', 'cb1'], ['pb', 'ca1']] as const) {
      const target = containers.get(there)!;
      await waitFor(`${here} learns ${target.ip}'s block by BGP`, async () => {
        const out = await lab.lab.must(ns(here), 'ip', ['-4', 'route', 'show', 'proto', '193']);
        return out.split('\n').some((l) => l.includes(` via ${HOSTS.find((h) => h.name === target.host)!.ip} `));
      }, 30_000, logs);
    }
    await waitFor('ca1 -> cb1', () => ping('ca1', 'cb1'), 30_000, logs);
    await waitFor('cb1 -> ca1', () => ping('cb1', 'ca1'), 15_000, logs);
  });

  test('a deny policy applied with ctl through the proxy drops real packets', async () => {
    const ca1 = containers.get('ca1')!;
    const cb1 = containers.get('cb1')!;
    assert.ok(ca1 && cb1, 'the containers of the previous test exist');
    const policy = `apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: rcpx-deny-ca1}
spec:
  order: 10
  selector: all()
  types: [Ingress]
  ingress: [{action: Deny, source: {nets: ['${ca1.ip}/32']}}, {action: Allow}]
`;
    await ctlViaProxy(lab, 'pb', ['apply', '-f', '-'], policy);
    await waitFor('ca1 -> cb1 to be dropped', async () => !(await ping('ca1', 'cb1')), 20_000, logs);
    assert.equal(await ping('ca1', 'cb1'), false, 'still dropped');
    assert.equal(await lab.eventually(() => ping('cb1', 'ca1')), true, 'cb1 -> ca1 (not denied) still answered');
    await ctlViaProxy(lab, 'pa', ['delete', 'globalnetworkpolicy', 'rcpx-deny-ca1']);
    await waitFor('ca1 -> cb1 again once the policy is deleted', () => ping('ca1', 'cb1'), 20_000, logs);
  });

  test('etcd serves one watch stream per proxy, not one per component', async (t) => {
    const perProxy = await Promise.all(HOSTS.map(async (h) => ({ host: h.name, m: await proxyMetrics(lab, h.name) })));
    const etcd = await etcdMetrics(lab);
    const streams = etcd.get('etcd_debugging_mvcc_watch_stream_total');
    const watchers = etcd.get('etcd_debugging_mvcc_watcher_total');
    const upstream = perProxy.reduce((n, p) => n + (p.m.get('routecat_proxy_upstream_watches') ?? NaN), 0);
    const clientStreams = perProxy.reduce((n, p) => n + (p.m.get('routecat_proxy_client_watch_streams') ?? NaN), 0);
    const local = perProxy.reduce((n, p) => n + (p.m.get('routecat_proxy_watchers_total{kind="local"}') ?? NaN), 0);
    const forwarded = perProxy.reduce((n, p) => n + (p.m.get('routecat_proxy_watchers_total{kind="forwarded"}') ?? NaN), 0);
    t.diagnostic(`etcd: ${streams} watch streams, ${watchers} watchers; proxies: ${upstream} upstream watches, ${clientStreams} open client watch streams, ${local} local and ${forwarded} forwarded watchers created`);
    // Every component's watch stays on its host: one upstream watch per proxy (one cached prefix),
    // plus nothing forwarded (the agent and the plugin only watch under /calico/).
    assert.equal(upstream, HOSTS.length, 'each proxy holds one upstream watch');
    assert.equal(streams, upstream, "etcd's open watch streams are the proxies' upstream watches");
    assert.equal(watchers, HOSTS.length, 'one watcher per proxy at etcd');
    assert.equal(forwarded, 0, 'no watch was forwarded');
    assert.ok(clientStreams >= HOSTS.length, `each agent watches through its proxy (${clientStreams} client streams)`);
    assert.ok(local > watchers, `local watchers (${local}) outnumber etcd's (${watchers})`);
  });
});
