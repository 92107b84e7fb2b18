/**
 * Runs one external command (iptables-restore, ipset, nft, ...) with optional stdin and a
 * timeout, and captures stdout/stderr. This module owns process spawning for the dataplanes and
 * nothing else: it never builds rule text and never interprets output beyond the exit status.
 * A failure is a CommandError that names the command, its exit status and its stderr.
 */
import { spawn } from 'node:child_process';
import { RoutecatError } from '../../errors.ts';

export interface CommandResult {
  readonly stdout: string;
  readonly stderr: string;
}

/** Everything a dataplane runs goes through this, so tests can record scripts with a fake. */
export interface CommandRunner {
  run(cmd: string, args: string[], stdin?: string): Promise<CommandResult>;
}

/** A command exited non-zero, was killed by the timeout, or could not be started. */
export class CommandError extends RoutecatError {
  readonly command: string;
  readonly args: readonly string[];
  readonly exitCode: number | null;
  readonly signal: string | null;
  readonly stdout: string;
  readonly stderr: string;
  readonly timedOut: boolean;
  constructor(init: {
    command: string;
    args: readonly string[];
    exitCode: number | null;
    signal: string | null;
    stdout: string;
    stderr: string;
    timedOut: boolean;
    cause?: unknown;
  }) {
    const line = [init.command, ...init.args].join(' ');
    const how = init.timedOut
      ? 'timed out'
      : init.exitCode !== null
        ? `exited ${init.exitCode}`
        : init.signal
          ? `killed by ${init.signal}`
          : 'failed to start';
    const detail = init.stderr.trim() || (init.cause instanceof Error ? init.cause.message : '');
    super('E_COMMAND', `command '${line}' ${how}${detail ? `: ${detail}` : ''}`, { cause: init.cause });
    this.name = 'CommandError';
    this.command = init.command;
    this.args = init.args;
    this.exitCode = init.exitCode;
    this.signal = init.signal;
    this.stdout = init.stdout;
    this.stderr = init.stderr;
    this.timedOut = init.timedOut;
  }
}

export interface RunOptions {
  readonly stdin?: string;
  /** Kill the process (SIGKILL) after this long; default 30 s. */
  readonly timeoutMs?: number;
}

/** Run `cmd args...`, resolve with its output on exit status 0, reject with CommandError otherwise. */
export function runCommand(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<CommandResult> {
  const timeoutMs = opts.timeoutMs ?? 30_000;
  return new Promise((resolve, reject) => {
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    let settled = false;
    const child = spawn(cmd, [...args], { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, LC_ALL: 'C' } });
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    const fail = (exitCode: number | null, signal: string | null, cause?: unknown): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      reject(new CommandError({ command: cmd, args, exitCode, signal, stdout, stderr, timedOut, cause }));
    };
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', (err) => fail(null, null, err));
    child.on('close', (code, signal) => {
      if (settled) return;
      if (code === 0 && !timedOut) {
        settled = true;
        clearTimeout(timer);
        resolve({ stdout, stderr });
      } else {
        fail(code, signal);
      }
    });
    // A command that exits before reading stdin makes the pipe raise EPIPE; the exit status says more.
    child.stdin.on('error', () => undefined);
    child.stdin.end(opts.stdin ?? '');
  });
}

export interface ExecRunnerOptions {
  /**
   * Words put in front of every command, e.g. `['ip', 'netns', 'exec', 'lab-host']` to run the
   * dataplane inside a network namespace.
   */
  readonly prefix?: readonly string[];
  readonly timeoutMs?: number;
}

/** The real CommandRunner. */
export function createExecRunner(opts: ExecRunnerOptions = {}): CommandRunner {
  const prefix = opts.prefix ?? [];
  return {
    run(cmd, args, stdin) {
      const full = [...prefix, cmd, ...args];
      return runCommand(full[0], full.slice(1), { stdin, timeoutMs: opts.timeoutMs });
    },
  };
}
