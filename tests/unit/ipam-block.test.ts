/**
 * One block's bookkeeping (assign from the front, release to the end, attribute sharing and
 * clean-up), its JSON in Calico's format, the consistency check, and `ctl ipam` formatting and
 * leak detection. Pure and fast.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { parseCidr, formatAddr } from '../../src/ipam/block-math.ts';
import { allocationOf, assignFromBlock, blockAllocations, blockProblems, newBlock, releaseAddrsFromBlock, releaseHandleFromBlock } from '../../src/ipam/block.ts';
import { decodeBlock, encodeBlock, decodeHandle, encodeHandle, decodeAffinity, encodeAffinity } from '../../src/ipam/keys.ts';
import { consistencyProblems, endpointIps, findLeaks, canonicalIp } from '../../src/ipam/check.ts';
import { formatIp, formatShow } from '../../src/ipam/ctl-ipam.ts';
import { decodePool } from '../../src/ipam/pools.ts';

const ip4 = (v: bigint) => formatAddr(4, v);

test('ipam block: a new block is all free, in ordinal order, stored as Calico stores it', () => {
  const b = newBlock(parseCidr('10.65.1.0/29'), 'host:node-a');
  assert.deepEqual(JSON.parse(encodeBlock(b)), {
    cidr: '10.65.1.0/29', affinity: 'host:node-a', strictAffinity: false,
    allocations: [null, null, null, null, null, null, null, null], unallocated: [0, 1, 2, 3, 4, 5, 6, 7],
    attributes: [], deleted: false, sequenceNumber: 0,
  });
  assert.deepEqual(decodeBlock('k', encodeBlock(b)), b);
  assert.deepEqual(blockProblems(b), []);
  assert.throws(() => decodeBlock('/calico/ipam/v2/assignment/ipv4/block/x', '{"cidr":"10.0.0.0/30","allocations":[0,"x"],"unallocated":[]}'), /IPAM object .*: field allocations/);
});

test('ipam block: assign takes from the front; release appends to the end; attributes are shared and cleaned up', () => {
  let b = newBlock(parseCidr('10.65.1.0/29'), 'host:node-a');
  const a = assignFromBlock(b, 2, 'h1', { pod: 'p1' });
  assert.deepEqual(a.addrs.map(ip4), ['10.65.1.0', '10.65.1.1']);
  b = a.block;
  assert.deepEqual(b.allocations.slice(0, 3), [0, 0, null]);
  assert.deepEqual(b.attributes, [{ handle_id: 'h1', secondary: { pod: 'p1' } }]);
  assert.equal(b.sequenceNumber, 1);
  b = assignFromBlock(b, 1, 'h2', null).block;
  assert.deepEqual(b.attributes[1], { handle_id: 'h2', secondary: null });
  b = assignFromBlock(b, 1, 'h1', { pod: 'p1' }).block; // reuses attribute 0
  assert.equal(b.attributes.length, 2);
  assert.deepEqual(b.unallocated, [4, 5, 6, 7]);

  const r = releaseHandleFromBlock(b, 'h1');
  assert.deepEqual(r.released.map((x) => ip4(x.addr)), ['10.65.1.0', '10.65.1.1', '10.65.1.3']);
  b = r.block;
  assert.deepEqual(b.unallocated, [4, 5, 6, 7, 0, 1, 3]);
  assert.deepEqual(b.attributes, [{ handle_id: 'h2', secondary: null }], 'h1\'s attribute is gone, h2\'s renumbered');
  assert.equal(b.allocations[2], 0);
  assert.equal(allocationOf(b, '10.65.1.2')?.handleId, 'h2');
  assert.equal(allocationOf(b, '10.65.1.0'), undefined);
  assert.deepEqual(blockProblems(b), []);

  const none = releaseAddrsFromBlock(b, [0n, 0x0a410102n, 0x0a410102n]);
  assert.deepEqual(none.released.map((x) => [ip4(x.addr), x.handleId]), [['10.65.1.2', 'h2']]);
  assert.deepEqual(none.block.attributes, []);
  assert.equal(assignFromBlock(none.block, 20, 'h3', null).addrs.length, 8, 'a block hands out what it has');
});

test('ipam block: random assign/release sequences keep the block consistent', () => {
  fc.assert(
    fc.property(fc.array(fc.tuple(fc.boolean(), fc.integer({ min: 0, max: 4 }), fc.integer({ min: 1, max: 3 })), { maxLength: 60 }), (ops) => {
      let b = newBlock(parseCidr('10.0.0.0/28'), null);
      const held = new Map<string, number>();
      for (const [assign, h, n] of ops) {
        const handle = `h${h}`;
        if (assign) {
          const r = assignFromBlock(b, n, handle, { n: String(h) });
          b = r.block;
          held.set(handle, (held.get(handle) ?? 0) + r.addrs.length);
        } else {
          const r = releaseHandleFromBlock(b, handle);
          assert.equal(r.released.length, held.get(handle) ?? 0);
          held.delete(handle);
          b = r.block;
        }
        assert.deepEqual(blockProblems(b), []);
        assert.equal(blockAllocations(b).length, [...held.values()].reduce((x, y) => x + y, 0));
      }
    }),
  );
});

test('ipam consistency: blocks and handles must agree', () => {
  const b = assignFromBlock(newBlock(parseCidr('10.65.1.0/30'), 'host:a'), 2, 'h1', null).block;
  assert.deepEqual(consistencyProblems([b], [{ handleID: 'h1', block: { '10.65.1.0/30': 2 }, deleted: false }]), []);
  assert.deepEqual(consistencyProblems([b], [{ handleID: 'h1', block: { '10.65.1.0/30': 1 } , deleted: false }]), ['handle h1: records 1 address(es) in block 10.65.1.0/30, the block holds 2']);
  assert.deepEqual(consistencyProblems([b], []), ['handle h1: holds 2 address(es) in block(s) 10.65.1.0/30 but has no handle object']);
  const broken = { ...b, unallocated: [2, 3, 0] };
  assert.ok(blockProblems(broken).some((p) => /ordinal 0 is allocated and also listed as unallocated/.test(p)));
  const h = { handleID: 'k8s-pod-network.x', block: { '10.65.1.0/26': 1 }, deleted: false };
  assert.deepEqual(decodeHandle('/calico/ipam/v2/handle/k8s-pod-network.x', encodeHandle(h)), h);
  assert.deepEqual(decodeAffinity('k', encodeAffinity({ state: 'pending', deleted: false })), { state: 'pending', deleted: false });
  assert.deepEqual(decodeAffinity('k', '{}'), { state: 'confirmed', deleted: false });
  assert.throws(() => decodeAffinity('k', '{"state":"maybe"}'), /field state: 'maybe'/);
});

test('ipam check: leaks and endpoint addresses without allocation', () => {
  const allocations = [
    { ip: '10.65.1.1', handleId: 'net.a', attributes: {}, block: '10.65.1.0/26' },
    { ip: '10.65.1.2', handleId: 'net.gone', attributes: {}, block: '10.65.1.0/26' },
    { ip: '10.65.1.3', handleId: 'vxlan-tunnel-addr-node-a', attributes: {}, block: '10.65.1.0/26' },
  ];
  const eps = [
    endpointIps('default', 'a', JSON.stringify({ metadata: { name: 'a', namespace: 'default' }, spec: { node: 'node-a', ipNetworks: ['10.65.1.1/32'] } })),
    endpointIps('default', 'b', JSON.stringify({ spec: { ipNetworks: ['10.65.9.9/32', 'fd00::0:1/128'] } })),
  ];
  assert.deepEqual(eps[1], { name: 'default/b', ips: ['10.65.9.9', 'fd00::1'] });
  const r = findLeaks(allocations, eps, ['10.65.1.3']);
  assert.deepEqual(r.leaked.map((a) => a.ip), ['10.65.1.2']);
  assert.deepEqual(r.unallocated, [{ endpoint: 'default/b', ip: '10.65.9.9' }, { endpoint: 'default/b', ip: 'fd00::1' }]);
  assert.equal(canonicalIp('fd00:0::1/128'), 'fd00::1');
  assert.equal(canonicalIp('nope'), undefined);
});

test('ctl ipam formatting: pool summary, blocks, one address', () => {
  const pools = [decodePool('default', JSON.stringify({ metadata: { name: 'default' }, spec: { cidr: '10.65.0.0/24', blockSize: 26 } }))];
  const blocks = [{ cidr: '10.65.0.64/26', affinity: 'host:node-a', affinityState: 'confirmed' as const, allocated: 16, size: 64, pool: 'default' }];
  assert.equal(formatShow(pools, blocks, false), [
    'GROUPING          CIDR           IPS TOTAL   IPS IN USE   IPS FREE',
    'IP Pool default   10.65.0.0/24   256         16 (6.3%)    240 (93.8%)',
  ].join('\n'));
  const wide = formatShow(pools, blocks, true).split('\n');
  assert.match(wide[2]!, /^ {2}Block\s+10\.65\.0\.64\/26\s+64\s+16 \(25%\)\s+48 \(75%\)\s+host:node-a\s+confirmed$/);
  assert.equal(formatIp('10.65.0.70', undefined), 'IP 10.65.0.70 is not assigned');
  assert.equal(formatIp('10.65.0.70', { ip: '10.65.0.70', handleId: 'h', attributes: { pod: 'p', namespace: 'ns' }, block: '10.65.0.64/26' }), [
    'IP 10.65.0.70 is in use', '  Block:   10.65.0.64/26', '  Handle:  h', '  Attributes:', '    namespace: ns', '    pod: p',
  ].join('\n'));
});
