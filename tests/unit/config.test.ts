import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { resolveConfig, datastoreLayer, formatConfig, parseDuration } from '../../src/config/resolve.ts';
import { PARAMS, ROLES, paramsFor } from '../../src/config/params.ts';
import { loadConfig } from '../../src/cli/options.ts';

test('config: each source in precedence order flag > env > file > datastore > default', () => {
  type Layers = { flags: Record<string, unknown>; env: Record<string, string>; file: Record<string, unknown>; datastore: Record<string, unknown> };
  const all: Layers = { flags: { interfacePrefix: 'flag' }, env: { FELIX_INTERFACEPREFIX: 'env' }, file: { interfacePrefix: 'file' }, datastore: { interfacePrefix: 'ds' } };
  const cases: Array<[Layers, string, string]> = [
    [all, 'flag', 'flag'],
    [{ ...all, flags: {} }, 'env', 'env'],
    [{ ...all, flags: {}, env: {} }, 'file', 'file'],
    [{ ...all, flags: {}, env: {}, file: {} }, 'ds', 'datastore'],
    [{ flags: {}, env: {}, file: {}, datastore: {} }, 'cali', 'default'],
  ];
  for (const [layers, value, source] of cases) {
    const cfg = resolveConfig('node', layers);
    assert.equal(cfg.values.interfacePrefix, value);
    assert.equal(cfg.sources.interfacePrefix, source);
  }
});

test('config: calico/node env names are honoured and coerced', () => {
  const cfg = resolveConfig('node', {
    env: { ETCD_ENDPOINTS: 'http://127.0.0.1:1,http://127.0.0.1:2', NODENAME: 'h1', IP: '10.0.0.1', AS: '65001', CALICO_NETWORKING_BACKEND: 'none', FELIX_HEALTHPORT: '9199' },
  });
  assert.deepEqual(cfg.values.etcdEndpoints, ['http://127.0.0.1:1', 'http://127.0.0.1:2']);
  assert.equal(cfg.values.nodename, 'h1');
  assert.equal(cfg.values.ip, '10.0.0.1');
  assert.equal(cfg.values.asNumber, 65001);
  assert.equal(cfg.values.networkingBackend, 'none');
  assert.equal(cfg.values.healthPort, 9199);
  assert.equal(cfg.sources.asNumber, 'env');
});

test('config: an empty env var does not override the lower layers', () => {
  const cfg = resolveConfig('node', { env: { FELIX_INTERFACEPREFIX: '' }, file: { interfacePrefix: 'tap' } });
  assert.equal(cfg.values.interfacePrefix, 'tap');
  assert.equal(cfg.sources.interfacePrefix, 'file');
});

test('config: bad values name the parameter and the source', () => {
  assert.throws(() => resolveConfig('node', { env: { AS: 'sixty' } }), /asNumber from AS: expected an integer, got 'sixty'/);
  assert.throws(() => resolveConfig('node', { flags: { dataplane: 'ebpf' } }), /dataplane from --dataplane: 'ebpf' is not one of iptables, nftables/);
  assert.throws(() => resolveConfig('node', { file: { routeRefreshInterval: 'soon' } }), /routeRefreshInterval from config file key 'routeRefreshInterval': invalid duration 'soon'/);
  assert.throws(() => resolveConfig('node', { file: { noSuchThing: 1 } }), /unknown parameter 'noSuchThing'/);
  assert.throws(() => resolveConfig('node', { env: { ROUTECAT_BGP: 'maybe' } }), /expected true or false/);
});

test('config: a parameter is only taken by its roles', () => {
  assert.ok(!('dataplane' in resolveConfig('ctl', {}).values));
  assert.throws(() => resolveConfig('ctl', { file: { dataplane: 'nftables' } }), /unknown parameter 'dataplane' for role ctl/);
  for (const role of ['node', 'reflector', 'proxy', 'cni', 'ctl', 'status'] as const) {
    const names = paramsFor(role).map((p) => p.flag);
    for (const common of ['etcd-endpoints', 'run-dir', 'log-level', 'config']) assert.ok(names.includes(common), `${role} takes --${common}`);
  }
});

test('config: declarations are unique and well formed', () => {
  const seen = new Set<string>();
  for (const p of PARAMS) {
    for (const k of [`name:${p.name}`, `env:${p.env}`]) {
      if (k === 'env:undefined') continue;
      assert.ok(!seen.has(k), `duplicate ${k}`);
      seen.add(k);
    }
    assert.match(p.flag, /^[a-z][a-z0-9-]*$/, `flag ${p.flag} is kebab case`);
  }
  // A flag may mean different parameters in roles that never share it (--health-port: 9099 for
  // node and reflector, 9097 for the proxy on the same host), but never two in one role.
  for (const role of ROLES) {
    const flags = paramsFor(role).map((p) => p.flag);
    assert.equal(new Set(flags).size, flags.length, `duplicate flag in role ${role}: ${flags.filter((f, i) => flags.indexOf(f) !== i).join(', ')}`);
  }
});

test('config: datastore layer reads FelixConfiguration and BGPConfiguration fields', () => {
  const ds = datastoreLayer('node', { interfacePrefix: 'tap', routeRefreshInterval: '30s', logSeverityScreen: 'Warning' }, { listenPort: 1179 });
  assert.deepEqual(ds, { logLevel: 'Warning', interfacePrefix: 'tap', routeRefreshInterval: '30s', bgpListenPort: 1179 });
  const cfg = resolveConfig('node', { datastore: ds, env: { FELIX_INTERFACEPREFIX: 'veth' } });
  assert.equal(cfg.values.interfacePrefix, 'veth');
  assert.equal(cfg.values.logLevel, 'warn');
  assert.equal(cfg.sources.logLevel, 'datastore');
  assert.equal(cfg.values.bgpListenPort, 1179);
});

test('config: --print-config redacts secrets and shows sources', () => {
  const cfg = resolveConfig('ctl', { env: { ETCD_PASSWORD: 'hunter2', ETCD_USERNAME: 'root' } });
  const text = formatConfig(cfg);
  assert.ok(!text.includes('hunter2'));
  assert.match(text, /etcdPassword\s+<redacted>\s+\[env\]/);
  assert.match(text, /etcdUsername\s+root\s+\[env\]/);
  assert.match(text, /runDir\s+\/var\/run\/routecat\s+\[default\]/);
});

test('config: durations', () => {
  assert.equal(parseDuration('90s'), 90_000);
  assert.equal(parseDuration('1m30s'), 90_000);
  assert.equal(parseDuration('250ms'), 250);
  assert.equal(parseDuration('2h'), 7_200_000);
  assert.equal(parseDuration('5'), 5000);
  assert.throws(() => parseDuration('5 minutes'));
});

test('config: loadConfig reads the YAML file named by --config, below env', () => {
  const dir = mkdtempSync(join(tmpdir(), 'routecat-cfg-'));
  try {
    const file = join(dir, 'node.yaml');
    writeFileSync(file, 'interface-prefix: tap\nhealthPort: 9300\netcdEndpoints: [http://127.0.0.1:4001]\n');
    const cfg = loadConfig('node', { config: file, healthPort: 9400 }, { FELIX_INTERFACEPREFIX: 'veth' });
    assert.equal(cfg.values.interfacePrefix, 'veth');
    assert.equal(cfg.values.healthPort, 9400);
    assert.equal(cfg.sources.healthPort, 'flag');
    assert.deepEqual(cfg.values.etcdEndpoints, ['http://127.0.0.1:4001']);
    assert.equal(cfg.sources.etcdEndpoints, 'file');
    writeFileSync(file, '- not\n- a mapping\n');
    assert.throws(() => loadConfig('node', { config: file }, {}), /expected a mapping/);
    assert.throws(() => loadConfig('node', { config: join(dir, 'missing.yaml') }, {}), /cannot read config file/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
