import { test } from 'node:test';
import assert from 'node:assert/strict';
import { runCni } from '../../src/cni/plugin.ts';
import { runIpamPlugin } from '../../src/cni/ipam-plugin.ts';
import { VethDataplane } from '../../src/cni/veth.ts';
import { hostVethName } from '../../src/cni/naming.ts';
import { setLogLevel } from '../../src/log.ts';
import { FakeIp, fakeBackend } from '../helpers/cni-fakes.ts';

const NETNS = '/run/netns/c1';
const conf = (extra: object = {}) => JSON.stringify({ cniVersion: '1.0.0', name: 'net1', type: 'routecat', nodename: 'h1', policy_setup_timeout_seconds: 0, log_level: 'none', ...extra });
const env = (command: string, extra: Record<string, string> = {}) => ({ CNI_COMMAND: command, CNI_CONTAINERID: 'c1', CNI_IFNAME: 'eth0', CNI_NETNS: NETNS, CNI_PATH: '/opt/cni/bin', ...extra });

function setup(reachable = true) {
  const ip = new FakeIp();
  ip.netns.add(NETNS);
  const backend = fakeBackend(undefined, undefined, reachable);
  const deps = { backend: async () => backend, veth: new VethDataplane(ip, ip.sys), sleep: async () => {} };
  const call = async (e: Record<string, string>, stdin: string, ipam = false) => {
    let out = '';
    const code = await (ipam ? runIpamPlugin(e, stdin, (t) => (out += t), deps) : runCni(e, stdin, (t) => (out += t), deps));
    return { code, out, json: out ? (JSON.parse(out) as Record<string, any>) : undefined };
  };
  return { ip, backend, call };
}

test.after(() => setLogLevel('info'));

test('ADD wires the veth, assigns addresses, writes the WEP, returns the result', async () => {
  const { ip, backend, call } = setup();
  const r = await call(env('ADD'), conf({ ipam: { type: 'routecat-ipam', assign_ipv6: 'true' }, mtu: 1400 }));
  assert.equal(r.code, 0, r.out);
  const h = hostVethName('c1');
  assert.deepEqual(r.json!.interfaces[0], { name: h, mac: 'ee:ee:ee:ee:ee:ee' });
  assert.equal(r.json!.interfaces[1].sandbox, NETNS);
  assert.deepEqual(r.json!.ips.map((i: { address: string }) => i.address), ['10.65.0.1/32', 'fd00::1/128']);
  assert.ok(r.json!.ips.every((i: { interface: number }) => i.interface === 1));
  const host = ip.find('host', h)!;
  assert.equal(host.mac, 'ee:ee:ee:ee:ee:ee');
  assert.ok(host.up);
  assert.deepEqual(host.routes.map((x) => x.dst), ['10.65.0.1/32', 'fd00::1/128']);
  const cont = ip.find(NETNS, 'eth0')!;
  assert.deepEqual(cont.addrs, ['10.65.0.1/32', 'fd00::1/128']);
  assert.deepEqual(cont.routes.map((x) => `${x.dst} ${x.gateway ?? ''}`), ['169.254.1.1 ', 'default 169.254.1.1', 'default fe80::ecee:eeff:feee:eeee']);
  assert.ok(ip.commands.some((c) => c.includes('neigh replace 169.254.1.1 lladdr ee:ee:ee:ee:ee:ee dev eth0 nud permanent')));
  assert.ok(ip.commands.some((c) => c.includes('mtu 1400')));
  assert.ok(ip.sysctls.some(([p, v]) => p === `net/ipv4/conf/${h}/proxy_arp` && v === '1'));
  const wep = backend.endpoints.weps.get('default/h1-cni-c1-eth0')!;
  assert.deepEqual(wep.spec?.ipNetworks, ['10.65.0.1/32', 'fd00::1/128']);
  assert.equal(wep.spec?.interfaceName, h);
  assert.equal(wep.spec?.mac, cont.mac);
  assert.deepEqual(backend.endpoints.profiles, ['net1']);
  assert.equal(backend.ipam.allocs.get('10.65.0.1/32')?.handleId, 'net1.c1');
  assert.equal(backend.ipam.allocs.get('10.65.0.1/32')?.attributes.node, 'h1');

  // CHECK passes, with the ADD result as prevResult
  const c = await call(env('CHECK'), conf({ ipam: { assign_ipv6: 'true' }, prevResult: r.json }));
  assert.equal(c.code, 0, c.out);
  assert.equal(c.out, '');

  // ADD again: fails with our code and changes nothing
  const again = await call(env('ADD'), conf());
  assert.equal(again.json!.code, 101);
  assert.match(again.json!.msg, /already exists/);
  assert.equal(backend.ipam.allocs.size, 2);
  assert.ok(ip.find('host', h));

  // DEL twice
  for (let i = 0; i < 2; i++) {
    const d = await call(env('DEL'), conf());
    assert.equal(d.code, 0, d.out);
  }
  assert.equal(backend.ipam.allocs.size, 0);
  assert.equal(backend.endpoints.weps.size, 0);
  assert.equal(ip.find('host', h), undefined);

  // CHECK now fails
  const gone = await call(env('CHECK'), conf());
  assert.equal(gone.json!.code, 103);
});

test('k8s pod: WEP name, namespace and kns profile, veth from namespace.pod', async () => {
  const { backend, call } = setup();
  const r = await call(env('ADD', { CNI_ARGS: 'IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-0' }), conf());
  assert.equal(r.code, 0, r.out);
  assert.equal(r.json!.interfaces[0].name, hostVethName('shop.web-0'));
  const wep = backend.endpoints.weps.get('shop/h1-k8s-web--0-eth0')!;
  assert.deepEqual(wep.spec?.profiles, ['kns.shop']);
  assert.equal(wep.spec?.pod, 'web-0');
  assert.equal(backend.endpoints.profiles.length, 0);
});

test('ADD failing midway rolls back addresses, veth and endpoint', async () => {
  const { ip, backend, call } = setup();
  ip.failOn = /\[\/run\/netns\/c1\] ip -batch/; // container-side configuration fails
  const r = await call(env('ADD'), conf());
  assert.equal(r.code, 1);
  assert.equal(r.json!.code, 100);
  assert.equal(backend.ipam.allocs.size, 0);
  assert.equal(ip.links.length, 0);
  assert.equal(backend.endpoints.weps.size, 0);

  ip.failOn = undefined;
  backend.endpoints.failPut = new Error('etcdserver: request timed out');
  const r2 = await call(env('ADD'), conf());
  assert.equal(r2.code, 1);
  assert.equal(backend.ipam.allocs.size, 0);
  assert.equal(ip.links.length, 0);
});

test('IPAM exhausted is our code; datastore unreachable is 11', async () => {
  const { backend, call } = setup();
  backend.ipam.failAssign = Object.assign(new Error('no free addresses in pools'), { code: 'E_IPAM_EXHAUSTED' });
  assert.equal((await call(env('ADD'), conf())).json!.code, 102);
  backend.ipam.failAssign = Object.assign(new Error('14 UNAVAILABLE: No connection established'), { name: 'GRPCUnavailableError' });
  assert.equal((await call(env('ADD'), conf())).json!.code, 11);
});

test('ADD into a missing netns is code 3', async () => {
  const { call } = setup();
  assert.equal((await call(env('ADD', { CNI_NETNS: '/run/netns/nope' }), conf())).json!.code, 3);
});

test('waits for the agent to report the endpoint up', async () => {
  const { backend, call } = setup();
  let polls = 0;
  const orig = backend.endpoints.status.bind(backend.endpoints);
  backend.endpoints.status = async (...a) => (++polls >= 3 ? 'up' : orig(...a));
  const r = await call(env('ADD'), conf({ policy_setup_timeout_seconds: 5 }));
  assert.equal(r.code, 0, r.out);
  assert.equal(polls, 3);
});

test('DEL without a netns and without anything allocated succeeds', async () => {
  const { call } = setup();
  const r = await call(env('DEL', { CNI_NETNS: '' }), conf());
  assert.equal(r.code, 0, r.out);
});

test('GC releases handles of this network that are not valid attachments', async () => {
  const { backend, call } = setup();
  await backend.ipam.autoAssign({ handleId: 'net1.keep', hostname: 'h1', num4: 1, num6: 0 });
  await backend.ipam.autoAssign({ handleId: 'net1.stale', hostname: 'h1', num4: 1, num6: 0 });
  await backend.ipam.autoAssign({ handleId: 'other.stale', hostname: 'h1', num4: 1, num6: 0 });
  const r = await call({ CNI_COMMAND: 'GC' }, conf({ cniVersion: '1.1.0', 'cni.dev/valid-attachments': [{ containerID: 'keep', ifname: 'eth0' }] }));
  assert.equal(r.code, 0, r.out);
  assert.deepEqual([...backend.ipam.allocs.values()].map((a) => a.handleId).sort(), ['net1.keep', 'other.stale']);
});

test('GC also removes the endpoint and veth of a collected attachment', async () => {
  const { ip, backend, call } = setup();
  assert.equal((await call(env('ADD'), conf())).code, 0);
  const r = await call({ CNI_COMMAND: 'GC' }, conf({ cniVersion: '1.1.0', 'cni.dev/valid-attachments': [] }));
  assert.equal(r.code, 0, r.out);
  assert.equal(backend.ipam.allocs.size, 0);
  assert.equal(backend.endpoints.weps.size, 0);
  assert.equal(ip.links.length, 0);
});

test('STATUS: 0 when the datastore answers, 50 when not', async () => {
  assert.equal((await setup().call({ CNI_COMMAND: 'STATUS' }, conf({ cniVersion: '1.1.0' }))).code, 0);
  const bad = await setup(false).call({ CNI_COMMAND: 'STATUS' }, conf({ cniVersion: '1.1.0' }));
  assert.equal(bad.json!.code, 50);
});

test('VERSION and error codes for bad input', async () => {
  const { call } = setup();
  const v = await call({ CNI_COMMAND: 'VERSION' }, '{"cniVersion":"0.4.0"}');
  assert.deepEqual(v.json, { cniVersion: '0.4.0', supportedVersions: ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'] });
  assert.equal((await call(env('ADD'), '{not json')).json!.code, 6);
  const bad = await call(env('ADD'), conf({ ipam: { assign_ipv4: 'maybe' } }));
  assert.equal(bad.code, 1);
  assert.equal(bad.json!.code, 7);
  assert.equal(bad.json!.cniVersion, '1.0.0');
  assert.match(bad.json!.msg, /ipam\.assign_ipv4/);
  assert.equal((await call({ CNI_COMMAND: 'ADD' }, conf())).json!.code, 4);
});

test('routecat-ipam: ADD returns addresses only, DEL releases, CHECK', async () => {
  const { ip, backend, call } = setup();
  const c = JSON.stringify({ cniVersion: '1.0.0', name: 'br', type: 'bridge', nodename: 'h1', log_level: 'none', ipam: { type: 'routecat-ipam', routes: [{ dst: '0.0.0.0/0' }] } });
  const r = await call(env('ADD'), c, true);
  assert.equal(r.code, 0, r.out);
  assert.deepEqual(r.json, { cniVersion: '1.0.0', ips: [{ address: '10.65.0.1/32' }], routes: [{ dst: '0.0.0.0/0' }], dns: {} });
  assert.equal(ip.commands.length, 0);
  assert.equal((await call(env('CHECK'), c, true)).code, 0);
  assert.equal((await call(env('ADD'), c, true)).json!.code, 101);
  assert.equal((await call(env('DEL'), c, true)).code, 0);
  assert.equal((await call(env('DEL'), c, true)).code, 0);
  assert.equal(backend.ipam.allocs.size, 0);
  assert.equal((await call(env('CHECK'), c, true)).json!.code, 103);
});
