/**
 * Block IPAM's address arithmetic and key layout: ordinals <-> addresses, a pool's blocks,
 * Calico's block naming, keys, and pool selection. Pure and fast.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  addrToOrdinal, blockCidrFromName, blockCount, blockName, blockOf, cidrContains, formatAddr, formatCidr, hostStartIndex,
  nthBlock, ordinalToAddr, parseAddr, parseCidr, poolBlocks,
} from '../../src/ipam/block-math.ts';
import {
  affinityKey, blockKey, decodeIpamConfig, handleKey, parseAffinityKey, parseBlockKey,
} from '../../src/ipam/keys.ts';
import { decodePool, selectPools } from '../../src/ipam/pools.ts';
import { IpamRequestError } from '../../src/ipam/errors.ts';

test('ipam math: parse and format addresses and CIDRs', () => {
  assert.deepEqual(parseAddr('10.65.1.4'), { version: 4, value: 0x0a410104n });
  assert.equal(formatAddr(4, 0x0a410104n), '10.65.1.4');
  assert.equal(formatAddr(6, parseAddr('fd00:0:0::04')!.value), 'fd00::4');
  assert.equal(parseAddr('10.65.1'), undefined);
  assert.equal(formatCidr(parseCidr('10.65.1.7/26')), '10.65.1.0/26');
  assert.throws(() => parseCidr('10.65.1.7/26', true), /host bits set \(network is 10\.65\.1\.0\/26\)/);
  assert.throws(() => parseCidr('10.0.0.0/33'), (e: unknown) => e instanceof IpamRequestError && /invalid CIDR '10\.0\.0\.0\/33': prefix must be 0-32/.test(e.message));
  assert.equal(formatCidr(parseCidr('fd00:65:0:0:0:0:0:0/48')), 'fd00:65::/48');
  assert.ok(cidrContains(parseCidr('10.65.0.0/16'), parseCidr('10.65.3.0/26')));
  assert.ok(!cidrContains(parseCidr('10.65.3.0/26'), parseCidr('10.65.0.0/16')));
  assert.ok(!cidrContains(parseCidr('10.65.0.0/16'), parseCidr('fd00::/120')));
});

test('ipam math: ordinals <-> addresses within a block', () => {
  const b = parseCidr('10.65.1.64/26');
  assert.equal(formatAddr(4, ordinalToAddr(b, 0)), '10.65.1.64');
  assert.equal(formatAddr(4, ordinalToAddr(b, 63)), '10.65.1.127');
  assert.throws(() => ordinalToAddr(b, 64), /ordinal 64 is outside block 10\.65\.1\.64\/26/);
  assert.equal(addrToOrdinal(b, 4, parseAddr('10.65.1.70')!.value), 6);
  assert.equal(addrToOrdinal(b, 4, parseAddr('10.65.1.128')!.value), undefined);
  const v6 = parseCidr('fd00:65::40/122');
  assert.equal(formatAddr(6, ordinalToAddr(v6, 5)), 'fd00:65::45');
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 2 ** 26 - 1 }), fc.integer({ min: 16, max: 32 }), fc.nat(), (blockIndex, prefix, raw) => {
      const block = { version: 4 as const, base: (BigInt(blockIndex) << BigInt(32 - prefix)) & 0xffffffffn, prefix };
      const size = 2 ** (32 - prefix);
      const ord = raw % size;
      const addr = ordinalToAddr(block, ord);
      assert.equal(addrToOrdinal(block, 4, addr), ord);
      assert.deepEqual(blockOf(4, addr, prefix), block);
    }),
  );
});

test('ipam math: a pool\'s blocks, lazily and wrapping from a start', () => {
  const pool = parseCidr('10.65.0.0/22');
  assert.equal(blockCount(pool, 26), 16n);
  const all = [...poolBlocks(pool, 26)].map(formatCidr);
  assert.equal(all.length, 16);
  assert.equal(all[0], '10.65.0.0/26');
  assert.equal(all[1], '10.65.0.64/26');
  assert.equal(all[15], '10.65.3.192/26');
  assert.deepEqual([...poolBlocks(pool, 26, 14n)].map(formatCidr).slice(0, 3), ['10.65.3.128/26', '10.65.3.192/26', '10.65.0.0/26']);
  // An IPv6 /48 of /122s has 2^74 blocks: the generator yields them one at a time.
  const v6 = parseCidr('fd00:65::/48');
  assert.equal(blockCount(v6, 122), 1n << 74n);
  const it = poolBlocks(v6, 122, (1n << 74n) - 1n);
  assert.equal(formatCidr(it.next().value as ReturnType<typeof nthBlock>), 'fd00:65:0:ffff:ffff:ffff:ffff:ffc0/122');
  assert.equal(formatCidr(it.next().value as ReturnType<typeof nthBlock>), 'fd00:65::/122');
  // Hosts start at different places, deterministically.
  assert.equal(hostStartIndex('node-a', pool, 26), hostStartIndex('node-a', pool, 26));
  const starts = new Set(['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h'].map((h) => hostStartIndex(`node-${h}`, pool, 26)));
  assert.ok(starts.size > 1);
  for (const s of starts) assert.ok(s >= 0n && s < 16n);
});

test('ipam keys: Calico\'s layout and block naming', () => {
  assert.equal(blockName('10.65.1.0/26'), '10.65.1.0-26');
  assert.equal(blockCidrFromName('fd00:65::40-122'), 'fd00:65::40/122');
  assert.equal(blockKey(4, '10.65.1.0/26'), '/calico/ipam/v2/assignment/ipv4/block/10.65.1.0-26');
  assert.equal(blockKey(6, 'fd00:65::40/122'), '/calico/ipam/v2/assignment/ipv6/block/fd00:65::40-122');
  assert.deepEqual(parseBlockKey('/calico/ipam/v2/assignment/ipv6/block/fd00:65::40-122'), { version: 6, cidr: 'fd00:65::40/122' });
  assert.equal(parseBlockKey('/calico/ipam/v2/assignment/ipv4/block/'), undefined);
  assert.equal(affinityKey('node-a', 4, '10.65.1.0/26'), '/calico/ipam/v2/host/node-a/ipv4/block/10.65.1.0-26');
  assert.deepEqual(parseAffinityKey('/calico/ipam/v2/host/node-a/ipv4/block/10.65.1.0-26'), { host: 'node-a', version: 4, cidr: '10.65.1.0/26' });
  assert.equal(handleKey('k8s-pod-network.abc'), '/calico/ipam/v2/handle/k8s-pod-network.abc');
});

test('ipam keys: IPAMConfig in either spelling, with Calico\'s defaults', () => {
  assert.deepEqual(decodeIpamConfig('k', null), { strictAffinity: false, autoAllocateBlocks: true, maxBlocksPerHost: 0 });
  assert.deepEqual(decodeIpamConfig('k', '{"strictAffinity":true}'), { strictAffinity: true, autoAllocateBlocks: true, maxBlocksPerHost: 0 });
  assert.deepEqual(decodeIpamConfig('k', '{"strict_affinity":true,"auto_allocate_blocks":false}'), { strictAffinity: true, autoAllocateBlocks: false, maxBlocksPerHost: 0 });
  assert.throws(() => decodeIpamConfig('/calico/ipam/v2/config', 'nope'), /IPAM object \/calico\/ipam\/v2\/config: not JSON/);
});

const pool = (name: string, spec: Record<string, unknown>) => decodePool(name, JSON.stringify({ metadata: { name }, spec }));

test('ipam pools: defaults, validation and selection', () => {
  assert.equal(pool('a', { cidr: '10.65.0.0/16' }).blockSize, 26);
  assert.equal(pool('b', { cidr: 'fd00::/48' }).blockSize, 122);
  assert.throws(() => pool('c', { cidr: '10.65.0.0/16', blockSize: 12 }), /IPPool 'c': blockSize 12 must be between the pool prefix \/16 and 32/);
  assert.throws(() => pool('d', { cidr: '10.65.0.0/36' }), /IPPool 'd': invalid CIDR/);
  const pools = [
    pool('z-v4', { cidr: '10.70.0.0/16' }),
    pool('a-v4', { cidr: '10.60.0.0/16' }),
    pool('off', { cidr: '10.80.0.0/16', disabled: true }),
    pool('rack', { cidr: '10.90.0.0/16', nodeSelector: 'rack == "r1"' }),
    pool('manual', { cidr: '10.95.0.0/16', assignmentMode: 'Manual' }),
    pool('v6', { cidr: 'fd00::/48' }),
  ];
  assert.deepEqual(selectPools(pools, 4, {}).map((p) => p.name), ['a-v4', 'z-v4']);
  assert.deepEqual(selectPools(pools, 4, { rack: 'r1' }).map((p) => p.name), ['a-v4', 'z-v4', 'rack']);
  assert.deepEqual(selectPools(pools, 6, {}).map((p) => p.name), ['v6']);
  assert.deepEqual(selectPools(pools, 4, {}, ['rack', '10.95.0.0/16']).map((p) => p.name), ['rack', 'manual']);
  assert.throws(() => selectPools(pools, 4, {}, ['off']), /requested IPv4 pool 'off' does not exist or is disabled/);
  assert.throws(() => selectPools(pools, 4, {}, ['v6']), /requested IPv4 pool 'v6'/);
});
