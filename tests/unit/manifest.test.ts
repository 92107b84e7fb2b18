import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseManifest, describeOrigin } from '../../src/cli/manifest.ts';
import { formatResources, formatTable } from '../../src/cli/output.ts';
import { lookupKind, KINDS } from '../../src/model/kinds.ts';

test('manifest: multi-document YAML keeps document indexes; empty documents are not counted', () => {
  const { docs, problems } = parseManifest('---\na: 1\n---\n---\nb: 2\n', 'f.yaml');
  assert.deepEqual(problems, []);
  assert.deepEqual(docs.map((d) => [d.index, d.doc]), [[1, { a: 1 }], [2, { b: 2 }]]);
});

test('manifest: JSON and List objects are expanded with item indexes', () => {
  const text = JSON.stringify({ apiVersion: 'projectcalico.org/v3', kind: 'IPPoolList', items: [{ kind: 'IPPool' }, { kind: 'IPPool', x: 1 }] });
  const { docs } = parseManifest(text, 'l.json');
  assert.equal(docs.length, 2);
  assert.equal(describeOrigin(docs[1]), 'l.json: document 1, item 2');
  const plain = parseManifest('kind: List\nitems: [{kind: Profile}]\n', 'p.yaml');
  assert.deepEqual(plain.docs[0].doc, { kind: 'Profile' });
});

test('manifest: a broken document is reported by index and the rest still parse', () => {
  const { docs, problems } = parseManifest('a: 1\n---\nb: [x\n---\nc: 3\n', 'm.yaml');
  assert.equal(problems.length, 1);
  assert.equal(problems[0].index, 2);
  assert.match(problems[0].message, /not valid YAML/);
  assert.deepEqual(docs.map((d) => d.index), [1, 3]);
  const dup = parseManifest('a: 1\na: 2\n', 'd.yaml');
  assert.equal(dup.problems.length, 1, 'duplicate keys are an error, not a silent overwrite');
  const badList = parseManifest('kind: IPPoolList\nitems: 3\n', 'b.yaml');
  assert.match(badList.problems[0].message, /items: expected a list/);
});

test('output: one resource prints as itself, several as a List; tables align', () => {
  const kind = lookupKind('ippool')!;
  const r = (name: string, cidr: string) => ({ apiVersion: 'projectcalico.org/v3', kind: 'IPPool', metadata: { name }, spec: { cidr, nodeSelector: 'all()' } });
  const one = JSON.parse(formatResources(kind, [r('a', '10.0.0.0/16')], 'json', true));
  assert.equal(one.kind, 'IPPool');
  const many = JSON.parse(formatResources(kind, [r('a', '10.0.0.0/16'), r('b', '10.1.0.0/16')], 'json', false));
  assert.equal(many.kind, 'IPPoolList');
  assert.equal(many.items.length, 2);
  const lines = formatTable(kind, [r('a', '10.0.0.0/16'), r('long-name', '10.1.0.0/16')], false).split('\n');
  assert.equal(lines[0].indexOf('CIDR'), lines[2].indexOf('10.1.0.0/16'));
});

test('kinds: every kind is reachable by kind, plural and aliases, and no alias is ambiguous', () => {
  const seen = new Map<string, string>();
  for (const k of KINDS) {
    for (const n of [k.kind.toLowerCase(), k.plural, ...k.aliases]) {
      assert.ok(!seen.has(n) || seen.get(n) === k.kind, `${n} names both ${seen.get(n)} and ${k.kind}`);
      seen.set(n, k.kind);
      assert.equal(lookupKind(n)?.kind, k.kind);
    }
  }
  assert.equal(lookupKind('GNP')?.kind, 'GlobalNetworkPolicy');
  assert.equal(lookupKind('nope'), undefined);
});
