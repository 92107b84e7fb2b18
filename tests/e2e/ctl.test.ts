/**
 * `routecat ctl` against a real etcd: apply / create / replace / delete / get / validate,
 * error reporting, and the round trip apply -> get -o yaml -> apply being a no-op.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync, rmSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { main } from '../../src/cli/main.ts';
import { startEtcd, type EtcdServer } from '../helpers/etcd.ts';

let etcd: EtcdServer;
let dir: string;

interface Run {
  code: number;
  out: string;
  err: string;
}

async function ctl(args: string[], stdin = ''): Promise<Run> {
  let out = '';
  let err = '';
  const code = await main(['routecat', 'ctl', ...args], { ETCD_ENDPOINTS: etcd.endpoint }, {
    out: (t) => (out += `${t}\n`),
    err: (t) => (err += `${t}\n`),
    readStdin: async () => stdin,
  });
  return { code, out, err };
}

function file(name: string, text: string): string {
  const p = join(dir, name);
  writeFileSync(p, text);
  return p;
}

before(async () => {
  etcd = await startEtcd();
  dir = mkdtempSync(join(tmpdir(), 'routecat-ctl-'));
});

after(async () => {
  await etcd?.cleanup();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const examples = readdirSync('examples').filter((f) => f.endsWith('.yaml')).map((f) => join('examples', f));

test('ctl: apply the examples, then get them back in every format', async () => {
  for (const f of examples) {
    const r = await ctl(['apply', '-f', f]);
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /Successfully applied \d+ resource\(s\)/);
  }
  const table = await ctl(['get', 'ippools']);
  assert.equal(table.code, 0, table.err);
  assert.match(table.out, /^NAME\s+CIDR\s+SELECTOR/m);
  assert.match(table.out, /default-ipv4-ippool\s+10\.65\.0\.0\/16\s+all\(\)/);
  const wide = await ctl(['get', 'ippool', '-o', 'wide']);
  assert.match(wide.out, /NAT\s+BLOCKSIZE/);
  const gnp = await ctl(['get', 'gnp', 'security.blue-to-red-web', '-o', 'json']);
  assert.equal(gnp.code, 0, gnp.err);
  const one = JSON.parse(gnp.out);
  assert.equal(one.kind, 'GlobalNetworkPolicy');
  assert.equal(one.metadata.name, 'security.blue-to-red-web');
  assert.match(one.metadata.resourceVersion, /^\d+$/);
  assert.match(one.metadata.uid, /^[0-9a-f-]{36}$/);
  const list = JSON.parse((await ctl(['get', 'profiles', '-o', 'json'])).out);
  assert.equal(list.kind, 'ProfileList');
  assert.deepEqual(list.items.map((p: { metadata: { name: string } }) => p.metadata.name), ['tenant-blue', 'tenant-red']);
});

test('ctl: apply -> get -o yaml -> apply is a no-op', async () => {
  const kinds = ['ippools', 'profiles', 'tiers', 'globalnetworkpolicies', 'globalnetworksets', 'bgpconfigurations', 'bgppeers'];
  for (const kind of kinds) {
    const first = await ctl(['get', kind, '-o', 'yaml']);
    assert.equal(first.code, 0, first.err);
    const again = await ctl(['apply', '-f', '-'], first.out);
    assert.equal(again.code, 0, again.err);
    const second = await ctl(['get', kind, '-o', 'yaml']);
    assert.equal(second.out, first.out, `${kind} changed after re-applying its own output`);
  }
});

test('ctl: a rejected document is named and written nowhere; the others go in', async () => {
  const f = file('mixed.yaml', [
    'apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata: {name: good-one}\nspec: {nets: [192.0.2.0/24]}',
    'apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: bad-pool}\nspec: {cidr: 10.0.0.0/33}',
    'apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata: {name: good-two}\nspec: {nets: [198.51.100.0/24]}',
  ].join('\n---\n'));
  const r = await ctl(['apply', '-f', f]);
  assert.equal(r.code, 1);
  assert.match(r.err, /mixed\.yaml: document 2: IPPool 'bad-pool': field spec\.cidr: .*10\.0\.0\.0\/33/);
  assert.match(r.out, /Successfully applied 2 resource\(s\)/);
  const pools = await ctl(['get', 'ippool', 'bad-pool']);
  assert.equal(pools.code, 1);
  assert.match(pools.err, /bad-pool/);
  assert.equal((await ctl(['get', 'gns', 'good-two'])).code, 0);
});

test('ctl: create refuses existing names, replace refuses missing ones, both say which', async () => {
  const f = file('set.yaml', 'apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata: {name: created-once}\nspec: {nets: [203.0.113.0/24]}\n');
  assert.equal((await ctl(['create', '-f', f])).code, 0);
  const dup = await ctl(['create', '-f', f]);
  assert.equal(dup.code, 1);
  assert.match(dup.err, /GlobalNetworkSet 'created-once' already exists/);
  const missing = file('missing.yaml', 'apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata: {name: never-made}\nspec: {nets: [203.0.113.0/24]}\n');
  const rep = await ctl(['replace', '-f', missing]);
  assert.equal(rep.code, 1);
  assert.match(rep.err, /never-made/);
  const changed = file('set2.yaml', 'apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata: {name: created-once}\nspec: {nets: [203.0.113.128/25]}\n');
  assert.equal((await ctl(['replace', '-f', changed])).code, 0);
  const got = JSON.parse((await ctl(['get', 'globalnetworkset', 'created-once', '-o', 'json'])).out);
  assert.deepEqual(got.spec.nets, ['203.0.113.128/25']);
});

test('ctl: a stale resourceVersion is a conflict', async () => {
  const got = JSON.parse((await ctl(['get', 'gns', 'good-one', '-o', 'json'])).out);
  const stale = structuredClone(got);
  got.spec.nets = ['192.0.2.0/25'];
  assert.equal((await ctl(['apply', '-f', '-'], JSON.stringify(got))).code, 0);
  stale.spec.nets = ['192.0.2.128/25'];
  const r = await ctl(['replace', '-f', '-'], JSON.stringify(stale));
  assert.equal(r.code, 1);
  assert.match(r.err, /conflict/i);
});

test('ctl: namespaced kinds honour -n and -A', async () => {
  const np = (ns: string) => `apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: allow-web, namespace: ${ns}}\nspec:\n  selector: app == 'web'\n  ingress: [{action: Allow, protocol: TCP, destination: {ports: [80]}}]\n`;
  assert.equal((await ctl(['apply', '-f', file('np.yaml', `${np('prod')}---\n${np('dev')}`)])).code, 0);
  const prod = await ctl(['get', 'networkpolicy', '-n', 'prod']);
  assert.match(prod.out, /prod\s+allow-web/);
  assert.doesNotMatch(prod.out, /dev/);
  const all = await ctl(['get', 'np', '-A']);
  assert.match(all.out, /dev\s+allow-web/);
  assert.match(all.out, /prod\s+allow-web/);
  assert.equal((await ctl(['get', 'np'])).out.trim().split('\n').length, 1, 'default namespace has none');
  const del = await ctl(['delete', 'networkpolicy', 'allow-web', '-n', 'dev']);
  assert.equal(del.code, 0, del.err);
  assert.doesNotMatch((await ctl(['get', 'np', '-A'])).out, /dev/);
});

test('ctl: delete -f removes what a file names; validate writes nothing', async () => {
  const f = file('tmp.yaml', 'apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata: {name: short-lived}\nspec: {nets: [10.9.0.0/16]}\n');
  assert.equal((await ctl(['validate', '-f', f])).code, 0);
  assert.equal((await ctl(['get', 'gns', 'short-lived'])).code, 1, 'validate wrote nothing');
  assert.equal((await ctl(['apply', '-f', f])).code, 0);
  assert.equal((await ctl(['delete', '-f', f])).code, 0);
  assert.equal((await ctl(['get', 'gns', 'short-lived'])).code, 1);
  const bad = await ctl(['validate', '-f', file('bad.yaml', 'apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: p}\nspec: {selector: "a =="}\n')]);
  assert.equal(bad.code, 1);
  assert.match(bad.err, /document 1: GlobalNetworkPolicy 'p': field spec\.selector/);
});

test('ctl: usage errors exit 2 and name the problem', async () => {
  const r = await ctl(['get', 'frobs']);
  assert.equal(r.code, 2);
  assert.match(r.err, /unknown resource kind 'frobs'/);
  const o = await ctl(['get', 'ippools', '-o', 'xml']);
  assert.equal(o.code, 2);
  assert.match(o.err, /-o xml/);
  const y = await ctl(['apply', '-f', file('broken.yaml', 'kind: [unclosed\n')]);
  assert.equal(y.code, 1);
  assert.match(y.err, /broken\.yaml: document 1: not valid YAML/);
});
