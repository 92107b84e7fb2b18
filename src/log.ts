/**
 * The program's logger: consola, to stderr, with child loggers per component (a tag).
 * Never logs secrets: configuration values marked secret are redacted before they get here.
 */
import { createConsola, type ConsolaInstance } from 'consola';

export type LogLevel = 'debug' | 'info' | 'warn' | 'error' | 'silent';

const LEVELS: Record<LogLevel, number> = { debug: 4, info: 3, warn: 1, error: 0, silent: -999 };

export const rootLogger: ConsolaInstance = createConsola({
  level: LEVELS.info,
  stdout: process.stderr,
  stderr: process.stderr,
  formatOptions: { date: true, colors: false, compact: true },
});

export function setLogLevel(level: LogLevel): void {
  rootLogger.level = LEVELS[level] ?? LEVELS.info;
}

export function logger(tag: string): ConsolaInstance {
  return rootLogger.withTag(tag);
}

export type Logger = ConsolaInstance;
