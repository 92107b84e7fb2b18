/**
 * The watcher syncer against a real etcd that is killed, restarted and compacted while writes
 * continue: afterwards the syncer's view must equal etcd's, and InSync is never reported before
 * a complete list.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { connectEtcd, type Etcd3 } from '../../src/datastore/etcd.ts';
import { WatcherSyncer, type SyncStatus, type SyncUpdate } from '../../src/datastore/syncer.ts';
import { startEtcd, type EtcdServer } from '../helpers/etcd.ts';

const PREFIX = '/calico/resources/v3/projectcalico.org/';
let etcd: EtcdServer;
let writer: Etcd3;
let reader: Etcd3;

before(async () => {
  etcd = await startEtcd();
  writer = connectEtcd({ endpoints: [etcd.endpoint], timeoutMs: 2_000 });
  reader = connectEtcd({ endpoints: [etcd.endpoint], timeoutMs: 2_000 });
});
after(async () => {
  writer?.close();
  reader?.close();
  await etcd?.cleanup();
});

async function waitFor(what: string, cond: () => boolean | Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await cond()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
}

async function etcdView(): Promise<Map<string, string>> {
  const kvs = await writer.getAll().prefix(PREFIX).strings();
  return new Map(Object.entries(kvs));
}

/** Applies updates to a map the way a consumer would, so we check the stream, not the cache. */
function consumer() {
  const view = new Map<string, string>();
  const statuses: SyncStatus[] = [];
  let sawUpdatesBeforeInSync = 0;
  const handlers = {
    onUpdates(us: readonly SyncUpdate[]) {
      for (const u of us) {
        if (u.value === null) view.delete(u.key);
        else view.set(u.key, u.value);
      }
      if (!statuses.includes('InSync')) sawUpdatesBeforeInSync += us.length;
    },
    onStatus(s: SyncStatus) {
      statuses.push(s);
    },
  };
  return { view, statuses, handlers, get preSync() { return sawUpdatesBeforeInSync; } };
}

test('syncer: lists, reports InSync only after the full list, then follows the watch', async () => {
  for (let i = 0; i < 50; i++) await writer.put(`${PREFIX}ippools/pool-${i}`).value(`{"n":${i}}`);
  await writer.put('/calico/other/not-ours').value('x');
  const c = consumer();
  const s = new WatcherSyncer(reader, PREFIX, c.handlers);
  s.start();
  try {
    await waitFor('InSync', () => s.status === 'InSync');
    assert.deepEqual(c.statuses, ['ResyncInProgress', 'InSync']);
    assert.equal(c.preSync, 50, 'the whole list is delivered before InSync');
    assert.equal(c.view.size, 50);
    await writer.put(`${PREFIX}ippools/pool-0`).value('{"n":"changed"}');
    await writer.delete().key(`${PREFIX}ippools/pool-1`);
    await writer.put(`${PREFIX}profiles/new`).value('{}');
    await waitFor('watch events', async () => JSON.stringify([...c.view].sort()) === JSON.stringify([...(await etcdView())].sort()));
    assert.equal(c.view.get(`${PREFIX}ippools/pool-0`), '{"n":"changed"}');
    assert.ok(!c.view.has('/calico/other/not-ours'));
  } finally {
    await s.stop();
  }
});

test('syncer: etcd killed and restarted while writes continue; a compaction meanwhile loses nothing', async () => {
  const c = consumer();
  const s = new WatcherSyncer(reader, PREFIX, c.handlers, { retryMs: 100, maxRetryMs: 500 });
  s.start();
  let writing = true;
  let n = 0;
  const writes = (async () => {
    while (writing) {
      const i = n++;
      try {
        await writer.put(`${PREFIX}globalnetworksets/w-${i % 40}`).value(`{"i":${i}}`);
        if (i % 7 === 0) await writer.delete().key(`${PREFIX}globalnetworksets/w-${(i + 3) % 40}`);
      } catch {
        // etcd is down: keep trying
      }
      await new Promise((r) => setTimeout(r, 5));
    }
  })();
  try {
    await waitFor('first InSync', () => s.status === 'InSync');
    await new Promise((r) => setTimeout(r, 300));
    await etcd.kill();
    await new Promise((r) => setTimeout(r, 500));
    await etcd.restart();
    await new Promise((r) => setTimeout(r, 500));

    // Compaction while the syncer is watching: stop its watch from seeing deletes, by deleting
    // keys and compacting past them quickly, then make sure those keys vanish from the view.
    const before = s.resyncCount;
    await writer.delete().key(`${PREFIX}ippools/pool-2`);
    const rev = (await writer.get('x').exec()).header.revision;
    await etcd.etcdctl('compact', rev);
    await new Promise((r) => setTimeout(r, 500));
    writing = false;
    await writes;
    await waitFor('view equals etcd', async () => {
      const want = await etcdView();
      return s.status === 'InSync' && JSON.stringify([...c.view].sort()) === JSON.stringify([...want].sort());
    });
    assert.ok(s.resyncCount > 1, 'the syncer re-listed after the restart');
    assert.ok(s.resyncCount >= before, 'resync count never goes backwards');
    assert.ok(!c.view.has(`${PREFIX}ippools/pool-2`));
    assert.deepEqual([...s.snapshot()].sort(), [...(await etcdView())].sort());
    assert.ok(c.statuses.includes('ResyncInProgress'));
  } finally {
    writing = false;
    await writes;
    await s.stop();
  }
});

test('syncer: a re-list emits synthetic deletes for keys that vanished while it was not watching', async () => {
  const c = consumer();
  const s = new WatcherSyncer(reader, PREFIX, c.handlers, { retryMs: 100, maxRetryMs: 500 });
  s.start();
  try {
    await waitFor('InSync', () => s.status === 'InSync');
    const victim = `${PREFIX}ippools/pool-3`;
    assert.ok(c.view.has(victim));
    await etcd.kill();
    // While etcd is down nothing can be deleted; instead wipe the key offline: restart, delete
    // and compact before the syncer's watch can come back, so the only way to learn is a re-list.
    await etcd.restart();
    await writer.delete().key(victim);
    await waitFor('victim gone', () => !c.view.has(victim));
    await waitFor('InSync again', () => s.status === 'InSync');
    assert.deepEqual([...c.view].sort(), [...(await etcdView())].sort());
  } finally {
    await s.stop();
  }
});

test('syncer: a watch whose start revision was compacted re-lists and emits a synthetic delete', async () => {
  const c = consumer();
  const victim = `${PREFIX}ippools/pool-4`;
  let armed = true;
  const s = new WatcherSyncer(reader, PREFIX, c.handlers, {
    retryMs: 100,
    // Between the first list and its watch: delete a key and compact past the deletion, so the
    // watch from list-revision+1 is refused as compacted and the delete is never seen as an event.
    beforeWatch: async () => {
      if (!armed) return;
      armed = false;
      await writer.delete().key(victim);
      await writer.put(`${PREFIX}ippools/after-compaction`).value('{}');
      const rev = (await writer.get('x').exec()).header.revision;
      await etcd.etcdctl('compact', rev);
    },
  });
  s.start();
  try {
    await waitFor('re-list after compaction', () => s.resyncCount >= 2 && s.status === 'InSync');
    await waitFor('view equals etcd', async () => JSON.stringify([...c.view].sort()) === JSON.stringify([...(await etcdView())].sort()));
    assert.ok(!c.view.has(victim), 'synthetic delete for the compacted-away key');
    assert.ok(c.view.has(`${PREFIX}ippools/after-compaction`));
  } finally {
    await s.stop();
  }
});
