/**
 * The benchmark report assembler (scripts/bench-report.ts): from fixed figure records and suite
 * runs it writes one markdown table per suite with routecat, the reference and the ratio; it
 * recomputes ratios, keeps missing figures visible, groups suites in run order, marks failed runs,
 * and a record appended by scripts/bench-record.ts reads back the same. Tests the code, not figures.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildReport, formatNumber, formatRatio, parseJsonLines, renderMarkdown, type ReportMeta, type SuiteRun } from '../../scripts/bench-report.ts';
import { recordFigures } from '../../scripts/bench-record.ts';

const meta: ReportMeta = { generatedAt: '2026-12-02T15:00:00.000Z', mode: 'quick', commit: 'abc1234', node: 'v20.19.0', cores: 2, loadAtEnd: [1.5, 1.25, 1] };

const runs: SuiteRun[] = [
  { suite: 'proxy', command: 'scripts/bench-proxy.ts --puts 30 --seconds 3', exit: 0, seconds: 95, loadBefore: 0.5, loadAfter: 1.75, log: 'proxy.log' },
  { suite: 'fib', command: 'scripts/bench-fib.ts --sizes 20000', exit: 1, seconds: 12, loadBefore: 1.75, loadAfter: 1.5, log: 'fib.log' },
];

const records = [
  // A ratio in the record is ignored: the assembler computes routecat/reference itself.
  { suite: 'fib', metric: '20000 /32 routes into the kernel FIB', routecat: 1.5, reference: 0.5, referenceName: 'kernel floor: `ip -batch`', unit: 's', ratio: 99, better: 'lower' },
  { suite: 'proxy', metric: 'serializable reads: throughput', routecat: 4850, reference: 9700, referenceName: 'etcd direct', unit: 'reads/s', ratio: null, better: 'higher' },
  { suite: 'proxy', metric: 'upstream watchers', routecat: 1, reference: 1000, referenceName: 'etcd direct', unit: 'count', ratio: null, better: 'lower' },
  { suite: 'proxy', metric: 'proxy RSS', routecat: 120.25, reference: null, referenceName: 'etcd grpc-proxy', unit: 'MB', ratio: null },
  { suite: 'cni', metric: 'left behind: IPAM allocations', routecat: 0, reference: 0, referenceName: 'expected', unit: 'count', ratio: null, better: 'lower' },
  { suite: 'node/iptables', metric: 'agent peak RSS', routecat: 80, reference: null, referenceName: 'none', unit: 'MB', ratio: null },
  { not: 'a figure' },
];

test('bench report: one table per suite, runs first, ratio routecat/reference', () => {
  const md = renderMarkdown(buildReport(meta, runs, records));
  const lines = md.split('\n');
  const section = (name: string): string[] => {
    const at = lines.indexOf(`## ${name}`);
    assert.ok(at >= 0, `section ${name} in:\n${md}`);
    const end = lines.findIndex((l, i) => i > at && l.startsWith('## '));
    return lines.slice(at + 1, end < 0 ? undefined : end).filter((l) => l !== '');
  };
  assert.match(lines[0]!, /^# routecat benchmark report$/);
  assert.match(md, /Quick run .*2026-12-02T15:00:00.000Z, commit abc1234, node v20.19.0, 2 cores; load average at the end 1.50 1.25 1.00/);
  assert.deepEqual(section('Runs').slice(2), [
    '| proxy | `scripts/bench-proxy.ts --puts 30 --seconds 3` | ok | 1 min 35 s | 0.50 -> 1.75 | proxy.log |',
    '| fib | `scripts/bench-fib.ts --sizes 20000` | **failed (exit 1)** | 12 s | 1.75 -> 1.50 | fib.log |',
  ]);
  assert.deepEqual(section('proxy'), [
    '| metric | unit | routecat | reference | routecat/reference |',
    '|---|---|--:|--:|--:|',
    '| serializable reads: throughput | reads/s (higher is better) | 4,850 | 9,700 (etcd direct) | 0.50x |',
    '| upstream watchers | count (lower is better) | 1 | 1,000 (etcd direct) | 0.00x |',
    '| proxy RSS | MB | 120 | - (etcd grpc-proxy) | - |',
  ]);
  assert.deepEqual(section('fib'), [
    'The run failed (exit 1); the figures below are what it recorded before that. Its output: fib.log.',
    '| metric | unit | routecat | reference | routecat/reference |',
    '|---|---|--:|--:|--:|',
    '| 20000 /32 routes into the kernel FIB | s (lower is better) | 1.50 | 0.50 (kernel floor: `ip -batch`) | 3.00x |',
  ]);
  // A zero reference has no ratio; a figure with no reference shows a dash there.
  assert.equal(section('cni')[2], '| left behind: IPAM allocations | count (lower is better) | 0 | 0 (expected) | - |');
  assert.equal(section('node/iptables')[2], '| agent peak RSS | MB | 80 | - | - |');
  // Suites in run order, then the others in order of appearance.
  assert.deepEqual(lines.filter((l) => l.startsWith('## ')), ['## Runs', '## proxy', '## fib', '## cni', '## node/iptables']);
});

test('bench report: a suite that ran and recorded nothing says so; JSON has the same figures', () => {
  const report = buildReport(meta, [{ ...runs[0]!, suite: 'bgp' }], records.slice(0, 1));
  assert.deepEqual(report.suites.map((s) => [s.suite, s.figures.length]), [['bgp', 0], ['fib', 1]]);
  assert.equal(report.suites[1]!.figures[0]!.ratio, 3);
  assert.match(renderMarkdown(report), /## bgp\n\nNo figures recorded\./);
});

test('bench report: number and ratio formats', () => {
  assert.deepEqual([12345.6, 123.45, 12.345, 1.2345, 0.012345, 0, null, NaN].map(formatNumber), ['12,346', '123', '12.3', '1.23', '0.0123', '0', '-', '-']);
  assert.deepEqual([0.5, 1, 123.4, null].map(formatRatio), ['0.50x', '1.00x', '123x', '-']);
});

test('bench record: appends JSON lines to $ROUTECAT_BENCH_JSON with the ratio, nothing without it', () => {
  const dir = mkdtempSync(join(tmpdir(), 'rc-bench-record-'));
  try {
    const file = join(dir, 'figures.jsonl');
    recordFigures([{ suite: 'proxy', metric: 'm', routecat: 3, reference: 4, referenceName: 'ref', unit: 'ms', better: 'lower' }], { ROUTECAT_BENCH_JSON: file });
    recordFigures([{ suite: 'proxy', metric: 'n', routecat: NaN, reference: 4, referenceName: 'ref', unit: 'ms' }], { ROUTECAT_BENCH_JSON: file });
    recordFigures([{ suite: 'proxy', metric: 'ignored', routecat: 1, reference: 1, referenceName: 'ref', unit: 'ms' }], {});
    const { values, skipped } = parseJsonLines(`${readFileSync(file, 'utf8')}{"half a line`);
    assert.equal(skipped, 1);
    assert.deepEqual(values, [
      { suite: 'proxy', metric: 'm', routecat: 3, reference: 4, referenceName: 'ref', unit: 'ms', better: 'lower', ratio: 0.75 },
      { suite: 'proxy', metric: 'n', routecat: null, reference: 4, referenceName: 'ref', unit: 'ms', ratio: null },
    ]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
