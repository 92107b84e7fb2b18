/**
 * `routecat status` text: the agent summary, then calicoctl-style "IPv4 BGP status" /
 * "IPv6 BGP status" boxed tables with prefix counts; the reflector's shorter form; SINCE as a time
 * of day within 24 hours.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { boxTable, formatBgpStatus, formatSince, formatStatus, type BgpStatusDoc } from '../../src/cli/status.ts';

const now = new Date('2026-03-01T12:00:00Z');
const since = new Date('2026-03-01T11:30:05Z');
const hhmmss = (d: Date) => [d.getHours(), d.getMinutes(), d.getSeconds()].map((n) => String(n).padStart(2, '0')).join(':');

const bgp: BgpStatusDoc = {
  state: 'running',
  restarting: false,
  fibSynced: true,
  problems: [{ key: 'BGPPeer/secret', reason: "BGPPeer 'secret' has a password" }],
  speaker: {
    asn: 64512,
    routerId: '10.0.0.1',
    locRib: { 'ipv4-unicast': 3, 'ipv6-unicast': 1 },
    localRoutes: 2,
    peers: [
      { address: '10.0.0.2', port: 179, kind: 'mesh', state: 'Established', since: since.toISOString(), info: '', prefixesReceived: 2, prefixesAdvertised: 2 },
      { address: '10.0.0.254', port: 1179, kind: 'global', state: 'Active', since: '2026-02-20T00:00:00Z', info: 'connection refused', prefixesReceived: 0, prefixesAdvertised: 0 },
    ],
  },
};

test('formatSince: time of day within 24 h, else the date', () => {
  assert.equal(formatSince(since.toISOString(), now), hhmmss(since));
  assert.match(formatSince('2026-02-20T12:00:00Z', now), /^2026-02-2\d$/);
  assert.equal(formatSince(undefined, now), '');
});

test('boxTable: centred headers, padded cells, right-aligned numbers', () => {
  assert.deepEqual(boxTable(['A', 'NUM'], [['xyz', '7']], new Set([1])), [
    '+-----+-----+',
    '|  A  | NUM |',
    '+-----+-----+',
    '| xyz |   7 |',
    '+-----+-----+',
  ]);
});

test('BGP sections like calicoctl node status, with RECEIVED / ADVERTISED', () => {
  const lines = formatBgpStatus(bgp, now);
  assert.equal(lines[0], 'BGP: AS 64512, router id 10.0.0.1; 2 local routes; Loc-RIB 3 ipv4-unicast, 1 ipv6-unicast');
  const text = lines.join('\n');
  assert.ok(text.includes('IPv4 BGP status'));
  assert.match(text, /\|\s+PEER ADDRESS\s+\|\s+PEER TYPE\s+\| +STATE +\| +SINCE +\| +INFO +\| RECEIVED \| ADVERTISED \|/);
  const mesh = lines.find((l) => l.startsWith('| 10.0.0.2 '))!;
  assert.deepEqual(mesh.split('|').map((c) => c.trim()).slice(1, -1), ['10.0.0.2', 'node-to-node mesh', 'Established', hhmmss(since), '', '2', '2']);
  const tor = lines.find((l) => l.startsWith('| 10.0.0.254:1179'))!;
  assert.deepEqual(tor.split('|').map((c) => c.trim()).slice(1, -1), ['10.0.0.254:1179', 'global', 'Active', formatSince('2026-02-20T00:00:00Z', now), 'connection refused', '0', '0']);
  assert.ok(text.includes('IPv6 BGP status\nNo IPv6 peers found.'));
  assert.ok(text.includes("skipped BGPPeer/secret: BGPPeer 'secret' has a password"));
});

test('IPv6 peers go to their own table; a speaker that is not running says why', () => {
  const v6 = formatBgpStatus({ speaker: { asn: 1, routerId: '1.1.1.1', peers: [{ address: 'fd00::2', port: 1790, kind: 'rr-client', state: 'Established', since: since.toISOString(), prefixesReceived: 5, prefixesAdvertised: 1 }] } }, now).join('\n');
  assert.ok(v6.includes('IPv4 BGP status\nNo IPv4 peers found.'));
  assert.match(v6, /\| \[fd00::2\]:1790 \| route reflector client \| Established \|/);
  assert.equal(formatBgpStatus({ state: 'disabled', reason: "Node 'a' has no BGP address" })[0], "BGP: disabled (Node 'a' has no BGP address)");
});

test('formatStatus: agent summary then BGP; reflector form; policy-only node', () => {
  const node = formatStatus({ node: 'a', version: '0.1.0', ready: true, datastore: { status: 'InSync', resyncs: 1 }, dataplane: 'iptables', endpoints: [], bgp }, now);
  assert.ok(node.startsWith("routecat node 'a' (0.1.0): ready"));
  assert.ok(node.indexOf('Local endpoints') < node.indexOf('IPv4 BGP status'));
  const rr = formatStatus({ role: 'reflector', node: 'rr1', version: '0.1.0', ready: true, datastore: { status: 'InSync' }, bgp }, now);
  assert.ok(rr.startsWith("routecat reflector 'rr1' (0.1.0): ready"));
  assert.ok(!rr.includes('dataplane'));
  assert.ok(rr.includes('IPv4 BGP status'));
  assert.ok(formatStatus({ node: 'a', ready: true }, now).includes('BGP: not running (policy only)'));
});
