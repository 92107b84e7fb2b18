/**
 * ResourceStore against a real etcd: Calico's key layout, put-if-absent create, CAS on
 * ModRevision (two writers, one wins), apply without a write when nothing changed, bad data skipped.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { connectEtcd, type Etcd3 } from '../../src/datastore/etcd.ts';
import { ResourceStore, type BadData } from '../../src/datastore/resource-store.ts';
import { lookupKind } from '../../src/model/kinds.ts';
import { validateResource } from '../../src/model/validate.ts';
import { ConflictError, AlreadyExistsError } from '../../src/errors.ts';
import { startEtcd, type EtcdServer } from '../helpers/etcd.ts';

let etcd: EtcdServer;
let client: Etcd3;
const bad: BadData[] = [];
let store: ResourceStore;

before(async () => {
  etcd = await startEtcd();
  client = connectEtcd({ endpoints: [etcd.endpoint] });
  store = new ResourceStore(client, { onBadData: (b) => bad.push(b) });
});
after(async () => {
  client?.close();
  await etcd?.cleanup();
});

const gns = (name: string, nets: string[]) =>
  validateResource({ apiVersion: 'projectcalico.org/v3', kind: 'GlobalNetworkSet', metadata: { name }, spec: { nets } });

test('store: create writes Calico key layout with uid and creationTimestamp, once', async () => {
  const created = await store.create(gns('web', ['192.0.2.0/24']));
  assert.match(created.metadata.uid ?? '', /^[0-9a-f-]{36}$/);
  assert.match(created.metadata.creationTimestamp ?? '', /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
  const raw = await client.get('/calico/resources/v3/projectcalico.org/globalnetworksets/web').string();
  assert.ok(raw);
  const stored = JSON.parse(raw);
  assert.equal(stored.metadata.resourceVersion, undefined, 'etcd owns the revision, it is not stored');
  assert.deepEqual(stored.spec.nets, ['192.0.2.0/24']);
  await assert.rejects(store.create(gns('web', ['198.51.100.0/24'])), AlreadyExistsError);
  const np = validateResource({ apiVersion: 'projectcalico.org/v3', kind: 'NetworkPolicy', metadata: { name: 'p', namespace: 'tenant-a' }, spec: { selector: 'all()' } });
  await store.create(np);
  assert.ok(await client.get('/calico/resources/v3/projectcalico.org/networkpolicies/tenant-a/p').string(), 'namespaced key carries the namespace');
});

test('store: two writers with the same resourceVersion: one wins, the other gets a conflict', async () => {
  const kind = lookupKind('gns')!;
  const a = await store.get(kind, 'web');
  const b = await store.get(kind, 'web');
  const results = await Promise.allSettled([
    store.update({ ...a, spec: { nets: ['10.1.0.0/16'] } }),
    store.update({ ...b, spec: { nets: ['10.2.0.0/16'] } }),
  ]);
  const won = results.filter((r) => r.status === 'fulfilled');
  const lost = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
  assert.equal(won.length, 1);
  assert.equal(lost.length, 1);
  assert.ok(lost[0]!.reason instanceof ConflictError);
  assert.match(lost[0]!.reason.message, /GlobalNetworkSet 'web' update conflict/);
  const now = await store.get(kind, 'web');
  const winner = (won[0] as PromiseFulfilledResult<{ spec?: { nets?: string[] } }>).value;
  assert.deepEqual(now.spec, winner.spec);
  // a delete with the stale version also loses
  await assert.rejects(store.delete(kind, 'web', undefined, a.metadata.resourceVersion), ConflictError);
  assert.ok(await store.get(kind, 'web'));
});

test('store: apply is a no-op (no new revision) when nothing changed', async () => {
  const r = gns('apply-me', ['203.0.113.0/24']);
  const first = await store.apply(r);
  assert.equal(first.action, 'created');
  const second = await store.apply(r);
  assert.equal(second.action, 'unchanged');
  assert.equal(second.resource.metadata.resourceVersion, first.resource.metadata.resourceVersion);
  const third = await store.apply(gns('apply-me', ['203.0.113.0/25']));
  assert.equal(third.action, 'updated');
  assert.equal(third.resource.metadata.uid, first.resource.metadata.uid, 'uid survives updates');
});

test('store: undecodable values are reported with their key and skipped by list', async () => {
  await client.put('/calico/resources/v3/projectcalico.org/globalnetworksets/zz-garbage').value('{not json');
  const all = await store.list(lookupKind('gns')!);
  assert.ok(all.every((r) => r.metadata.name !== 'zz-garbage'));
  assert.ok(all.some((r) => r.metadata.name === 'apply-me'));
  assert.equal(bad.length, 1);
  assert.equal(bad[0]!.key, '/calico/resources/v3/projectcalico.org/globalnetworksets/zz-garbage');
  assert.match(bad[0]!.reason, /not JSON/);
});
