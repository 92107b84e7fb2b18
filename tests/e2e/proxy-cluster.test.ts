/**
 * `routecat proxy` in front of a real three-member etcd cluster on loopback: the member the proxy
 * uses is killed while writes and watches run, and every watcher (one served by the cache, one
 * forwarded) still sees every event exactly once, in order; then the whole cluster goes down, the
 * cache keeps answering and the open watch stays open, and everything catches up when the
 * cluster is back.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startEtcdCluster, type EtcdCluster } from '../helpers/etcd-cluster.ts';
import { freePort } from '../helpers/etcd.ts';
import { RawEtcd, type RawWatchStream } from '../helpers/proxy-raw-etcd.ts';
import { waitUntil } from '../helpers/wait.ts';
import { startProxy, type RunningProxy } from '../../src/proxy/server.ts';
import { Upstream } from '../../src/proxy/upstream.ts';

let cluster: EtcdCluster;
let upstream: Upstream;
let proxy: RunningProxy;
let viaProxy: RawEtcd;
const clients: RawEtcd[] = [];

const b = (s: string) => Buffer.from(s);

/** Creates `key` once: a retried put after a lost answer cannot make a second event. */
async function createOnce(client: RawEtcd, key: string, value: string): Promise<void> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    const a = await client.call('KV', 'Txn', {
      compare: [{ key: b(key), target: 'CREATE', result: 'EQUAL', create_revision: '0' }],
      success: [{ request_put: { key: b(key), value: b(value) } }],
    }, 3_000);
    if (a.ok) return;
    if (Date.now() > deadline) throw new Error(`put ${key} kept failing: ${a.code} ${a.details}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function eventKeys(w: RawWatchStream): string[] {
  return w.responses.flatMap((r) => (r.events ?? []).map((e: { kv: { key: Buffer } }) => e.kv.key.toString()));
}

function eventRevisions(w: RawWatchStream): number[] {
  return w.responses.flatMap((r) => (r.events ?? []).map((e: { kv: { mod_revision: string } }) => Number(e.kv.mod_revision)));
}

before(async () => {
  cluster = await startEtcdCluster(3);
  upstream = new Upstream({ endpoints: [...cluster.endpoints] });
  const port = await freePort();
  proxy = await startProxy({ listen: `127.0.0.1:${port}`, cachePrefixes: ['/calico/'], upstream });
  await proxy.synced();
  viaProxy = new RawEtcd(`127.0.0.1:${port}`);
  clients.push(viaProxy);
});

after(async () => {
  for (const c of clients) c.close();
  await proxy?.stop();
  upstream?.close();
  await cluster?.cleanup();
});

test('proxy on a 3-member cluster: the member in use dies mid-stream; nothing lost, nothing duplicated', { timeout: 120_000 }, async () => {
  const N = 150;
  const [m1, , m3] = cluster.members;
  assert.equal(upstream.target, m1!.endpoint.replace('http://', ''), 'the proxy starts on the first member');
  const writer = new RawEtcd(m3!.endpoint);
  clients.push(writer);

  const local = viaProxy.watch();
  local.create({ key: b('/calico/seq/'), range_end: b('/calico/seq0'), prev_kv: true });
  const forwarded = viaProxy.watch();
  forwarded.create({ key: b('/other/seq/'), range_end: b('/other/seq0') });
  assert.ok(await local.until(() => local.responses.some((r) => r.created), 10_000), 'local watch created');
  assert.ok(await forwarded.until(() => forwarded.responses.some((r) => r.created), 10_000), 'forwarded watch created');
  assert.equal(proxy.stats.forwardedOpen, 1);

  const resumesBefore = proxy.feeds[0]!.resumes;
  const resyncsBefore = proxy.feeds[0]!.resyncs;
  const pad = (i: number) => String(i).padStart(4, '0');
  for (let i = 0; i < N; i++) {
    if (i === 50) await m1!.kill();
    await createOnce(writer, `/calico/seq/${pad(i)}`, `v${i}`);
    await createOnce(writer, `/other/seq/${pad(i)}`, `v${i}`);
  }
  const expected = Array.from({ length: N }, (_, i) => pad(i));
  assert.ok(await local.until(() => eventKeys(local).length >= N, 30_000), `local watch got ${eventKeys(local).length} of ${N} events`);
  assert.ok(await forwarded.until(() => eventKeys(forwarded).length >= N, 30_000), `forwarded watch got ${eventKeys(forwarded).length} of ${N} events`);
  await new Promise((r) => setTimeout(r, 300)); // a duplicate would arrive now
  assert.deepEqual(eventKeys(local), expected.map((k) => `/calico/seq/${k}`), 'the cached watch: every event once, in order');
  assert.deepEqual(eventKeys(forwarded), expected.map((k) => `/other/seq/${k}`), 'the forwarded watch: every event once, in order');
  const revs = eventRevisions(local);
  assert.ok(revs.every((r, i) => i === 0 || r > revs[i - 1]!), 'revisions increase');
  assert.ok(local.responses.every((r) => !r.canceled) && forwarded.responses.every((r) => !r.canceled), 'no watch was cancelled');
  assert.equal(local.responses.filter((r) => r.created).length, 1, 'the client saw one "created", not a second after the failover');
  assert.equal(forwarded.responses.filter((r) => r.created).length, 1);

  assert.notEqual(upstream.target, m1!.endpoint.replace('http://', ''), 'the proxy moved off the dead member');
  assert.ok(upstream.failovers >= 1);
  assert.ok(proxy.feeds[0]!.resumes > resumesBefore, 'the cache feed resumed its watch');
  assert.equal(proxy.feeds[0]!.resyncs, resyncsBefore, 'and did not need to list again');

  // A linearizable read through the proxy sees every write.
  const got = await viaProxy.must('KV', 'Range', { key: b('/calico/seq/'), range_end: b('/calico/seq0'), count_only: true });
  assert.equal(got.count, String(N));
  local.close();
  forwarded.close();
  await m1!.restart();
});

test('proxy with every member down: the cache answers, open watches stay open, all catches up after', { timeout: 120_000 }, async () => {
  const w = viaProxy.watch();
  w.create({ key: b('/calico/down/'), range_end: b('/calico/down0') });
  assert.ok(await w.until(() => w.responses.some((r) => r.created), 10_000));
  await createOnce(viaProxy, '/calico/down/before', 'x');
  assert.ok(await w.until(() => eventKeys(w).length === 1, 10_000));

  await Promise.all(cluster.members.map((m) => m.kill()));
  await waitUntil('the feed noticing', () => proxy.feeds[0]!.status !== 'InSync', 15_000);
  const cached = await viaProxy.must('KV', 'Range', { key: b('/calico/'), range_end: b('/calico0'), serializable: true, count_only: true });
  assert.ok(Number(cached.count) >= 151, `serializable reads answered from the cache while etcd is down (count ${cached.count})`);
  const put = await viaProxy.call('KV', 'Put', { key: b('/calico/down/lost'), value: b('x') }, 3_000);
  assert.equal(put.ok, false, 'a write cannot succeed with no cluster');

  await Promise.all(cluster.members.map((m) => m.restart()));
  await waitUntil('the feed back in sync', () => proxy.feeds[0]!.status === 'InSync', 30_000);
  const writer = new RawEtcd(cluster.members[1]!.endpoint);
  clients.push(writer);
  await createOnce(writer, '/calico/down/after', 'y');
  assert.ok(await w.until(() => eventKeys(w).length === 2, 15_000), `the watch opened before the outage got ${eventKeys(w).length - 1} events after it`);
  assert.deepEqual(eventKeys(w), ['/calico/down/before', '/calico/down/after']);
  assert.ok(w.responses.every((r) => !r.canceled));
  w.close();
});
