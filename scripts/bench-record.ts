/**
 * DOC: the machine-readable side of the bench scripts. Each scripts/bench-*.ts calls
 * `recordFigures` where it prints its table; when ROUTECAT_BENCH_JSON names a file (scripts/bench
 * --report sets it) every figure is appended there as one JSON line, which scripts/bench-report.ts
 * assembles into bench-results/bench-report.{md,json}. Without the variable it does nothing, so
 * a suite run by hand prints exactly what it printed before. Owns that file format; never reads it.
 */
import { appendFileSync } from 'node:fs';

/** One figure of routecat beside one reference measured in the same run. */
export interface BenchFigure {
  /** e.g. `proxy`, `node/iptables`, `bgp`. */
  readonly suite: string;
  /** What was measured, e.g. `serializable reads, 64 clients: throughput`. */
  readonly metric: string;
  readonly routecat: number | null;
  readonly reference: number | null;
  /** What the reference is, e.g. `etcd direct`, `BIRD 2.0.12`, `kernel floor: ip -batch`. */
  readonly referenceName: string;
  /** e.g. `ms`, `reads/s`, `MB`, `count`. */
  readonly unit: string;
  /** routecat / reference, null when either is missing or the reference is 0. */
  readonly ratio: number | null;
  /** Which direction is better, so a reader knows whether a ratio above 1 is good. */
  readonly better?: 'lower' | 'higher';
  readonly note?: string;
}

export type FigureInput = Omit<BenchFigure, 'ratio'>;

export function ratioOf(routecat: number | null, reference: number | null): number | null {
  if (routecat === null || reference === null || !Number.isFinite(routecat) || !Number.isFinite(reference) || reference === 0) return null;
  return routecat / reference;
}

export function toFigure(f: FigureInput): BenchFigure {
  const clean = (x: number | null): number | null => (x === null || !Number.isFinite(x) ? null : x);
  const routecat = clean(f.routecat);
  const reference = clean(f.reference);
  return { ...f, routecat, reference, ratio: ratioOf(routecat, reference) };
}

/** Appends the figures to $ROUTECAT_BENCH_JSON (one JSON object a line); a no-op when it is unset. */
export function recordFigures(figures: readonly FigureInput[], env: NodeJS.ProcessEnv = process.env): void {
  const file = env.ROUTECAT_BENCH_JSON;
  if (!file || figures.length === 0) return;
  appendFileSync(file, figures.map((f) => `${JSON.stringify(toFigure(f))}\n`).join(''));
}
