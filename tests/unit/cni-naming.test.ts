import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { hostVethName, identify, linkLocalFromMac, wepName, HOST_LINK_LOCAL } from '../../src/cni/naming.ts';
import { parseEnv, parseNetConf } from '../../src/cni/config.ts';
import { attachmentResult, encodeResult, ipamResult } from '../../src/cni/result.ts';
import { buildWep } from '../../src/cni/endpoint.ts';
import { validateResource } from '../../src/model/validate.ts';
import { errorJson, CniError } from '../../src/cni/errors.ts';

test('host veth: cali + 11 hex of sha1, as Calico', () => {
  const expect = 'cali' + createHash('sha1').update('default.nginx').digest('hex').slice(0, 11);
  assert.equal(hostVethName('default.nginx'), expect);
  assert.equal(hostVethName('default.nginx').length, 15);
  assert.match(hostVethName('abc'), /^cali[0-9a-f]{11}$/);
});

test('link-local from the MAC', () => {
  assert.equal(linkLocalFromMac('ee:ee:ee:ee:ee:ee'), 'fe80::ecee:eeff:feee:eeee');
  assert.equal(HOST_LINK_LOCAL, 'fe80::ecee:eeff:feee:eeee');
  assert.equal(linkLocalFromMac('00:11:22:33:44:55'), 'fe80::211:22ff:fe33:4455');
});

test('WEP names double dashes, as Calico', () => {
  assert.equal(wepName('node-1', 'k8s', 'web-0', 'eth0'), 'node--1-k8s-web--0-eth0');
  assert.equal(wepName('h1', 'cni', 'abc123', 'eth0'), 'h1-cni-abc123-eth0');
});

const conf = parseNetConf({ cniVersion: '1.0.0', name: 'net1' }, { env: {}, hostname: 'h1' });

test('identity: k8s pod vs plain container', () => {
  const k = identify(parseEnv({ CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'c1', CNI_IFNAME: 'eth0', CNI_NETNS: '/x', CNI_ARGS: 'K8S_POD_NAMESPACE=ns1;K8S_POD_NAME=web-0' }), conf);
  assert.equal(k.orchestrator, 'k8s');
  assert.equal(k.namespace, 'ns1');
  assert.equal(k.wepName, 'h1-k8s-web--0-eth0');
  assert.equal(k.hostVeth, hostVethName('ns1.web-0'));
  assert.equal(k.handleId, 'net1.c1');
  const c = identify(parseEnv({ CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'c1', CNI_IFNAME: 'eth1', CNI_NETNS: '/x' }), conf);
  assert.equal(c.orchestrator, 'cni');
  assert.equal(c.namespace, 'default');
  assert.equal(c.wepName, 'h1-cni-c1-eth1');
  assert.equal(c.hostVeth, hostVethName('c1'));
});

test('WEP is a valid Calico v3 WorkloadEndpoint', () => {
  const id = identify(parseEnv({ CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'c1', CNI_IFNAME: 'eth0', CNI_NETNS: '/x' }), conf);
  const wep = buildWep({ id, network: 'net1', containerMac: '02:00:00:00:00:01', ipNetworks: ['10.65.0.1/32', 'fd00::1/128'], labels: { app: 'a' } });
  assert.equal(wep.metadata.name, 'h1-cni-c1-eth0');
  assert.equal(wep.metadata.namespace, 'default');
  assert.deepEqual(wep.spec?.profiles, ['net1']);
  assert.equal(wep.spec?.orchestrator, 'cni');
  assert.equal(wep.spec?.workload, 'c1');
  assert.equal(wep.spec?.interfaceName, id.hostVeth);
  assert.equal(wep.metadata.labels?.app, 'a');
  assert.equal(wep.metadata.labels?.['projectcalico.org/orchestrator'], 'cni');
  assert.doesNotThrow(() => validateResource(wep as never));
});

test('result: 1.x has interface indexes and no per-address version; 0.3.1 has version', () => {
  const input = { hostVeth: 'caliabc', containerIf: 'eth0', containerMac: '02:00:00:00:00:01', sandbox: '/run/netns/x', ipv4: ['10.65.0.1/32'], ipv6: ['fd00::1/128'] };
  const r1 = JSON.parse(encodeResult(attachmentResult({ ...input, cniVersion: '1.0.0' })));
  assert.deepEqual(r1.interfaces, [{ name: 'caliabc', mac: 'ee:ee:ee:ee:ee:ee' }, { name: 'eth0', mac: '02:00:00:00:00:01', sandbox: '/run/netns/x' }]);
  assert.deepEqual(r1.ips, [{ address: '10.65.0.1/32', interface: 1 }, { address: 'fd00::1/128', interface: 1 }]);
  assert.deepEqual(r1.routes, [{ dst: '0.0.0.0/0', gw: '169.254.1.1' }, { dst: '::/0', gw: 'fe80::ecee:eeff:feee:eeee' }]);
  const r0 = JSON.parse(encodeResult(attachmentResult({ ...input, cniVersion: '0.3.1' })));
  assert.equal(r0.ips[0].version, '4');
  assert.equal(r0.ips[1].version, '6');
  const ri = JSON.parse(encodeResult(ipamResult('1.0.0', ['10.65.0.2/32'], [])));
  assert.deepEqual(ri, { cniVersion: '1.0.0', ips: [{ address: '10.65.0.2/32' }], dns: {} });
});

test('error JSON', () => {
  assert.deepEqual(JSON.parse(errorJson('1.0.0', new CniError(7, 'bad', 'why'))), { cniVersion: '1.0.0', code: 7, msg: 'bad', details: 'why' });
});
