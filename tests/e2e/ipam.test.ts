/**
 * Block IPAM on a real etcd: assign/release for IPv4 and IPv6, own block -> new block -> borrowing,
 * strictAffinity, reuse order, two hosts assigning hundreds of addresses at once, a fast-check
 * property over random interleavings of assign/release/host loss, and `ctl ipam` on real data.
 */
import { test, before, after, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { connectEtcd, type Etcd3 } from '../../src/datastore/etcd.ts';
import { createIpam } from '../../src/ipam/ipam.ts';
import type { AssignRequest, Ipam } from '../../src/ipam/api.ts';
import { IpamExhaustedError } from '../../src/ipam/errors.ts';
import { consistencyProblems } from '../../src/ipam/check.ts';
import { HANDLE_PREFIX, IPAM_CONFIG_KEY, IPPOOL_PREFIX, blockPrefix, decodeBlock, decodeHandle, encodeIpamConfig, hostAffinityPrefix, decodeAffinity } from '../../src/ipam/keys.ts';
import { cidrContains, parseAddr, parseCidr } from '../../src/ipam/block-math.ts';
import { main } from '../../src/cli/main.ts';
import { startEtcd, type EtcdServer } from '../helpers/etcd.ts';

let etcd: EtcdServer;
let client: Etcd3;
const extraClients: Etcd3[] = [];

before(async () => {
  etcd = await startEtcd();
  client = connectEtcd({ endpoints: [etcd.endpoint] });
});

after(async () => {
  for (const c of extraClients) c.close();
  client?.close();
  await etcd?.cleanup();
});

beforeEach(async () => {
  await client.delete().prefix('/calico/');
});

async function putPool(name: string, cidr: string, spec: Record<string, unknown> = {}): Promise<void> {
  await client.put(`${IPPOOL_PREFIX}${name}`).value(JSON.stringify({ apiVersion: 'projectcalico.org/v3', kind: 'IPPool', metadata: { name }, spec: { cidr, ...spec } }));
}

function req(hostname: string, handleId: string, num4 = 1, num6 = 0, extra: Partial<AssignRequest> = {}): AssignRequest {
  return { handleId, hostname, num4, num6, attributes: { node: hostname, pod: handleId }, ...extra };
}

/** The whole IPAM state: blocks and handles, checked for consistency. */
async function audit(): Promise<{ allocated: string[]; handles: string[] }> {
  const blocks = [
    ...Object.entries(await client.getAll().prefix(blockPrefix(4)).strings()),
    ...Object.entries(await client.getAll().prefix(blockPrefix(6)).strings()),
  ].map(([k, v]) => decodeBlock(k, v));
  const handles = Object.entries(await client.getAll().prefix(HANDLE_PREFIX).strings()).map(([k, v]) => decodeHandle(k, v));
  assert.deepEqual(consistencyProblems(blocks, handles), []);
  const ipam = createIpam(client);
  const allocated = (await ipam.allocations()).map((a) => a.ip);
  assert.equal(new Set(allocated).size, allocated.length, 'an address is allocated twice');
  return { allocated, handles: handles.map((h) => h.handleID) };
}

const bare = (cidr: string) => cidr.split('/')[0]!;

test('ipam: assign and release one IPv4 and one IPv6 address', async () => {
  await putPool('v4', '10.65.0.0/16');
  await putPool('v6', 'fd00:65::/48');
  const ipam = createIpam(client);
  const r = await ipam.autoAssign(req('node-a', 'net.c1', 1, 1));
  assert.equal(r.ipv4.length, 1);
  assert.equal(r.ipv6.length, 1);
  assert.match(r.ipv4[0]!, /^10\.65\.\d+\.\d+\/32$/);
  assert.match(r.ipv6[0]!, /^fd00:65:[0-9a-f:]+\/128$/);
  assert.ok(cidrContains(parseCidr('fd00:65::/48'), parseAddr(bare(r.ipv6[0]!))!));

  const a4 = await ipam.lookup(r.ipv4[0]!);
  assert.equal(a4?.handleId, 'net.c1');
  assert.deepEqual(a4?.attributes, { node: 'node-a', pod: 'net.c1' });
  assert.match(a4!.block, /\/26$/);
  assert.match((await ipam.lookup(bare(r.ipv6[0]!)))!.block, /\/122$/);
  assert.deepEqual((await ipam.ipsByHandle('net.c1')).sort(), [...r.ipv4, ...r.ipv6].sort());

  const blocks = await ipam.blocks('node-a');
  assert.equal(blocks.length, 2);
  for (const b of blocks) {
    assert.equal(b.affinity, 'host:node-a');
    assert.equal(b.affinityState, 'confirmed');
    assert.equal(b.allocated, 1);
  }
  assert.deepEqual((await ipam.blocks('node-b')), []);
  // Key layout as Calico's.
  const keys = Object.keys(await client.getAll().prefix('/calico/ipam/v2/').strings()).sort();
  assert.ok(keys.some((k) => /^\/calico\/ipam\/v2\/assignment\/ipv4\/block\/10\.65\.\d+\.\d+-26$/.test(k)), keys.join('\n'));
  assert.ok(keys.some((k) => /^\/calico\/ipam\/v2\/host\/node-a\/ipv6\/block\/fd00:65:[0-9a-f:]+-122$/.test(k)), keys.join('\n'));
  assert.ok(keys.includes('/calico/ipam/v2/handle/net.c1'));
  await audit();

  assert.deepEqual((await ipam.releaseByHandle('net.c1')).sort(), [...r.ipv4, ...r.ipv6].sort());
  assert.equal(await ipam.lookup(r.ipv4[0]!), undefined);
  assert.deepEqual(await ipam.releaseByHandle('net.c1'), [], 'release is idempotent');
  assert.deepEqual(await ipam.ipsByHandle('net.c1'), []);
  const after = await audit();
  assert.deepEqual(after, { allocated: [], handles: [] });
  // The empty blocks stay affine to the host (as Calico keeps them).
  assert.equal((await ipam.blocks('node-a')).length, 2);

  // releaseIps: by address, either spelling; unallocated ones are not reported.
  const r2 = await ipam.autoAssign(req('node-a', 'net.c2', 2, 0));
  assert.deepEqual(await ipam.releaseIps([bare(r2.ipv4[0]!), '10.65.250.1', r2.ipv4[0]!]), [r2.ipv4[0]!]);
  assert.deepEqual(await ipam.ipsByHandle('net.c2'), [r2.ipv4[1]!]);
  await ipam.releaseIps([r2.ipv4[1]!]);
  assert.deepEqual(await audit(), { allocated: [], handles: [] });
});

test('ipam: request errors and pool selection', async () => {
  const ipam = createIpam(client);
  await assert.rejects(ipam.autoAssign(req('node-a', 'h1')), (e: unknown) => e instanceof IpamExhaustedError && /no enabled IPv4 IPPool/.test(e.message));
  await putPool('off', '10.80.0.0/24', { disabled: true });
  await putPool('racks', '10.81.0.0/24', { nodeSelector: 'rack == "r1"' });
  await putPool('v6only', 'fd00:81::/120', { blockSize: 124 });
  await assert.rejects(ipam.autoAssign(req('node-a', 'h1')), IpamExhaustedError);
  await assert.rejects(ipam.autoAssign(req('node-a', 'h1', 1, 0, { pools4: ['off'] })), /requested IPv4 pool 'off' does not exist or is disabled/);
  // A requested pool overrides the nodeSelector; a matching node gets it automatically.
  const r1 = await ipam.autoAssign(req('node-a', 'h1', 1, 0, { pools4: ['10.81.0.0/24'] }));
  assert.match(r1.ipv4[0]!, /^10\.81\.0\./);
  await client.put('/calico/resources/v3/projectcalico.org/nodes/node-r1').value(JSON.stringify({ apiVersion: 'projectcalico.org/v3', kind: 'Node', metadata: { name: 'node-r1', labels: { rack: 'r1' } }, spec: {} }));
  const r2 = await ipam.autoAssign(req('node-r1', 'h2', 1, 1));
  assert.match(r2.ipv4[0]!, /^10\.81\.0\./);
  assert.match((await ipam.lookup(r2.ipv6[0]!))!.block, /\/124$/);
  await assert.rejects(ipam.autoAssign({ ...req('node-a', 'h3'), num4: -1 }), /num4 must be a non-negative integer/);
  await assert.rejects(ipam.releaseIps(['10.1.2.3/24']), /invalid IP address/);
  await audit();
});

test('ipam: own block first, a new block when full, then borrowing; strictAffinity refuses', async () => {
  // 10.66.0.0/28 in /30 blocks: four blocks of four addresses.
  await putPool('tiny', '10.66.0.0/28', { blockSize: 30 });
  const ipam = createIpam(client);
  const a: string[] = [];
  for (let i = 0; i < 10; i++) a.push(...(await ipam.autoAssign(req('host-a', `a${i}`))).ipv4);
  const blocksA = await ipam.blocks('host-a');
  assert.equal(blocksA.length, 3, 'ten addresses need three of host-a\'s blocks');
  assert.deepEqual(blocksA.map((b) => b.allocated).sort(), [2, 4, 4]);
  // The first four share one block: own block first.
  const first = new Set(await Promise.all(a.slice(0, 4).map(async (ip) => (await ipam.lookup(ip))!.block)));
  assert.equal(first.size, 1);

  const b: string[] = [];
  for (let i = 0; i < 4; i++) b.push(...(await ipam.autoAssign(req('host-b', `b${i}`))).ipv4);
  assert.equal((await ipam.blocks('host-b')).length, 1, 'host-b claims the last free block');
  // host-b's block is full and the pool has no free block: borrow from host-a's.
  const borrowed = (await ipam.autoAssign(req('host-b', 'b4'))).ipv4[0]!;
  const lent = await ipam.lookup(borrowed);
  assert.ok(blocksA.some((blk) => blk.cidr === lent!.block), `${borrowed} should come from a host-a block`);
  assert.equal(lent!.handleId, 'b4');

  // strictAffinity: no borrowing.
  await client.put(IPAM_CONFIG_KEY).value(encodeIpamConfig({ strictAffinity: true }));
  await assert.rejects(ipam.autoAssign(req('host-b', 'b5')), (e: unknown) => e instanceof IpamExhaustedError && /no addresses available/.test(e.message) && /strictAffinity/.test(e.message));
  // host-a still gets its own block's last free address.
  await ipam.autoAssign(req('host-a', 'a10'));
  await assert.rejects(ipam.autoAssign(req('host-a', 'a11')), /no addresses available/);
  await client.put(IPAM_CONFIG_KEY).value(encodeIpamConfig({ strictAffinity: false }));
  await assert.rejects(ipam.autoAssign(req('host-c', 'c0')), /no addresses available/, 'the pool is full');
  // A failed multi-address request leaves nothing behind.
  await ipam.releaseByHandle('a0');
  await assert.rejects(ipam.autoAssign(req('host-c', 'c1', 2)), /asked for 2 IPv4 address\(es\).*got 1/);
  const state = await audit();
  assert.equal(state.allocated.length, 15);
  assert.ok(!state.handles.includes('c1'));
});

test('ipam: released addresses are reused last', async () => {
  await putPool('eight', '10.67.0.0/29', { blockSize: 29 });
  const ipam = createIpam(client);
  const ip = async (h: string) => (await ipam.autoAssign(req('host-a', h))).ipv4[0]!;
  assert.equal(await ip('h0'), '10.67.0.0/32', 'Calico allocates every address of a block, .0 included');
  assert.equal(await ip('h1'), '10.67.0.1/32');
  await ipam.releaseByHandle('h0');
  assert.equal(await ip('h2'), '10.67.0.2/32', 'the released .0 waits at the end of the free list');
  const rest: string[] = [];
  for (let i = 3; i < 9; i++) rest.push(await ip(`h${i}`));
  assert.deepEqual(rest, ['10.67.0.3/32', '10.67.0.4/32', '10.67.0.5/32', '10.67.0.6/32', '10.67.0.7/32', '10.67.0.0/32']);
  // Attributes of released handles are dropped from the block.
  const block = decodeBlock('b', Object.values(await client.getAll().prefix(blockPrefix(4)).strings())[0]!);
  assert.equal(block.attributes.length, 8);
  assert.ok(!block.attributes.some((a) => a.handle_id === 'h0' && block.allocations.every((x) => x === null || block.attributes[x] !== a)));
  await audit();
});

async function twoHostsAssign(perHost: number, pool: string, blockSize: number, what: string): Promise<void> {
  await putPool('conc', pool, { blockSize });
  const hosts = ['host-1', 'host-2'];
  const ipams = hosts.map(() => {
    const c = connectEtcd({ endpoints: [etcd.endpoint] });
    extraClients.push(c);
    return createIpam(c);
  });
  const t0 = Date.now();
  const results = await Promise.all(
    hosts.flatMap((host, h) => Array.from({ length: perHost }, (_, i) => ipams[h]!.autoAssign(req(host, `${host}.c${i}`)).then((r) => ({ host, ip: r.ipv4[0]! })))),
  );
  const assignMs = Date.now() - t0;
  const ips = results.map((r) => r.ip);
  assert.equal(new Set(ips).size, ips.length, 'every address handed out once');
  const ipam = createIpam(client);
  const state = await audit();
  assert.deepEqual([...state.allocated].sort(), ips.map(bare).sort());
  assert.equal(state.handles.length, ips.length);
  // Every confirmed affinity has its block, owned by that host.
  for (const host of hosts) {
    const affinities = await client.getAll().prefix(hostAffinityPrefix(host, 4)).strings();
    for (const [k, v] of Object.entries(affinities)) assert.equal(decodeAffinity(k, v).state, 'confirmed', k);
    assert.equal(Object.keys(affinities).length, (await ipam.blocks(host)).length);
  }
  const t1 = Date.now();
  await Promise.all(results.map((r, i) => ipams[hosts.indexOf(r.host)]!.releaseByHandle(`${r.host}.c${i % perHost}`)));
  const releaseMs = Date.now() - t1;
  assert.deepEqual(await audit(), { allocated: [], handles: [] });
  assert.deepEqual(await client.getAll().prefix(HANDLE_PREFIX).keys(), []);
  console.log(`# ${hosts.length} x ${perHost} parallel autoAssign (${what}): ${assignMs} ms, release ${releaseMs} ms`);
}

test('ipam: two hosts x 200 parallel autoAssign on a /22 of /26 blocks: unique, consistent, all released', async () => {
  await twoHostsAssign(200, '10.70.0.0/22', 26, '/22 of /26');
});

test('ipam: two hosts x 200 parallel autoAssign on a /23 of /28 blocks (many claims race)', async () => {
  // 2 x 200 = 400 of 512 addresses in 32 blocks of 16: many claims race, some blocks are shared.
  await twoHostsAssign(200, '10.71.0.0/23', 28, '/23 of /28');
});

test('ipam: exhausting a pool from two hosts at once hands out every address exactly once', async () => {
  await putPool('small', '10.72.0.0/26', { blockSize: 29 });
  const ipams = [0, 1].map(() => {
    const c = connectEtcd({ endpoints: [etcd.endpoint] });
    extraClients.push(c);
    return createIpam(c);
  });
  const outcomes = await Promise.allSettled(
    Array.from({ length: 80 }, (_, i) => ipams[i % 2]!.autoAssign(req(`host-${i % 2}`, `x${i}`))),
  );
  const ok = outcomes.flatMap((o) => (o.status === 'fulfilled' ? [o.value.ipv4[0]!] : []));
  const failed = outcomes.flatMap((o) => (o.status === 'rejected' ? [o.reason as Error] : []));
  assert.equal(ok.length, 64, failed.map((e) => e.message).join('\n'));
  assert.equal(new Set(ok).size, 64);
  for (const e of failed) assert.ok(e instanceof IpamExhaustedError, e.message);
  const state = await audit();
  assert.equal(state.allocated.length, 64);
});

// ---- property: random interleavings ----------------------------------------------------------

type Op = { t: 'assign'; host: number; v4: number; v6: number } | { t: 'release'; pick: number } | { t: 'releaseIp'; pick: number } | { t: 'hostLoss'; host: number };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 5, arbitrary: fc.record({ t: fc.constant('assign' as const), host: fc.nat(2), v4: fc.integer({ min: 0, max: 2 }), v6: fc.integer({ min: 0, max: 1 }) }) },
  { weight: 2, arbitrary: fc.record({ t: fc.constant('release' as const), pick: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('releaseIp' as const), pick: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('hostLoss' as const), host: fc.nat(2) }) },
);

test('ipam: property: random concurrent assign / release / host loss keep every invariant', async () => {
  const hosts = ['p-0', 'p-1', 'p-2'];
  const ipams = hosts.map(() => {
    const c = connectEtcd({ endpoints: [etcd.endpoint] });
    extraClients.push(c);
    return createIpam(c);
  });
  const t0 = Date.now();
  let runs = 0;
  let firstError: string | undefined;
  await fc.assert(
    fc.asyncProperty(fc.array(fc.array(opArb, { minLength: 1, maxLength: 8 }), { minLength: 1, maxLength: 6 }), async (batches) => {
      try {
        await runBatches(batches);
      } catch (err) {
        if (!firstError) firstError = err instanceof Error ? err.stack ?? err.message : String(err);
        throw err;
      }
    }),
    { numRuns: 60, interruptAfterTimeLimit: 25_000, markInterruptAsFailure: false, ...(process.env.IPAM_SEED ? { seed: Number(process.env.IPAM_SEED), path: process.env.IPAM_PATH } : {}) },
  ).catch((err: unknown) => {
    throw new Error(`${err instanceof Error ? err.message : String(err)}\nfirst error: ${firstError}`);
  });
  console.log(`# property: ${runs} runs in ${Date.now() - t0} ms`);

  async function runBatches(batches: Op[][]): Promise<void> {
      runs++;
      await client.delete().prefix('/calico/');
      await putPool('pv4', '10.90.0.0/27', { blockSize: 29 });
      await putPool('pv6', 'fd00:90::/122', { blockSize: 125 });
      // Model: handle -> { host, ips }.
      const model = new Map<string, { host: number; ips: Set<string> }>();
      let next = 0;
      for (const batch of batches) {
        const live = [...model.keys()];
        // One release per handle per batch: two concurrent releases of one handle have no single
        // expected outcome (which of them frees a given address is a race).
        const taken = new Set<string>();
        const claim = (h: string): boolean => (taken.has(h) ? false : (taken.add(h), true));
        const outcomes = await Promise.allSettled(
          batch.map(async (op) => {
            if (op.t === 'assign') {
              const handle = `h${next++}`;
              try {
                const r = await ipams[op.host]!.autoAssign(req(hosts[op.host]!, handle, op.v4, op.v6));
                if (r.ipv4.length + r.ipv6.length > 0) model.set(handle, { host: op.host, ips: new Set([...r.ipv4, ...r.ipv6]) });
              } catch (err) {
                if (!(err instanceof IpamExhaustedError)) throw err;
              }
            } else if (op.t === 'release' && live.length > 0) {
              const handle = live[op.pick % live.length]!;
              const entry = model.get(handle);
              if (!entry || !claim(handle)) return;
              model.delete(handle);
              const released = await ipams[op.pick % hosts.length]!.releaseByHandle(handle);
              assert.deepEqual(released.sort(), [...entry.ips].sort());
            } else if (op.t === 'releaseIp' && live.length > 0) {
              const handle = live[op.pick % live.length]!;
              const entry = model.get(handle);
              if (!entry || entry.ips.size === 0 || !claim(handle)) return;
              const ip = [...entry.ips][op.pick % entry.ips.size]!;
              entry.ips.delete(ip);
              if (entry.ips.size === 0) model.delete(handle);
              assert.deepEqual(await ipams[0]!.releaseIps([ip]), [ip]);
            } else if (op.t === 'hostLoss') {
              // The host is gone: release every handle it held when the batch started.
              const mine = live.filter((h) => model.get(h)?.host === op.host && claim(h));
              for (const h of mine) model.delete(h);
              await Promise.all(mine.map((h) => ipams[(op.host + 1) % hosts.length]!.releaseByHandle(h)));
            }
          }),
        );
        for (const o of outcomes) if (o.status === 'rejected') throw o.reason;
        const state = await audit();
        const expected = [...model.values()].flatMap((e) => [...e.ips].map(bare)).sort();
        assert.deepEqual([...state.allocated].sort(), expected);
        assert.deepEqual([...state.handles].sort(), [...model.keys()].sort());
      }
      for (const [h, e] of model) assert.deepEqual((await ipams[0]!.ipsByHandle(h)).sort(), [...e.ips].sort());
      await Promise.all([...model.keys()].map((h) => ipams[1]!.releaseByHandle(h)));
      assert.deepEqual(await audit(), { allocated: [], handles: [] });
  }
});

// ---- ctl ipam --------------------------------------------------------------------------------

async function ctl(args: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const code = await main(['routecat', 'ctl', ...args], { ETCD_ENDPOINTS: etcd.endpoint }, {
    out: (t) => (out += `${t}\n`),
    err: (t) => (err += `${t}\n`),
    readStdin: async () => '',
  });
  return { code, out, err };
}

async function putEndpoint(ns: string, name: string, node: string, ipNetworks: string[]): Promise<void> {
  await client.put(`/calico/resources/v3/projectcalico.org/workloadendpoints/${ns}/${name}`).value(JSON.stringify({
    apiVersion: 'projectcalico.org/v3', kind: 'WorkloadEndpoint', metadata: { name, namespace: ns },
    spec: { node, orchestrator: 'k8s', pod: name, endpoint: 'eth0', interfaceName: `cali${name}`, ipNetworks },
  }));
}

test('ctl ipam: show, check (a planted leak and an endpoint without allocation), release', async () => {
  await putPool('default-ipv4-ippool', '10.65.0.0/16');
  const ipam = createIpam(client);
  const good = (await ipam.autoAssign(req('node-a', 'k8s-pod-network.good'))).ipv4[0]!;
  const leak = (await ipam.autoAssign({ ...req('node-a', 'k8s-pod-network.leak'), attributes: { namespace: 'default', pod: 'gone' } })).ipv4[0]!;
  await putEndpoint('default', 'good', 'node-a', [good]);
  await putEndpoint('default', 'stray', 'node-a', ['10.65.200.200/32']);

  const show = await ctl(['ipam', 'show']);
  assert.equal(show.code, 0, show.err);
  assert.match(show.out, /GROUPING\s+CIDR\s+IPS TOTAL\s+IPS IN USE\s+IPS FREE/);
  assert.match(show.out, /IP Pool default-ipv4-ippool\s+10\.65\.0\.0\/16\s+65536\s+2 \(0%\)\s+65534 \(100%\)/);
  assert.doesNotMatch(show.out, /Block/);

  const blocks = await ctl(['ipam', 'show', '--show-blocks']);
  const blockCidr = (await ipam.lookup(good))!.block;
  assert.match(blocks.out, new RegExp(`Block\\s+${blockCidr.replace(/\./g, '\\.')}\\s+64\\s+2 \\(3\\.1%\\)\\s+62 \\(96\\.9%\\)\\s+host:node-a\\s+confirmed`));

  const one = await ctl(['ipam', 'show', '--ip', bare(leak)]);
  assert.equal(one.code, 0);
  assert.match(one.out, new RegExp(`IP ${bare(leak).replace(/\./g, '\\.')} is in use`));
  assert.match(one.out, /Handle:\s+k8s-pod-network\.leak/);
  assert.match(one.out, /pod: gone/);
  assert.match((await ctl(['ipam', 'show', '--ip', '10.65.99.99'])).out, /IP 10\.65\.99\.99 is not assigned/);

  const check = await ctl(['ipam', 'check']);
  assert.equal(check.code, 1, check.out);
  assert.match(check.out, /Checked 2 IPAM allocation\(s\) against 2 workload endpoint\(s\)/);
  assert.match(check.out, /Found 1 leaked allocation/);
  assert.match(check.out, new RegExp(`${bare(leak).replace(/\./g, '\\.')}\\s+k8s-pod-network\\.leak`));
  assert.doesNotMatch(check.out, new RegExp(`${bare(good).replace(/\./g, '\\.')}\\s`));
  assert.match(check.out, /Found 1 workload endpoint address\(es\) not allocated by IPAM/);
  assert.match(check.out, /default\/stray\s+10\.65\.200\.200/);

  const rel = await ctl(['ipam', 'release', '--ip', bare(leak)]);
  assert.equal(rel.code, 0, rel.err);
  assert.match(rel.out, /Successfully released 1 IP/);
  assert.equal(await ipam.lookup(leak), undefined);
  const again = await ctl(['ipam', 'release', '--ip', bare(leak)]);
  assert.equal(again.code, 1);
  assert.match(again.err, /is not assigned/);

  await client.delete().key('/calico/resources/v3/projectcalico.org/workloadendpoints/default/stray');
  const clean = await ctl(['ipam', 'check']);
  assert.equal(clean.code, 0, clean.out);
  assert.match(clean.out, /No problems found/);
  const bogus = await ctl(['ipam', 'bogus']);
  assert.equal(bogus.code, 2);
  assert.match(bogus.err, /ipam needs a subcommand: show, check, release \(got 'bogus'\)/);
});
