/**
 * `routecat proxy` in front of a real etcd: stock etcdctl (API v3) and `routecat ctl` through the
 * proxy give the same answers as etcd itself; serializable reads under /calico/ come from the
 * cache, watches on /calico/ share the cache's upstream watch, old or foreign watches are forwarded.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { main } from '../../src/cli/main.ts';
import { startEtcd, freePort, run, type EtcdServer } from '../helpers/etcd.ts';
import { waitFor, waitUntil } from '../helpers/wait.ts';
import { startProxy, type RunningProxy } from '../../src/proxy/server.ts';
import { Upstream } from '../../src/proxy/upstream.ts';
import * as grpc from '@grpc/grpc-js';
import * as http2 from 'node:http2';
import { RawEtcd } from '../helpers/proxy-raw-etcd.ts';
import { etcdMethod } from '../../src/proxy/etcd-proto.ts';

let etcd: EtcdServer;
let proxy: RunningProxy;
let upstream: Upstream;
let proxyEndpoint: string;
let dir: string;
const children = new Set<ChildProcess>();

const etcdctlAt = (endpoint: string, args: string[], stdin?: string): Promise<string> =>
  run('etcdctl', ['--endpoints', endpoint, ...args], { ...process.env, ETCDCTL_API: '3' }, 15_000, stdin);
const viaProxy = (...args: string[]) => etcdctlAt(proxyEndpoint, args);
const direct = (...args: string[]) => etcdctlAt(etcd.endpoint, args);

/** Waits until the cache has caught up with etcd's current revision. */
async function cacheCaughtUp(): Promise<void> {
  const rev = Number(JSON.parse(await direct('get', '/none', '-w', 'json')).header.revision);
  const deadline = Date.now() + 5_000;
  while (proxy.feeds[0]!.cache.revision < rev) {
    if (Date.now() > deadline) throw new Error(`cache at ${proxy.feeds[0]!.cache.revision}, etcd at ${rev}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Spawns `etcdctl watch ...` and collects its stdout. */
function watch(endpoint: string, args: string[]): { lines(): string; stop(): void } {
  const child = spawn('etcdctl', ['--endpoints', endpoint, 'watch', ...args], { env: { ...process.env, ETCDCTL_API: '3' }, stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  return {
    lines: () => out,
    stop: () => {
      child.kill('SIGKILL');
      children.delete(child);
    },
  };
}

/**
 * A Watch stream that creates one watcher and then reads nothing until resume(), as a stuck client
 * would. Plain HTTP/2 (grpc-js's client would keep reading into its own queue): the stream's
 * flow-control window fills and the proxy's writes back up.
 */
function stalledWatch(endpoint: string, create: object) {
  const session = http2.connect(`http://${endpoint}`);
  session.on('error', () => undefined);
  const m = etcdMethod('Watch', 'Watch');
  const req = session.request({ ':method': 'POST', ':path': m.path, 'content-type': 'application/grpc', te: 'trailers' });
  req.on('error', () => undefined);
  const msg = m.encodeRequest({ create_request: create });
  const frame = Buffer.alloc(5 + msg.length);
  frame.writeUInt32BE(msg.length, 1);
  msg.copy(frame, 5);
  req.write(frame);
  req.pause();
  const status = new Promise<{ code: number; details: string }>((resolve) => {
    const take = (h: http2.IncomingHttpHeaders) => {
      if (h['grpc-status'] !== undefined) resolve({ code: Number(h['grpc-status']), details: decodeURIComponent(String(h['grpc-message'] ?? '')) });
    };
    req.on('response', take);
    req.on('trailers', take);
  });
  return {
    /** Starts reading; resolves with the stream's final gRPC status. */
    resume(timeoutMs: number): Promise<{ code: number; details: string }> {
      req.on('data', () => undefined);
      req.resume();
      return Promise.race([status, new Promise<never>((_, reject) => setTimeout(() => reject(new Error('no final status from the proxy')), timeoutMs))]);
    },
    close() {
      req.close();
      session.close();
    },
  };
}

async function until(what: string, ok: () => boolean, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!ok()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

before(async () => {
  etcd = await startEtcd();
  dir = mkdtempSync(join(tmpdir(), 'routecat-proxy-'));
  await direct('put', '/calico/pre/a', 'one');
  await direct('put', '/other/x', 'outside');
  upstream = new Upstream({ endpoints: [etcd.endpoint] });
  const port = await freePort();
  proxyEndpoint = `127.0.0.1:${port}`;
  proxy = await startProxy({ listen: proxyEndpoint, cachePrefixes: ['/calico/'], upstream });
  await proxy.synced();
});

after(async () => {
  for (const c of children) c.kill('SIGKILL');
  await proxy?.stop();
  upstream?.close();
  await etcd?.cleanup();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test('proxy: put, get --prefix, serializable get, del match etcd', async () => {
  assert.equal((await viaProxy('put', '/calico/v1/k1', 'v1')).trim(), 'OK');
  assert.equal((await viaProxy('put', '/calico/v1/k2', 'v2')).trim(), 'OK');
  assert.equal(await viaProxy('get', '--prefix', '/calico/'), await direct('get', '--prefix', '/calico/'));
  assert.equal(await viaProxy('get', '/other/x'), '/other/x\noutside\n');

  await cacheCaughtUp();
  const before = proxy.stats.rangesFromCache;
  const fromCache = await viaProxy('get', '--consistency=s', '--prefix', '/calico/');
  assert.equal(fromCache, await direct('get', '--prefix', '/calico/'));
  assert.equal(proxy.stats.rangesFromCache, before + 1, 'the serializable get was answered by the cache');
  // JSON output: same keys, values, revisions; the header revision is the cache's (= etcd's here).
  const pj = JSON.parse(await viaProxy('get', '--consistency=s', '--prefix', '/calico/', '-w', 'json'));
  const dj = JSON.parse(await direct('get', '--prefix', '/calico/', '-w', 'json'));
  assert.deepEqual(pj.kvs, dj.kvs);
  assert.equal(pj.count, dj.count);
  assert.equal(pj.header.revision, dj.header.revision);
  assert.equal(pj.header.cluster_id, dj.header.cluster_id);
  // limit and keys-only from the cache (etcdctl 3.4 has no --count-only; see the unit tests).
  assert.equal(await viaProxy('get', '--consistency=s', '--prefix', '/calico/', '--limit', '2'), await direct('get', '--prefix', '/calico/', '--limit', '2'));
  const lp = JSON.parse(await viaProxy('get', '--consistency=s', '--prefix', '/calico/', '--limit', '1', '-w', 'json'));
  const ld = JSON.parse(await direct('get', '--prefix', '/calico/', '--limit', '1', '-w', 'json'));
  assert.deepEqual([lp.kvs, lp.more, lp.count], [ld.kvs, ld.more, ld.count]);
  assert.equal(await viaProxy('get', '--consistency=s', '--prefix', '/calico/', '--keys-only'), await direct('get', '--prefix', '/calico/', '--keys-only'));

  assert.equal((await viaProxy('del', '/calico/v1/k1')).trim(), '1');
  await cacheCaughtUp();
  assert.equal(await viaProxy('get', '--consistency=s', '--prefix', '/calico/v1/'), '/calico/v1/k2\nv2\n');
  assert.equal(await direct('get', '--prefix', '/calico/v1/'), '/calico/v1/k2\nv2\n');
});

test('proxy: txn is forwarded', async () => {
  const script = 'value("/calico/v1/k2") = "v2"\n\nput /calico/v1/txn yes\n\nput /calico/v1/txn no\n\n';
  const out = await etcdctlAt(proxyEndpoint, ['txn'], script);
  assert.equal(out, 'SUCCESS\n\nOK\n');
  assert.equal(await direct('get', '/calico/v1/txn', '--print-value-only'), 'yes\n');
});

test('proxy: etcdctl watch --prefix /calico/ sees the same events as a watch on etcd', async () => {
  const local = proxy.stats.localWatches;
  const viaP = watch(proxyEndpoint, ['--prefix', '/calico/w/', '--prev-kv']);
  const viaE = watch(etcd.endpoint, ['--prefix', '/calico/w/', '--prev-kv']);
  await new Promise((r) => setTimeout(r, 700)); // let both watches be created
  await direct('put', '/calico/w/a', '1');
  await direct('put', '/calico/w/a', '2');
  await direct('put', '/calico/other', 'not watched');
  await direct('del', '/calico/w/a');
  const expected = 'PUT\n/calico/w/a\n1\nPUT\n/calico/w/a\n1\n/calico/w/a\n2\nDELETE\n/calico/w/a\n2\n/calico/w/a\n\n';
  await until('the direct watch', () => viaE.lines() === expected);
  await until('the proxied watch', () => viaP.lines() === viaE.lines());
  assert.equal(proxy.stats.localWatches, local + 1, 'served from the cache');
  viaP.stop();
  viaE.stop();
});

test('proxy: a watch from a revision in the window is replayed from the cache; an older one is forwarded', async () => {
  const rev = Number(JSON.parse(await direct('put', '/calico/r/x', 'a', '-w', 'json')).header.revision);
  await direct('put', '/calico/r/x', 'b');
  await cacheCaughtUp();
  const { localWatches, forwardedWatches } = proxy.stats;
  const recent = watch(proxyEndpoint, ['--prefix', '/calico/r/', '--rev', String(rev)]);
  const recentDirect = watch(etcd.endpoint, ['--prefix', '/calico/r/', '--rev', String(rev)]);
  await until('replayed events', () => recent.lines() === 'PUT\n/calico/r/x\na\nPUT\n/calico/r/x\nb\n');
  await until('the direct replay', () => recentDirect.lines() === recent.lines());
  // Revision 2 is older than the cache's window (it starts at the list revision): forwarded.
  const old = watch(proxyEndpoint, ['--prefix', '/calico/pre/', '--rev', '2']);
  await until('the forwarded old watch', () => old.lines() === 'PUT\n/calico/pre/a\none\n');
  // Outside the cached prefix: forwarded too, and live.
  const other = watch(proxyEndpoint, ['--prefix', '/other/']);
  await new Promise((r) => setTimeout(r, 700));
  await direct('put', '/other/y', 'z');
  await until('the forwarded /other/ watch', () => other.lines() === 'PUT\n/other/y\nz\n');
  assert.deepEqual([proxy.stats.localWatches - localWatches, proxy.stats.forwardedWatches - forwardedWatches], [1, 2]);
  for (const w of [recent, recentDirect, old, other]) w.stop();
});

test('proxy: leases and endpoint status are forwarded', async () => {
  const grant = await viaProxy('lease', 'grant', '60');
  const id = /lease ([0-9a-f]+) granted with TTL\(60s\)/.exec(grant)?.[1];
  assert.ok(id, grant);
  await viaProxy('put', '/calico/leased', 'x', '--lease', id);
  assert.match(await viaProxy('lease', 'timetolive', id, '--keys'), new RegExp(`lease ${id} granted with TTL\\(60s\\), remaining\\(\\d+s\\), attached keys\\(\\[/calico/leased\\]\\)`));
  assert.match(await viaProxy('lease', 'keep-alive', '--once', id), new RegExp(`lease ${id} keepalived with TTL\\(60\\)`));
  assert.match(await viaProxy('lease', 'revoke', id), /revoked/);
  assert.equal(await direct('get', '/calico/leased'), '');
  const status = JSON.parse(await viaProxy('endpoint', 'status', '-w', 'json'));
  const statusDirect = JSON.parse(await direct('endpoint', 'status', '-w', 'json'));
  assert.equal(status[0].Status.version, statusDirect[0].Status.version);
  assert.equal(status[0].Status.header.cluster_id, statusDirect[0].Status.header.cluster_id);
});

test('proxy: routecat ctl apply and get work through the proxy', async () => {
  const ctl = async (args: string[]) => {
    let out = '';
    let err = '';
    const code = await main(['routecat', 'ctl', ...args], { ETCD_ENDPOINTS: `http://${proxyEndpoint}` }, { out: (t) => (out += `${t}\n`), err: (t) => (err += `${t}\n`), readStdin: async () => '' });
    return { code, out, err };
  };
  const f = join(dir, 'set.yaml');
  writeFileSync(f, 'apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata: {name: via-proxy}\nspec: {nets: [192.0.2.0/24]}\n');
  const applied = await ctl(['apply', '-f', f]);
  assert.equal(applied.code, 0, applied.err);
  const got = await ctl(['get', 'gns', 'via-proxy', '-o', 'json']);
  assert.equal(got.code, 0, got.err);
  assert.deepEqual(JSON.parse(got.out).spec.nets, ['192.0.2.0/24']);
});

test('proxy: a client reads its own writes from the cache, and linearizable reads use a read index', async () => {
  const raw = new RawEtcd(proxyEndpoint);
  try {
    const key = (i: number) => Buffer.from(`/calico/ryw/k${i}`);
    for (let i = 0; i < 30; i++) {
      await raw.must('KV', 'Put', { key: key(i), value: Buffer.from(`v${i}`) });
      const got = await raw.must('KV', 'Range', { key: key(i), serializable: true });
      assert.equal(got.kvs[0]?.value.toString(), `v${i}`, `serializable read right after write ${i}`);
    }
    // A write straight to etcd (another host's client), then a linearizable read via the proxy:
    // answered by the cache once it has caught up with the cluster's revision.
    const { rangesAfterReadIndex, rangesMissed } = proxy.stats;
    await direct('put', '/calico/ryw/elsewhere', 'fresh');
    const lin = await raw.must('KV', 'Range', { key: Buffer.from('/calico/ryw/elsewhere') });
    assert.equal(lin.kvs[0]?.value.toString(), 'fresh');
    // Writes outside the prefix move the cluster's revision past the cache's: etcd's progress
    // notification tells the cache nothing under /calico/ changed, so it still answers.
    await direct('put', '/other/bump', '1');
    await direct('put', '/other/bump', '2');
    const dj = JSON.parse(await direct('get', '/calico/ryw/k0', '-w', 'json'));
    const lin2 = await raw.must('KV', 'Range', { key: Buffer.from('/calico/ryw/k0') });
    assert.equal(Number(lin2.header.revision), Number(dj.header.revision), 'the answer is at the cluster revision of the read');
    assert.deepEqual([proxy.stats.rangesAfterReadIndex - rangesAfterReadIndex, proxy.stats.rangesMissed - rangesMissed], [2, 0]);
  } finally {
    raw.close();
  }
});

test('proxy: a watch client that stops reading is cut off; the others are not', async () => {
  const port = await freePort();
  const small = await startProxy({ listen: `127.0.0.1:${port}`, cachePrefixes: ['/calico/'], upstream, maxWatchBacklogBytes: 256 * 1024 });
  const raw = new RawEtcd(`127.0.0.1:${port}`);
  let stalled: ReturnType<typeof stalledWatch> | undefined;
  try {
    await small.synced();
    const healthy = raw.watch();
    healthy.create({ key: Buffer.from('/calico/flood/'), range_end: Buffer.from('/calico/flood0') });
    // A stream with no reader: grpc-js stops reading from the socket, HTTP/2 flow control backs up.
    stalled = stalledWatch(`127.0.0.1:${port}`, { key: Buffer.from('/calico/flood/'), range_end: Buffer.from('/calico/flood0') });
    assert.ok(await healthy.until(() => healthy.responses.some((r) => r.created), 5_000));
    await new Promise((r) => setTimeout(r, 300));
    const big = Buffer.alloc(128 * 1024, 'x');
    for (let i = 0; i < 64; i++) await raw.must('KV', 'Put', { key: Buffer.from(`/calico/flood/${i}`), value: big });
    await waitUntil('the stalled client cut off', () => small.stats.slowCutoffs === 1, 10_000);
    assert.ok(await healthy.until(() => healthy.responses.reduce((n, r) => n + (r.events?.length ?? 0), 0) === 64, 10_000), 'the reading client got every event');
    const status = await stalled.resume(10_000);
    assert.equal(status.code, grpc.status.UNAVAILABLE, `the stalled client is told UNAVAILABLE (so it reconnects and resumes): ${status.details}`);
    healthy.close();
  } finally {
    raw.close();
    stalled?.close();
    await small.stop();
  }
});

test('proxy: TLS listener with client certificates', async (t) => {
  const pki = join(dir, 'pki');
  const sh = (cmd: string) => execFileSync('sh', ['-c', cmd], { cwd: pki, stdio: 'pipe' });
  execFileSync('mkdir', ['-p', pki]);
  sh('openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key -out ca.crt -days 1 -subj /CN=test-ca');
  const leaf = (name: string, ext: string) =>
    sh(`openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ${name}.key -out ${name}.csr -subj /CN=${name} && ` +
      `printf '${ext}' > ${name}.ext && openssl x509 -req -in ${name}.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out ${name}.crt -days 1 -extfile ${name}.ext`);
  leaf('server', 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n');
  leaf('client', 'extendedKeyUsage=clientAuth\n');
  const port = await freePort();
  const tlsProxy = await startProxy({
    listen: `127.0.0.1:${port}`, cachePrefixes: ['/calico/'], upstream,
    tls: { certFile: join(pki, 'server.crt'), keyFile: join(pki, 'server.key'), clientCaFile: join(pki, 'ca.crt') },
  });
  t.after(() => tlsProxy.stop());
  await tlsProxy.synced();
  const https = `https://127.0.0.1:${port}`;
  const withCert = ['--cacert', join(pki, 'ca.crt'), '--cert', join(pki, 'client.crt'), '--key', join(pki, 'client.key')];
  assert.equal(await etcdctlAt(https, [...withCert, 'get', '--consistency=s', '/calico/pre/a', '--print-value-only']), 'one\n');
  await assert.rejects(etcdctlAt(https, ['--cacert', join(pki, 'ca.crt'), '--dial-timeout', '2s', '--command-timeout', '3s', 'get', '/calico/pre/a']), 'no client certificate: refused');
  await assert.rejects(etcdctlAt(`127.0.0.1:${port}`, ['--dial-timeout', '2s', '--command-timeout', '3s', 'get', '/calico/pre/a']), 'plaintext: refused');

  // Upstream TLS: an etcd that speaks only TLS and wants a client certificate.
  const client = freePort();
  const peerPort = await freePort();
  const etcdUrl = `https://127.0.0.1:${await client}`;
  const tlsEtcd = spawn('etcd', [
    '--name', 'tls', '--data-dir', join(pki, 'etcd-data'),
    '--listen-client-urls', etcdUrl, '--advertise-client-urls', etcdUrl,
    '--listen-peer-urls', `http://127.0.0.1:${peerPort}`, '--initial-advertise-peer-urls', `http://127.0.0.1:${peerPort}`,
    '--initial-cluster', `tls=http://127.0.0.1:${peerPort}`,
    '--cert-file', join(pki, 'server.crt'), '--key-file', join(pki, 'server.key'),
    '--client-cert-auth', '--trusted-ca-file', join(pki, 'ca.crt'), '--log-level', 'error',
  ], { stdio: 'ignore' });
  children.add(tlsEtcd);
  t.after(() => tlsEtcd.kill('SIGKILL'));
  await waitFor('the TLS etcd answering', () => etcdctlAt(etcdUrl, [...withCert, 'put', '/calico/tls/k', 'v']).then(() => true, () => false), 20_000);
  const tlsUpstream = new Upstream({ endpoints: [etcdUrl], caFile: join(pki, 'ca.crt'), certFile: join(pki, 'client.crt'), keyFile: join(pki, 'client.key') });
  t.after(() => tlsUpstream.close());
  const port2 = await freePort();
  const overTls = await startProxy({ listen: `127.0.0.1:${port2}`, cachePrefixes: ['/calico/'], upstream: tlsUpstream });
  t.after(() => overTls.stop());
  await overTls.synced();
  assert.equal((await etcdctlAt(`127.0.0.1:${port2}`, ['put', '/calico/tls/k2', 'v2'])).trim(), 'OK', 'a write forwarded over TLS');
  assert.equal(await etcdctlAt(`127.0.0.1:${port2}`, ['get', '--consistency=s', '--prefix', '/calico/tls/']), '/calico/tls/k\nv\n/calico/tls/k2\nv2\n', 'the cache fed over TLS');
});

test('proxy: the cache resumes its watch after etcd restarts and keeps answering', async () => {
  const resumesBefore = proxy.feeds[0]!.resumes;
  await etcd.kill();
  await until('the feed noticing', () => proxy.feeds[0]!.status !== 'InSync', 10_000);
  // etcd is down: serializable reads are still answered from the cache.
  assert.equal(await viaProxy('get', '--consistency=s', '/calico/pre/a', '--print-value-only'), 'one\n');
  await etcd.restart();
  await until('the feed resuming', () => proxy.feeds[0]!.status === 'InSync' && proxy.feeds[0]!.resumes > resumesBefore, 15_000);
  const w = watch(proxyEndpoint, ['--prefix', '/calico/after/']);
  await new Promise((r) => setTimeout(r, 700));
  await direct('put', '/calico/after/restart', 'yes');
  await cacheCaughtUp();
  assert.equal(await viaProxy('get', '--consistency=s', '/calico/after/restart', '--print-value-only'), 'yes\n');
  await until('the watch after the restart', () => w.lines() === 'PUT\n/calico/after/restart\nyes\n');
  w.stop();
});

test('proxy: `routecat proxy --listen ... --etcd-endpoints ...` serves etcdctl and stops on SIGTERM', async () => {
  const port = await freePort();
  const healthPort = await freePort();
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts', 'proxy', '--listen', `127.0.0.1:${port}`, '--etcd-endpoints', etcd.endpoint, '--health-port', String(healthPort)], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(child);
  let logs = '';
  child.stdout.on('data', (d) => (logs += d));
  child.stderr.on('data', (d) => (logs += d));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  const deadline = Date.now() + 15_000;
  let got = '';
  while (Date.now() < deadline) {
    try {
      got = await etcdctlAt(`127.0.0.1:${port}`, ['get', '--consistency=s', '/calico/pre/a', '--print-value-only']);
      if (got === 'one\n') break;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  assert.equal(got, 'one\n', logs);
  // Ready once the cache has listed /calico/ (the get above may have been forwarded before that).
  const readiness = await waitFor('the proxy ready', async () => {
    const res = await fetch(`http://127.0.0.1:${healthPort}/readiness`);
    return res.status === 200 ? ((await res.json()) as { ready: boolean; caches: Array<{ prefix: string; status: string }> }) : undefined;
  }, 10_000, () => logs);
  assert.deepEqual(readiness.caches.map((c) => [c.prefix, c.status]), [['/calico/', 'InSync']]);
  // Ready: now a serializable get is the cache's to answer.
  assert.equal(await etcdctlAt(`127.0.0.1:${port}`, ['get', '--consistency=s', '/calico/pre/a', '--print-value-only']), 'one\n');
  const metrics = await (await fetch(`http://127.0.0.1:${healthPort}/metrics`)).text();
  const keys = Number(JSON.parse(await direct('get', '--prefix', '/calico/', '--keys-only', '-w', 'json')).count ?? 0);
  assert.match(metrics, new RegExp(`^routecat_proxy_cache_keys\\{prefix="/calico/"\\} ${keys}$`, 'm'));
  assert.match(metrics, /^routecat_proxy_upstream_watches 1$/m, 'one upstream watch for the cache');
  assert.match(metrics, /^routecat_proxy_range_total\{result="hit"\} [1-9]/m, 'the serializable get was a cache hit');
  assert.match(metrics, /^routecat_proxy_clients [1-9]/m);
  child.kill('SIGTERM');
  assert.equal(await exited, 0, logs);
  children.delete(child);
});

test('proxy: refuses a non-loopback listen address unless told otherwise', async () => {
  let err = '';
  const code = await main(['routecat', 'proxy', '--listen', '0.0.0.0:0', '--etcd-endpoints', etcd.endpoint, '--health-port', '0'], {}, { out: () => undefined, err: (t) => (err += t), readStdin: async () => '' });
  assert.notEqual(code, 0);
  assert.match(err, /not a loopback address.*--allow-remote/);
});
