/**
 * The CNI plugin end to end, driven exactly as a container runtime drives it: the binary
 * (`node --import tsx src/main.ts` under the names routecat / routecat-ipam) found on CNI_PATH,
 * CNI_* in the environment, config on stdin, run inside a test "host" namespace against a real
 * etcd; containers are namespaces under /run/netns. Chaining with Debian's tuning plugin, and
 * routecat-ipam under Debian's bridge plugin. Needs root; everything is under `rccni-` and removed.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { startEtcd, type EtcdServer } from '../helpers/etcd.ts';
import { createLab, labSupport, prepareHost, sweepStaleNamespaces, type Lab } from '../helpers/netns.ts';
import { createCniRuntime, type CniRuntime, type ConfList } from '../helpers/cni-runtime.ts';
import { connectEtcd, type Etcd3 } from '../../src/datastore/etcd.ts';
import { ResourceStore } from '../../src/datastore/resource-store.ts';
import { createIpam } from '../../src/ipam/ipam.ts';
import type { Ipam } from '../../src/ipam/api.ts';
import { hostVethName } from '../../src/cni/naming.ts';

const support = await labSupport();
const skip = support.ok ? false : support.reason;
const NODE = 'rchost1';
const NET = 'rcnet';

let etcd: EtcdServer;
let lab: Lab;
let client: Etcd3;
let ipam: Ipam;
let rt: CniRuntime;
let hostNs: string;
const ns: Record<string, string> = {};
const path = (n: string) => `/run/netns/${ns[n]}`;

function routecatConf(extra: object = {}): Record<string, unknown> {
  return {
    type: 'routecat',
    etcd_endpoints: etcd.unixEndpoint,
    nodename: NODE,
    mtu: 1450,
    policy_setup_timeout_seconds: 0,
    log_level: 'info',
    ipam: { type: 'routecat-ipam', assign_ipv4: 'true', assign_ipv6: 'true' },
    ...extra,
  };
}

const list = (): ConfList => ({
  cniVersion: '1.0.0',
  name: NET,
  plugins: [routecatConf(), { type: 'tuning', sysctl: { 'net.ipv4.conf.eth0.accept_local': '1' } }],
});

before(async () => {
  if (skip) return;
  await sweepStaleNamespaces('rccni');
  etcd = await startEtcd();
  lab = createLab('rccni');
  hostNs = await lab.addNs('host');
  await prepareHost(lab, hostNs, { ipv4: '192.168.254.1' });
  for (const n of ['c1', 'c2', 'c3']) ns[n] = await lab.addNs(n);
  rt = createCniRuntime(hostNs);
  client = connectEtcd({ endpoints: [etcd.endpoint] });
  ipam = createIpam(client);
  const store = new ResourceStore(client);
  await store.create({ apiVersion: 'projectcalico.org/v3', kind: 'IPPool', metadata: { name: 'pool4' }, spec: { cidr: '10.77.0.0/16', blockSize: 26, ipipMode: 'Never', vxlanMode: 'Never', natOutgoing: false, nodeSelector: 'all()' } });
  await store.create({ apiVersion: 'projectcalico.org/v3', kind: 'IPPool', metadata: { name: 'pool6' }, spec: { cidr: 'fd77::/112', blockSize: 122, nodeSelector: 'all()' } });
});

after(async () => {
  if (skip) return;
  client?.close();
  rt?.cleanup();
  await lab?.cleanup();
  await etcd?.cleanup();
});

let res1: Record<string, any> | undefined;
let res2: Record<string, any> | undefined;
const att = (n: string, ifname = 'eth0') => ({ containerId: `${n}-id`, netns: path(n), ifname });

test('VERSION', { skip }, async () => {
  const r = await rt.exec('routecat', 'VERSION', { cniVersion: '1.1.0' });
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(r.json, { cniVersion: '1.1.0', supportedVersions: ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'] });
});

test('ADD two containers: routecat + tuning chained, and routecat alone', { skip }, async () => {
  const a = await rt.conflist(list(), 'ADD', att('c1'));
  assert.equal(a.code, 0, `${a.stdout}\n${a.stderr}`);
  res1 = a.json;
  const b = await rt.exec('routecat', 'ADD', { cniVersion: '0.4.0', name: NET, ...routecatConf() }, att('c2'));
  assert.equal(b.code, 0, `${b.stdout}\n${b.stderr}`);
  res2 = b.json;
  // tuning passed routecat's result through
  assert.equal(res1!.interfaces[0].name, hostVethName('c1-id'));
  assert.equal(res1!.interfaces[1].sandbox, path('c1'));
  const ips1 = res1!.ips.map((i: { address: string }) => i.address);
  const ips2 = res2!.ips.map((i: { address: string }) => i.address);
  assert.equal(res2!.ips[0].version, '4'); // 0.4.0 result
  assert.equal(ips1.length, 2);
  assert.equal(ips2.length, 2);
  for (const ip of [...ips1, ...ips2]) assert.match(ip, /^10\.77\.\d+\.\d+\/32$|^fd77::[0-9a-f:]+\/128$/);
  assert.equal(new Set([...ips1, ...ips2]).size, 4, 'addresses are unique');
});

test('container and host side are wired as Calico does', { skip }, async () => {
  const [v4, v6] = res1!.ips.map((i: { address: string }) => i.address);
  const c1 = ns.c1;
  const addrs = JSON.parse(await lab.must(c1, 'ip', ['-j', 'addr', 'show', 'dev', 'eth0']))[0];
  assert.equal(addrs.mtu, 1450);
  const have = addrs.addr_info.map((x: { local: string; prefixlen: number }) => `${x.local}/${x.prefixlen}`);
  assert.ok(have.includes(v4) && have.includes(v6), have.join(' '));
  const routes = await lab.must(c1, 'ip', ['route', 'show']);
  assert.match(routes, /default via 169\.254\.1\.1 dev eth0/);
  assert.match(routes, /169\.254\.1\.1 dev eth0 scope link/);
  assert.match(await lab.must(c1, 'ip', ['-6', 'route', 'show', 'default']), /default via fe80::ecee:eeff:feee:eeee dev eth0/);
  assert.match(await lab.must(c1, 'ip', ['neigh', 'show', '169.254.1.1']), /lladdr ee:ee:ee:ee:ee:ee PERMANENT/);
  assert.equal((await lab.must(c1, 'sysctl', ['-n', 'net.ipv4.conf.eth0.accept_local'])).trim(), '1', 'tuning ran on the chained result');
  const h = hostVethName('c1-id');
  const host = JSON.parse(await lab.must(hostNs, 'ip', ['-j', 'link', 'show', 'dev', h]))[0];
  assert.equal(host.address, 'ee:ee:ee:ee:ee:ee');
  assert.ok(host.flags.includes('UP'));
  // With the agent's route protocol (192, "eigrp" to iproute2), so the agent owns the route.
  assert.match(await lab.must(hostNs, 'ip', ['route', 'show', v4]), new RegExp(`dev ${h} proto (192|eigrp) scope link`));
  assert.equal((await lab.must(hostNs, 'cat', [`/proc/sys/net/ipv4/conf/${h}/proxy_arp`])).trim(), '1');
});

test('WorkloadEndpoints are in etcd', { skip }, async () => {
  const out = await etcd.etcdctl('get', `/calico/resources/v3/projectcalico.org/workloadendpoints/default/${NODE}-cni-c1--id-eth0`, '--print-value-only');
  const wep = JSON.parse(out);
  assert.equal(wep.kind, 'WorkloadEndpoint');
  assert.equal(wep.spec.node, NODE);
  assert.equal(wep.spec.orchestrator, 'cni');
  assert.equal(wep.spec.interfaceName, hostVethName('c1-id'));
  assert.deepEqual([...wep.spec.ipNetworks].sort(), res1!.ips.map((i: { address: string }) => i.address).sort());
  assert.deepEqual(wep.spec.profiles, [NET]);
  assert.ok(await etcd.etcdctl('get', '/calico/resources/v3/projectcalico.org/profiles/rcnet', '--print-value-only'));
});

test('containers reach each other through the host namespace', { skip }, async () => {
  const v4 = res2!.ips[0].address.split('/')[0];
  await lab.must(ns.c1, 'ping', ['-c', '1', '-W', '2', v4]);
  const v6 = res2!.ips[1].address.split('/')[0];
  await lab.must(ns.c1, 'ping', ['-6', '-c', '1', '-W', '3', v6]);
});

test('CHECK with the cached result passes', { skip }, async () => {
  const r = await rt.conflist(list(), 'CHECK', att('c1'), res1);
  assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
});

test('ADD on an existing attachment fails with a clear message and changes nothing', { skip }, async () => {
  const r = await rt.exec('routecat', 'ADD', { cniVersion: '1.0.0', name: NET, ...routecatConf() }, att('c1'));
  assert.equal(r.code, 1);
  assert.equal(r.json!.code, 101);
  assert.match(r.json!.msg, /already exists/);
  assert.equal((await ipam.ipsByHandle(`${NET}.c1-id`)).length, 2);
});

test('bad config: code 7 naming the field', { skip }, async () => {
  const r = await rt.exec('routecat', 'ADD', { cniVersion: '1.0.0', name: NET, ...routecatConf({ mtu: 'jumbo' }) }, att('c3'));
  assert.equal(r.code, 1);
  assert.equal(r.json!.code, 7);
  assert.match(r.json!.msg, /field mtu/);
});

test('DEL twice succeeds and releases the addresses', { skip }, async () => {
  for (let i = 0; i < 2; i++) {
    const a = await rt.conflist(list(), 'DEL', att('c1'), res1);
    assert.equal(a.code, 0, `${a.stdout}\n${a.stderr}`);
    const b = await rt.exec('routecat', 'DEL', { cniVersion: '0.4.0', name: NET, ...routecatConf() }, att('c2'));
    assert.equal(b.code, 0, `${b.stdout}\n${b.stderr}`);
  }
  assert.deepEqual(await ipam.ipsByHandle(`${NET}.c1-id`), []);
  assert.deepEqual(await ipam.ipsByHandle(`${NET}.c2-id`), []);
  for (const ip of [...res1!.ips, ...res2!.ips]) assert.equal(await ipam.lookup(ip.address.split('/')[0]), undefined);
  assert.equal((await lab.exec(hostNs, 'ip', ['link', 'show', 'dev', hostVethName('c1-id')])).code, 1);
  assert.equal((await lab.exec(ns.c1, 'ip', ['link', 'show', 'dev', 'eth0'])).code, 1);
  assert.equal((await etcd.etcdctl('get', '--prefix', '/calico/resources/v3/projectcalico.org/workloadendpoints/', '--keys-only')).trim(), '');
});

test('routecat-ipam under the bridge plugin', { skip }, async () => {
  const br: ConfList = {
    cniVersion: '1.0.0',
    name: 'rcbr',
    plugins: [{ type: 'bridge', bridge: 'rccnibr0', isGateway: false, ipMasq: false, ipam: { type: 'routecat-ipam', assign_ipv4: 'true' }, etcd_endpoints: etcd.unixEndpoint, nodename: NODE }],
  };
  const a = await rt.conflist(br, 'ADD', att('c3'));
  assert.equal(a.code, 0, `${a.stdout}\n${a.stderr}`);
  const ip = a.json!.ips[0].address as string;
  assert.match(ip, /^10\.77\./);
  assert.match(await lab.must(ns.c3, 'ip', ['addr', 'show', 'dev', 'eth0']), new RegExp(ip.replace(/\./g, '\\.')));
  assert.deepEqual(await ipam.ipsByHandle('rcbr.c3-id'), [ip]);
  const d = await rt.conflist(br, 'DEL', att('c3'), a.json);
  assert.equal(d.code, 0, `${d.stdout}\n${d.stderr}`);
  assert.deepEqual(await ipam.ipsByHandle('rcbr.c3-id'), []);
});

test('GC releases stale handles of this network only', { skip }, async () => {
  await ipam.autoAssign({ handleId: `${NET}.stale`, hostname: NODE, num4: 1, num6: 0 });
  await ipam.autoAssign({ handleId: `${NET}.alive`, hostname: NODE, num4: 1, num6: 0 });
  await ipam.autoAssign({ handleId: 'othernet.x', hostname: NODE, num4: 1, num6: 0 });
  const r = await rt.exec('routecat', 'GC', { cniVersion: '1.1.0', name: NET, ...routecatConf(), 'cni.dev/valid-attachments': [{ containerID: 'alive', ifname: 'eth0' }] });
  assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
  assert.deepEqual(await ipam.ipsByHandle(`${NET}.stale`), []);
  assert.equal((await ipam.ipsByHandle(`${NET}.alive`)).length, 1);
  assert.equal((await ipam.ipsByHandle('othernet.x')).length, 1);
});

test('STATUS: ok with etcd, 50 without', { skip }, async () => {
  const ok = await rt.exec('routecat', 'STATUS', { cniVersion: '1.1.0', name: NET, ...routecatConf() });
  assert.equal(ok.code, 0, `${ok.stdout}\n${ok.stderr}`);
  const bad = await rt.exec('routecat', 'STATUS', { cniVersion: '1.1.0', name: NET, ...routecatConf({ etcd_endpoints: 'http://127.0.0.1:1' }) });
  assert.equal(bad.code, 1);
  assert.equal(bad.json!.code, 50);
});
