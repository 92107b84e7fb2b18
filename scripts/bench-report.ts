/**
 * DOC: the one benchmark report of `npm run bench` (scripts/bench --report). Reads what a run left
 * in its results directory: figures.jsonl (the records every scripts/bench-*.ts appends through
 * scripts/bench-record.ts) and runs.jsonl (one line per suite run, written by scripts/bench: the
 * command, exit code, duration, load average, log file), and writes bench-report.md (routecat's
 * figures beside the reference run and the ratio, a table per suite) and bench-report.json (the
 * same data). Pure functions below the CLI, so tests/unit/bench-report.test.ts checks the tables
 * from fixed records. Measures nothing and judges nothing: no pass/fail.
 *
 *   node --import tsx scripts/bench-report.ts --dir bench-results [--mode quick|full]
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { toFigure, type BenchFigure } from './bench-record.ts';

/** One suite run by scripts/bench (one line of runs.jsonl). */
export interface SuiteRun {
  /** e.g. `node/iptables`, `proxy`. */
  readonly suite: string;
  readonly command: string;
  readonly exit: number;
  readonly seconds: number;
  /** 1-minute load average before and after the run. */
  readonly loadBefore: number;
  readonly loadAfter: number;
  /** The run's output, relative to the results directory. */
  readonly log: string;
}

export interface ReportMeta {
  readonly generatedAt: string;
  readonly mode: 'quick' | 'full';
  readonly commit: string;
  readonly node: string;
  readonly cores: number;
  readonly loadAtEnd: readonly number[];
}

export interface SuiteSection {
  readonly suite: string;
  readonly figures: readonly BenchFigure[];
}

export interface BenchReport {
  readonly meta: ReportMeta;
  readonly runs: readonly SuiteRun[];
  readonly suites: readonly SuiteSection[];
}

/** One JSON value per non-empty line; a broken line (a run killed mid-write) is skipped, not fatal. */
export function parseJsonLines(text: string): { values: unknown[]; skipped: number } {
  const values: unknown[] = [];
  let skipped = 0;
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    try {
      values.push(JSON.parse(line));
    } catch {
      skipped++;
    }
  }
  return { values, skipped };
}

function isFigure(v: unknown): v is BenchFigure {
  const f = v as Partial<BenchFigure> | null;
  return typeof f === 'object' && f !== null && typeof f.suite === 'string' && typeof f.metric === 'string' && typeof f.unit === 'string' && typeof f.referenceName === 'string';
}

/** Groups the figures by suite (suites in run order, then any others in order of appearance). */
export function buildReport(meta: ReportMeta, runs: readonly SuiteRun[], records: readonly unknown[]): BenchReport {
  // The ratio is recomputed here, so a record carries no ratio of its own making.
  const figures = records.filter(isFigure).map((f) => toFigure({ ...f, routecat: f.routecat ?? null, reference: f.reference ?? null }));
  const order: string[] = [];
  for (const s of [...runs.map((r) => r.suite), ...figures.map((f) => f.suite)]) if (!order.includes(s)) order.push(s);
  const suites = order.map((suite) => ({ suite, figures: figures.filter((f) => f.suite === suite) }));
  return { meta, runs, suites };
}

/** 12,345 / 123.4 / 1.23 / 0.0123; `-` for a missing figure. */
export function formatNumber(x: number | null): string {
  if (x === null || !Number.isFinite(x)) return '-';
  const a = Math.abs(x);
  const digits = a >= 100 || Number.isInteger(x) ? 0 : a >= 10 ? 1 : a >= 0.1 ? 2 : 4;
  return x.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

export function formatRatio(r: number | null): string {
  if (r === null || !Number.isFinite(r)) return '-';
  return `${r >= 100 ? r.toFixed(0) : r.toFixed(2)}x`;
}

const cell = (s: string): string => s.replace(/\|/g, '\\|').replace(/\n/g, ' ');

function figureRow(f: BenchFigure): string {
  const better = f.better ? ` (${f.better} is better)` : '';
  const reference = f.reference === null && f.referenceName === 'none' ? '-' : `${formatNumber(f.reference)} (${f.referenceName})`;
  return `| ${cell(f.metric)}${f.note ? ` - ${cell(f.note)}` : ''} | ${cell(f.unit)}${better} | ${formatNumber(f.routecat)} | ${cell(reference)} | ${formatRatio(f.ratio)} |`;
}

export function renderMarkdown(report: BenchReport): string {
  const { meta } = report;
  const out: string[] = [
    '# routecat benchmark report',
    '',
    `${meta.mode === 'quick' ? 'Quick run (small sizes: `npm run bench -- --quick`)' : 'Full run (`npm run bench`)'}, ${meta.generatedAt}, commit ${meta.commit}, node ${meta.node}, ${meta.cores} cores; load average at the end ${meta.loadAtEnd.map((x) => x.toFixed(2)).join(' ')}.`,
    'Figures only, never pass/fail: each is routecat beside a reference measured in the same run on the same host, and the ratio routecat/reference (read it with the "better" direction: for a time, below 1 is faster than the reference). The cores are shared by everything the benchmark starts (and by whatever else the host runs), so the load average is printed beside each suite.',
    '',
    '## Runs',
    '',
    '| suite | command | result | time | load before -> after | output |',
    '|---|---|---|--:|---|---|',
    ...report.runs.map((r) => `| ${cell(r.suite)} | \`${cell(r.command)}\` | ${r.exit === 0 ? 'ok' : `**failed (exit ${r.exit})**`} | ${formatDuration(r.seconds)} | ${r.loadBefore.toFixed(2)} -> ${r.loadAfter.toFixed(2)} | ${cell(r.log)} |`),
  ];
  for (const s of report.suites) {
    out.push('', `## ${s.suite}`, '');
    const run = report.runs.find((r) => r.suite === s.suite);
    if (run && run.exit !== 0) out.push(`The run failed (exit ${run.exit}); the figures below are what it recorded before that. Its output: ${run.log}.`, '');
    if (s.figures.length === 0) {
      out.push('No figures recorded.');
      continue;
    }
    out.push('| metric | unit | routecat | reference | routecat/reference |', '|---|---|--:|--:|--:|', ...s.figures.map(figureRow));
  }
  return `${out.join('\n')}\n`;
}

export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds)) return '-';
  if (seconds < 60) return `${seconds.toFixed(0)} s`;
  return `${Math.floor(seconds / 60)} min ${String(Math.round(seconds % 60)).padStart(2, '0')} s`;
}

// --- CLI -------------------------------------------------------------------------------------------

function readLines(file: string): unknown[] {
  if (!existsSync(file)) return [];
  const { values, skipped } = parseJsonLines(readFileSync(file, 'utf8'));
  if (skipped > 0) process.stderr.write(`bench-report: skipped ${skipped} unreadable line(s) of ${file}\n`);
  return values;
}

function main(): void {
  const { values } = parseArgs({ options: { dir: { type: 'string', default: 'bench-results' }, mode: { type: 'string', default: 'full' } } });
  const dir = resolve(values.dir!);
  const mode = values.mode === 'quick' ? 'quick' : 'full';
  let commit = 'unknown';
  try {
    commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    // not a checkout
  }
  const meta: ReportMeta = { generatedAt: new Date().toISOString(), mode, commit, node: process.version, cores: cpus().length, loadAtEnd: loadavg() };
  const report = buildReport(meta, readLines(join(dir, 'runs.jsonl')) as SuiteRun[], readLines(join(dir, 'figures.jsonl')));
  writeFileSync(join(dir, 'bench-report.json'), `${JSON.stringify(report, null, 2)}\n`);
  writeFileSync(join(dir, 'bench-report.md'), renderMarkdown(report));
  const n = report.suites.reduce((a, s) => a + s.figures.length, 0);
  console.log(`bench-report: ${n} figures from ${report.runs.length} runs -> ${join(dir, 'bench-report.md')} and bench-report.json`);
}

if (process.argv[1] && resolve(process.argv[1]) === import.meta.filename) main();
