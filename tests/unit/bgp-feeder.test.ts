/**
 * The BGP bench's feeder (scripts/bench-bgp.ts): its pre-encoded UPDATEs decode back, with the
 * routecat codec, to exactly the N /32s in order, each UPDATE with the one attribute set (ORIGIN
 * IGP, empty AS_PATH, NEXT_HOP the feeder, LOCAL_PREF 100), packed close to the 4096-octet limit,
 * followed by an IPv4 End-of-RIB; and the receivers' byte-walking PrefixTally counts what the
 * codec encodes.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { decodeMessage, encodeMessage, endOfRibFamily, Framer, packUpdates } from '../../src/bgp/codec/index.ts';
import type { UpdateMessage } from '../../src/bgp/types.ts';
import { buildFeed, FEED_BASE, FEED_CODEC, feedPrefix, PrefixTally } from '../../scripts/bench-bgp.ts';

const NEXT_HOP = '10.201.0.10';

function decodeUpdate(frame: Buffer): UpdateMessage {
  const m = decodeMessage(frame, FEED_CODEC);
  assert.equal(m.type, 'update');
  return m as UpdateMessage;
}

describe('bench-bgp feeder', () => {
  for (const n of [1, 809, 810, 811, 20_000]) {
    test(`${n} prefixes: the UPDATEs decode to exactly them, with the feed's attributes`, () => {
      const feed = buildFeed(n, NEXT_HOP);
      const got: string[] = [];
      for (const frame of feed.updates) {
        assert.ok(frame.length <= 4096, `UPDATE of ${frame.length} octets`);
        const u = decodeUpdate(frame);
        assert.equal(u.handling, undefined);
        assert.deepEqual(u.withdrawn, []);
        assert.equal(u.mpReach, undefined);
        assert.equal(u.mpUnreach, undefined);
        assert.deepEqual(u.attributes, { origin: 0, asPath: [], nextHop: NEXT_HOP, localPref: 100 });
        for (const x of u.nlri) {
          assert.equal(x.pathId, undefined);
          got.push(x.prefix);
        }
      }
      assert.equal(got.length, n);
      for (let i = 0; i < n; i++) if (got[i] !== feedPrefix(i)) assert.fail(`prefix #${i} is ${got[i]}, want ${feedPrefix(i)}`);
      assert.equal(new Set(got).size, n);
      // ~810 per UPDATE: every UPDATE but the last is full.
      assert.equal(feed.updates.length, Math.ceil(n / 810));
      assert.equal(endOfRibFamily(decodeUpdate(feed.endOfRib)), 'ipv4-unicast');
    });
  }

  test('the first and last prefixes of a 1,000,000 feed', () => {
    assert.equal(feedPrefix(0), `${FEED_BASE}/32`);
    assert.equal(feedPrefix(999_999), '100.79.66.63/32');
  });

  test('out-of-range sizes are refused', () => {
    assert.throws(() => buildFeed(0, NEXT_HOP), /feed size 0/);
    assert.throws(() => buildFeed((1 << 22) + 1, NEXT_HOP), /feed size/);
  });

  test('PrefixTally counts the feed as framed from one byte stream, and End-of-RIB', () => {
    const n = 5_000;
    const feed = buildFeed(n, NEXT_HOP);
    const stream = Buffer.concat([...feed.updates, feed.endOfRib]);
    const tally = new PrefixTally(n);
    const framer = new Framer();
    // Odd-sized chunks, so that frames are split across reads.
    for (let p = 0; p < stream.length; p += 1_237) for (const f of framer.push(stream.subarray(p, p + 1_237))) tally.update(f);
    assert.equal(tally.present, n);
    assert.ok(tally.complete);
    assert.equal(tally.foreign, 0);
    assert.ok(tally.endOfRib);
  });

  test('PrefixTally: duplicates count once, withdrawals uncount, other prefixes are foreign', () => {
    const tally = new PrefixTally(10);
    const opts = FEED_CODEC;
    const ann = (prefixes: string[]): Buffer[] =>
      packUpdates({ afiSafi: 'ipv4-unicast', attributes: { origin: 0, asPath: [], localPref: 100 }, nextHop: NEXT_HOP, nlri: prefixes.map((prefix) => ({ prefix })), withdrawn: [] }, opts);
    for (const f of ann([feedPrefix(0), feedPrefix(1), feedPrefix(1), feedPrefix(10), '10.0.0.0/8'])) tally.update(f);
    assert.equal(tally.present, 2);
    assert.equal(tally.foreign, 2);
    assert.equal(tally.endOfRib, false);
    tally.update(encodeMessage({ type: 'update', withdrawn: [{ prefix: feedPrefix(0) }], attributes: {}, nlri: [] }, opts));
    assert.equal(tally.present, 1);
    assert.equal(tally.endOfRib, false);
  });
});
