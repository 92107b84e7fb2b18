/**
 * The CNI plugin on a BGP fabric, end to end: three host namespaces on one segment with NO static
 * routes, `routecat node` (BGP on) in each, a real etcd, containers created only by the CNI plugin
 * (run inside each host namespace like a runtime runs it, with the default wait for the agent).
 * Covers: containers reach each other across hosts (IPv4 and IPv6) over BGP-learned routes; route
 * aggregation (each host's FIB holds one proto-193 route per other host's block, not per
 * workload, plus a blackhole for its own block); policy from the first packet (a
 * GlobalNetworkPolicy written before the container exists: ADD returns only once the agent
 * reported the endpoint up, and the first ping is already dropped). Serial; needs root;
 * namespaces are `rcagg-*`, removed afterwards (also on failure).
 */
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { waitFor } from '../helpers/wait.ts';
import { NodeLab, type Host } from '../helpers/node-lab.ts';
import { labSupport, sweepStaleNamespaces } from '../helpers/netns.ts';
import { createCniRuntime, type CniRuntime, type PluginRun } from '../helpers/cni-runtime.ts';
import { createIpam } from '../../src/ipam/ipam.ts';
import { wepName } from '../../src/cni/naming.ts';

const support = await labSupport();
const skip = support.ok ? false : support.reason;

const NET = 'rcnet';
const POOL4 = '10.70.0.0/16';
const POOL6 = 'fd00:70::/48';
const HOSTS = [
  { name: 'ha', ip: '10.202.0.1', ip6: 'fd00:202::1', block: POOL4, block6: POOL6 },
  { name: 'hb', ip: '10.202.0.2', ip6: 'fd00:202::2', block: POOL4, block6: POOL6 },
  { name: 'hc', ip: '10.202.0.3', ip6: 'fd00:202::3', block: POOL4, block6: POOL6 },
] as const;

interface Container {
  readonly id: string;
  readonly host: string;
  readonly ns: string;
  readonly v4: string;
  readonly v6: string;
  readonly add: PluginRun;
  readonly addMs: number;
}

describe('CNI containers on a BGP fabric with route aggregation', { skip, timeout: 180_000, concurrency: 1 }, () => {
  let lab: NodeLab;
  const runtimes = new Map<string, CniRuntime>();
  const containers = new Map<string, Container>();
  const host = (n: string): Host => lab.hosts.get(n)!;
  const logs = (tail = 2500) => [...lab.hosts.values()].filter((h) => h.agent).map((h) => `--- ${h.name}:\n${h.agent!.output().slice(-tail)}`).join('\n');

  const conf = (hostName: string, extra: Record<string, unknown> = {}) => ({
    cniVersion: '1.0.0',
    name: NET,
    type: 'routecat',
    etcd_endpoints: lab.etcd.unixEndpoint,
    nodename: hostName,
    policy_setup_timeout_seconds: 10,
    log_level: 'info',
    ipam: { type: 'routecat-ipam', assign_ipv4: 'true', assign_ipv6: 'true' },
    ...extra,
  });

  /** A container namespace wired by the plugin on `hostName` (a CNI ADD as a runtime runs it). */
  async function addContainer(id: string, hostName: string, extra: Record<string, unknown> = {}): Promise<Container> {
    const ns = await lab.lab.addNs(id);
    const started = Date.now();
    const add = await runtimes.get(hostName)!.exec('routecat', 'ADD', conf(hostName, extra), { containerId: id, netns: `/run/netns/${ns}`, ifname: 'eth0' });
    const addMs = Date.now() - started;
    assert.equal(add.code, 0, `ADD ${id} on ${hostName}: ${add.stdout}\n${add.stderr}`);
    const ips = (add.json!.ips as Array<{ address: string }>).map((i) => i.address.split('/')[0]!);
    const c = { id, host: hostName, ns, v4: ips.find((i) => !i.includes(':'))!, v6: ips.find((i) => i.includes(':'))!, add, addMs };
    containers.set(id, c);
    return c;
  }

  const ping = async (from: string, to: string, v6 = false): Promise<boolean> =>
    (await lab.lab.exec(containers.get(from)!.ns, 'ping', [...(v6 ? ['-6'] : []), '-c', '1', '-W', '1', to], { timeoutMs: 5_000 })).code === 0;

  /** Confirmed affine blocks of a host: [v4 blocks, v6 blocks]. */
  async function blocksOf(hostName: string): Promise<[string[], string[]]> {
    const all = (await createIpam(lab.client).blocks(hostName)).filter((b) => b.affinityState === 'confirmed').map((b) => b.cidr);
    return [all.filter((c) => !c.includes(':')).sort(), all.filter((c) => c.includes(':')).sort()];
  }

  before(async () => {
    await sweepStaleNamespaces('rcagg');
    lab = await NodeLab.create('rcagg', 'iptables');
    try {
      await lab.addHosts(HOSTS, { staticRoutes: false });
      await lab.apply({ apiVersion: 'projectcalico.org/v3', kind: 'IPPool', metadata: { name: 'pool4' }, spec: { cidr: POOL4, blockSize: 26, ipipMode: 'Never', vxlanMode: 'Never', natOutgoing: false, nodeSelector: 'all()' } });
      await lab.apply({ apiVersion: 'projectcalico.org/v3', kind: 'IPPool', metadata: { name: 'pool6' }, spec: { cidr: POOL6, blockSize: 122, nodeSelector: 'all()' } });
      for (const h of HOSTS) {
        runtimes.set(h.name, createCniRuntime(host(h.name).ns));
        lab.startAgent(h.name, ['--ip6', h.ip6, '--log-level', 'info'], { bgp: true });
      }
      await lab.waitApplied('0', 30_000);
    } catch (err) {
      await cleanup();
      throw err;
    }
  });

  let cleaned = false;
  async function cleanup(): Promise<void> {
    if (cleaned) return;
    cleaned = true;
    for (const rt of runtimes.values()) rt.cleanup();
    await lab?.cleanup();
  }
  after(cleanup);

  test('two containers per host, created by the CNI plugin, reach each other across hosts (v4 and v6)', async (t) => {
    await Promise.all(HOSTS.map(async (h) => {
      await addContainer(`${h.name}1`, h.name);
      await addContainer(`${h.name}2`, h.name);
    }));
    for (const c of containers.values()) assert.doesNotMatch(c.add.stderr, /not reported up/, `${c.id}: ADD waited for the agent`);
    t.diagnostic(`ADD durations: ${[...containers.values()].map((c) => `${c.id} ${c.addMs} ms`).join(', ')}`);
    const pairs: Array<[string, string]> = [['ha1', 'hb1'], ['hb2', 'hc1'], ['hc2', 'ha2'], ['ha1', 'ha2']];
    for (const [from, to] of pairs) {
      const t = containers.get(to)!;
      await waitFor(`${from} -> ${to} (${t.v4})`, () => ping(from, t.v4), 30_000, logs);
      await waitFor(`${from} -> ${to} (${t.v6})`, () => ping(from, t.v6, true), 15_000, logs);
    }
  });

  test('each FIB: one proto-193 route per other host\'s block (not per workload), a blackhole for its own', async () => {
    const blocks = new Map<string, [string[], string[]]>();
    for (const h of HOSTS) blocks.set(h.name, await blocksOf(h.name));
    for (const h of HOSTS) {
      const [v4, v6] = blocks.get(h.name)!;
      assert.equal(v4.length, 1, `${h.name} holds one IPv4 block: ${v4.join(' ')}`);
      assert.equal(v6.length, 1, `${h.name} holds one IPv6 block: ${v6.join(' ')}`);
      for (const c of containers.values()) {
        if (c.host !== h.name) continue;
        assert.ok(c.v4.startsWith(v4[0]!.split('.').slice(0, 3).join('.')), `${c.id} ${c.v4} is in ${v4[0]}`);
      }
    }
    for (const h of HOSTS) {
      const expect4 = HOSTS.filter((o) => o !== h).map((o) => `${blocks.get(o.name)![0][0]} via ${o.ip}`).sort();
      const expect6 = HOSTS.filter((o) => o !== h).map((o) => `${blocks.get(o.name)![1][0]} via ${o.ip6}`).sort();
      const own = blocks.get(h.name)!;
      const fib = async (v6: boolean): Promise<{ via: string[]; blackholes: string[] }> => {
        const out = await lab.lab.must(host(h.name).ns, 'ip', [v6 ? '-6' : '-4', 'route', 'show', 'proto', '193']);
        const lines = out.split('\n').map((l) => l.trim()).filter(Boolean);
        return {
          via: lines.filter((l) => !l.startsWith('blackhole')).map((l) => l.split(' ').slice(0, 3).join(' ')).sort(),
          blackholes: lines.filter((l) => l.startsWith('blackhole')).map((l) => l.split(' ')[1]!).sort(),
        };
      };
      const show = async () => `${h.name} FIB:\n${await lab.lab.must(host(h.name).ns, 'ip', ['-4', 'route'])}\n${await lab.lab.must(host(h.name).ns, 'ip', ['-6', 'route'])}`;
      await waitFor(`${h.name}: aggregated routes`, async () => {
        const [f4, f6] = [await fib(false), await fib(true)];
        return JSON.stringify([f4, f6]) === JSON.stringify([{ via: expect4, blackholes: own[0] }, { via: expect6, blackholes: own[1] }]);
      }, 15_000, logs).catch(async (err: unknown) => {
        throw new Error(`${String(err)}\nexpected ${JSON.stringify([expect4, expect6, own])}\n${await show()}`);
      });
      // The workload /32s (proto 192, the agent's) are more specific than the blackhole.
      for (const c of containers.values()) {
        if (c.host !== h.name) continue;
        assert.match(await lab.lab.must(host(h.name).ns, 'ip', ['route', 'get', c.v4]), /dev cali/);
      }
      // An unused address of the own block is dropped locally, not sent on.
      const unused = `${own[0][0]!.split('.').slice(0, 3).join('.')}.${Number(own[0][0]!.split('.')[3]!.split('/')[0]) + 60}`;
      // (The kernel answers a lookup that hits a blackhole with EINVAL; no route at all would be ENETUNREACH.)
      const r = await lab.lab.exec(host(h.name).ns, 'ip', ['route', 'get', unused]);
      assert.ok(r.code !== 0 && /Invalid argument/.test(r.stderr), `${unused} on ${h.name}: ${r.stdout}${r.stderr}`);
    }
  });

  test('policy from the first packet: a GlobalNetworkPolicy applied before the container exists', async (t) => {
    const rev = await lab.apply({
      apiVersion: 'projectcalico.org/v3',
      kind: 'GlobalNetworkPolicy',
      metadata: { name: 'deny-locked' },
      spec: { order: 10, selector: "role == 'locked'", types: ['Ingress'], ingress: [{ action: 'Deny' }] },
    });
    await lab.waitApplied(rev, 20_000);
    // Created together on host hc: one locked, one open (the control: routing is in place at once,
    // since hc's block is already advertised).
    const [locked, open] = await Promise.all([addContainer('hclocked', 'hc', { labels: { role: 'locked' } }), addContainer('hcopen', 'hc')]);
    // Tried at once, before anything else: the very first packet is already policed.
    const [first, firstOpen] = await Promise.all([ping('ha1', locked.v4), ping('hb1', open.v4)]);
    t.diagnostic(`ADD durations: ${locked.id} ${locked.addMs} ms, ${open.id} ${open.addMs} ms; first open ping ${firstOpen ? 'answered' : 'lost'}`);
    for (const c of [locked, open]) {
      assert.doesNotMatch(c.add.stderr, /not reported up/, `${c.id}: ADD waited for the agent (${c.addMs} ms)`);
      const key = `/calico/felix/v2/no-region/host/hc/workload/default/${wepName('hc', 'cni', c.id, 'eth0')}/endpoint`;
      assert.match(await lab.etcd.etcdctl('get', key, '--print-value-only'), /"up"/, `${key} reported up`);
    }
    assert.equal(first, false, 'the first ping to the locked container is dropped');
    assert.equal(firstOpen || (await waitFor('ping the open container', () => ping('hb1', open.v4), 10_000, logs)), true);
    assert.equal(await ping('ha1', locked.v4), false);
    assert.equal(await ping('hc1', locked.v6, true), false, 'same host, IPv6: dropped too');
    assert.equal(await ping('hc1', open.v6, true) || (await waitFor('ping6 the open container', () => ping('hc1', open.v6, true), 10_000, logs)), true);
  });
});
