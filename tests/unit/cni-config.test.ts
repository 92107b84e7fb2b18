import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseEnv, parseNetConf, parseCniArgs, decodeJson } from '../../src/cni/config.ts';
import { CniError } from '../../src/cni/errors.ts';

const base = { cniVersion: '1.0.0', name: 'net1', type: 'routecat' };

function codeOf(fn: () => unknown): { code: number; msg: string } {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof CniError, `expected CniError, got ${String(err)}`);
    return { code: err.cniCode, msg: err.message };
  }
  assert.fail('expected an error');
}

test('defaults: Calico field names and defaults', () => {
  const c = parseNetConf({ ...base }, { env: {}, hostname: 'h1' });
  assert.equal(c.nodename, 'h1');
  assert.equal(c.mtu, 1500);
  assert.deepEqual(c.etcd.endpoints, ['http://127.0.0.1:2379']);
  assert.equal(c.ipam.assignIpv4, true);
  assert.equal(c.ipam.assignIpv6, false);
  assert.equal(c.policySetupTimeoutSeconds, 10);
  assert.equal(c.profiles, undefined);
});

test('Calico fields are read', () => {
  const c = parseNetConf(
    {
      ...base,
      etcd_endpoints: 'http://10.0.0.1:2379, http://10.0.0.2:2379',
      nodename: 'node-a',
      mtu: 1440,
      log_level: 'debug',
      policy_setup_timeout_seconds: 0,
      ipam: { type: 'routecat-ipam', assign_ipv4: 'false', assign_ipv6: 'true', ipv6_pools: ['fd00::/48'] },
      profiles: ['p1'],
      labels: { app: 'x' },
    },
    { env: { NODENAME: 'ignored' } },
  );
  assert.deepEqual(c.etcd.endpoints, ['http://10.0.0.1:2379', 'http://10.0.0.2:2379']);
  assert.equal(c.nodename, 'node-a');
  assert.equal(c.mtu, 1440);
  assert.equal(c.logLevel, 'debug');
  assert.equal(c.policySetupTimeoutSeconds, 0);
  assert.equal(c.ipam.assignIpv4, false);
  assert.equal(c.ipam.assignIpv6, true);
  assert.deepEqual(c.ipam.pools6, ['fd00::/48']);
  assert.deepEqual(c.profiles, ['p1']);
  assert.deepEqual(c.labels, { app: 'x' });
});

test('NODENAME env is the nodename default', () => {
  assert.equal(parseNetConf({ ...base }, { env: { NODENAME: 'from-env' }, hostname: 'h' }).nodename, 'from-env');
});

const BAD: [unknown, string][] = [
  [{ mtu: 'big' }, 'mtu'],
  [{ mtu: 20 }, 'mtu'],
  [{ ipam: { assign_ipv4: 'yes' } }, 'ipam.assign_ipv4'],
  [{ ipam: { assign_ipv6: 1 } }, 'ipam.assign_ipv6'],
  [{ ipam: { ipv4_pools: '10.0.0.0/16' } }, 'ipam.ipv4_pools'],
  [{ ipam: { assign_ipv4: false } }, 'ipam.assign_ipv4'],
  [{ etcd_endpoints: 42 }, 'etcd_endpoints'],
  [{ etcd_endpoints: 'not a url' }, 'etcd_endpoints'],
  [{ etcd_cert_file: '/c.pem' }, 'etcd_key_file'],
  [{ log_level: 'loud' }, 'log_level'],
  [{ policy_setup_timeout_seconds: -1 }, 'policy_setup_timeout_seconds'],
  [{ labels: { a: 1 } }, 'labels'],
  [{ profiles: [''] }, 'profiles'],
  [{ name: '' }, 'name'],
  [{ name: 'bad name' }, 'name'],
  [{ datastore_type: 'kubernetes' }, 'datastore_type'],
  [{ 'cni.dev/valid-attachments': [{ containerID: 1 }] }, 'cni.dev/valid-attachments[0]'],
];
for (const [patch, field] of BAD) {
  test(`invalid config names the field: ${field} ${JSON.stringify(patch)}`, () => {
    const { code, msg } = codeOf(() => parseNetConf({ ...base, ...(patch as object) }, { env: {}, hostname: 'h' }));
    assert.equal(code, 7);
    assert.match(msg, new RegExp(`field ${field.replace(/[[\].]/g, '\\$&')}`));
  });
}

test('unsupported cniVersion is code 1', () => {
  assert.equal(codeOf(() => parseNetConf({ ...base, cniVersion: '0.2.0' })).code, 1);
});

test('undecodable stdin is code 6', () => {
  assert.equal(codeOf(() => decodeJson('{nope')).code, 6);
  assert.equal(codeOf(() => decodeJson('[1]')).code, 6);
});

test('environment: required variables per command, code 4', () => {
  const ok = { CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'abc', CNI_IFNAME: 'eth0', CNI_NETNS: '/run/netns/x', CNI_PATH: '/opt/cni/bin:/usr/lib/cni' };
  const e = parseEnv(ok);
  assert.equal(e.command, 'ADD');
  assert.deepEqual(e.path, ['/opt/cni/bin', '/usr/lib/cni']);
  assert.equal(parseEnv({ ...ok, CNI_NETNS: undefined, CNI_COMMAND: 'DEL' }).netns, '');
  for (const bad of [
    { ...ok, CNI_COMMAND: 'FROB' },
    { ...ok, CNI_CONTAINERID: '' },
    { ...ok, CNI_CONTAINERID: '-x' },
    { ...ok, CNI_IFNAME: 'this-name-is-too-long' },
    { ...ok, CNI_IFNAME: 'a/b' },
    { ...ok, CNI_NETNS: '' },
    { ...ok, CNI_ARGS: 'novalue' },
  ]) {
    assert.equal(codeOf(() => parseEnv(bad)).code, 4, JSON.stringify(bad));
  }
  assert.equal(parseEnv({ CNI_COMMAND: 'VERSION' }).command, 'VERSION');
  assert.equal(parseEnv({ CNI_COMMAND: 'GC' }).command, 'GC');
});

test('CNI_ARGS', () => {
  assert.deepEqual(parseCniArgs('IgnoreUnknown=1;K8S_POD_NAMESPACE=ns1;K8S_POD_NAME=web-0'), { IgnoreUnknown: '1', K8S_POD_NAMESPACE: 'ns1', K8S_POD_NAME: 'web-0' });
  assert.deepEqual(parseCniArgs(''), {});
});
