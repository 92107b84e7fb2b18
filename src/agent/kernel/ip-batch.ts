/**
 * One long-lived `ip -force -batch -` child process to which batches of commands are written, so
 * that N route changes cost one write, not N processes.
 *
 * Completion: each batch is followed by a marker command that always fails harmlessly
 * (`link show dev rc/marker`: '/' is never allowed in an interface name). `ip` reports every failed
 * command on stderr, unbuffered and in order, as its message lines followed by
 * `Command failed -:<line>`; line numbers count every line this process has read. When the marker's
 * line number appears, every earlier command of the batch has run, and each failure is mapped back
 * to its command by line number. stdout is discarded (its buffering would make it unreliable).
 *
 * Caveat, handled by the owner (LinuxKernel): `ip` caches interface name -> index for its lifetime,
 * so after an interface is deleted and re-created (or renamed) the process must be restarted.
 * Some malformed arguments make `ip` exit(); callers validate commands, and an exit mid-batch
 * rejects the batch with E_IP_BATCH_EXITED (which commands ran is then unknown).
 *
 * This module knows nothing about routes; it never decides what to write.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { KernelError } from './kernel.ts';

const MARKER = 'link show dev rc/marker';
const FAILED_RE = /^Command failed (.*):(\d+)$/;

export interface IpBatchOptions {
  /** The `ip` executable; default `ip`. */
  readonly ipPath?: string;
  /** A batch that does not complete within this time kills the process; default 60 s. */
  readonly timeoutMs?: number;
  /** Called once per spawned process (for counters). */
  readonly onSpawn?: () => void;
  /**
   * Start a fresh process before a batch once the current one has read this many lines; default
   * 50,000. iproute2's batch mode keeps about 4 KiB per route command it ran for its lifetime
   * (1M route adds: ~4 GiB), so a long-lived writer must be recycled.
   */
  readonly recycleAfterLines?: number;
}

export interface BatchLineFailure {
  /** 0-based index into the commands of the batch. */
  readonly index: number;
  readonly command: string;
  /** `ip`'s message, e.g. `RTNETLINK answers: File exists`. */
  readonly error: string;
}

export interface BatchResult {
  readonly commands: number;
  readonly failures: readonly BatchLineFailure[];
  /** stderr text that belongs to no failed command (warnings of commands that succeeded). */
  readonly warnings: readonly string[];
  /** Whether this batch had to start a new `ip` process. */
  readonly spawned: boolean;
  readonly durationMs: number;
}

interface Pending {
  readonly commands: readonly string[];
  /** Line number (in the process's count) of the batch's first command. */
  readonly firstLine: number;
  readonly markerLine: number;
  readonly failures: BatchLineFailure[];
  readonly warnings: string[];
  readonly spawned: boolean;
  readonly started: number;
  readonly timer: ReturnType<typeof setTimeout>;
  resolve(r: BatchResult): void;
  reject(e: Error): void;
}

/** A command must be one line of plain words: no quoting, escapes or comments for `ip` to interpret. */
export function checkBatchCommand(cmd: string): void {
  if (cmd.trim() === '' || /[\r\n\\"'#]/.test(cmd)) {
    throw new KernelError('E_IP_BATCH_COMMAND', `command not allowed in an ip batch: ${JSON.stringify(cmd)}`);
  }
}

export class IpBatch {
  readonly #ipPath: string;
  readonly #timeoutMs: number;
  readonly #onSpawn: (() => void) | undefined;
  readonly #recycleAfterLines: number;
  #child: ChildProcess | undefined;
  /** Lines written to the current process. */
  #lines = 0;
  #stderrTail = '';
  /** stderr message lines seen since the last `Command failed`. */
  #pendingMessages: string[] = [];
  #current: Pending | undefined;
  /** Serializes batches: one in flight at a time. */
  #queue: Promise<unknown> = Promise.resolve();
  #closed = false;
  #spawnCount = 0;

  constructor(opts: IpBatchOptions = {}) {
    this.#ipPath = opts.ipPath ?? 'ip';
    this.#timeoutMs = opts.timeoutMs ?? 60_000;
    this.#onSpawn = opts.onSpawn;
    this.#recycleAfterLines = opts.recycleAfterLines ?? 50_000;
  }

  get spawnCount(): number {
    return this.#spawnCount;
  }

  /** Runs the commands as one batch (after any batch already queued). */
  run(commands: readonly string[]): Promise<BatchResult> {
    for (const c of commands) checkBatchCommand(c);
    const next = this.#queue.then(async () => {
      if (this.#child && this.#lines >= this.#recycleAfterLines) await this.#stopChild();
      return this.#runNow(commands);
    });
    this.#queue = next.catch(() => undefined);
    return next;
  }

  /** Ends the current process (if any); the next batch starts a fresh one. */
  restart(): Promise<void> {
    const next = this.#queue.then(() => this.#stopChild());
    this.#queue = next.catch(() => undefined);
    return next;
  }

  async close(): Promise<void> {
    this.#closed = true;
    await this.restart();
  }

  #runNow(commands: readonly string[]): Promise<BatchResult> {
    if (this.#closed) return Promise.reject(new KernelError('E_IP_BATCH_CLOSED', 'ip batch is closed'));
    if (commands.length === 0) {
      return Promise.resolve({ commands: 0, failures: [], warnings: [], spawned: false, durationMs: 0 });
    }
    let spawned = false;
    if (!this.#child) {
      this.#spawnChild();
      spawned = true;
    }
    const child = this.#child!;
    return new Promise<BatchResult>((resolve, reject) => {
      const firstLine = this.#lines + 1;
      const markerLine = firstLine + commands.length;
      this.#lines = markerLine;
      const timer = setTimeout(() => {
        this.#finish(new KernelError('E_IP_BATCH_TIMEOUT', `ip batch of ${commands.length} commands did not complete within ${this.#timeoutMs} ms`));
        this.#killChild();
      }, this.#timeoutMs);
      this.#pendingMessages = [];
      this.#current = { commands, firstLine, markerLine, failures: [], warnings: [], spawned, started: performance.now(), timer, resolve, reject };
      child.stdin!.write(commands.join('\n') + '\n' + MARKER + '\n');
    });
  }

  #spawnChild(): void {
    const child = spawn(this.#ipPath, ['-force', '-batch', '-'], { stdio: ['pipe', 'ignore', 'pipe'] });
    this.#spawnCount++;
    this.#onSpawn?.();
    this.#child = child;
    this.#lines = 0;
    this.#stderrTail = '';
    this.#pendingMessages = [];
    child.stdin!.on('error', () => {
      // EPIPE when ip died; the 'exit' handler reports it.
    });
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (chunk: string) => {
      if (this.#child !== child) return;
      this.#onStderr(chunk);
    });
    child.on('error', (err) => {
      if (this.#child !== child) return;
      this.#child = undefined;
      this.#finish(new KernelError('E_IP_BATCH_SPAWN', `cannot run '${this.#ipPath}': ${err.message}`, { cause: err }));
    });
    child.on('exit', (code, signal) => {
      if (this.#child !== child) return;
      this.#child = undefined;
      const last = this.#pendingMessages.join('; ') || this.#stderrTail.trim();
      this.#finish(
        new KernelError(
          'E_IP_BATCH_EXITED',
          `ip batch process exited (${signal ?? `status ${code}`}) before completing the batch${last ? `: ${last}` : ''}`,
        ),
      );
    });
  }

  #onStderr(chunk: string): void {
    this.#stderrTail += chunk;
    let nl: number;
    while ((nl = this.#stderrTail.indexOf('\n')) >= 0) {
      const line = this.#stderrTail.slice(0, nl).trimEnd();
      this.#stderrTail = this.#stderrTail.slice(nl + 1);
      this.#onStderrLine(line);
    }
  }

  #onStderrLine(line: string): void {
    const m = FAILED_RE.exec(line);
    if (!m) {
      if (line !== '') this.#pendingMessages.push(line);
      return;
    }
    const lineNo = Number(m[2]);
    const messages = this.#pendingMessages;
    this.#pendingMessages = [];
    const cur = this.#current;
    if (!cur) return;
    if (lineNo === cur.markerLine) {
      // Besides the marker's own message, anything here came from commands that succeeded with a
      // warning.
      cur.warnings.push(...messages.filter((m) => !m.includes('rc/marker')));
      this.#finish(undefined);
      return;
    }
    if (lineNo >= cur.firstLine && lineNo < cur.markerLine) {
      const index = lineNo - cur.firstLine;
      cur.failures.push({ index, command: cur.commands[index], error: messages.join('; ') || 'failed' });
    }
  }

  #finish(err: Error | undefined): void {
    const cur = this.#current;
    if (!cur) return;
    this.#current = undefined;
    clearTimeout(cur.timer);
    if (err) cur.reject(err);
    else {
      cur.resolve({
        commands: cur.commands.length,
        failures: cur.failures,
        warnings: cur.warnings,
        spawned: cur.spawned,
        durationMs: performance.now() - cur.started,
      });
    }
  }

  #killChild(): void {
    const child = this.#child;
    this.#child = undefined;
    if (!child) return;
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    // A grandchild could hold the pipes open; they are of no use any more.
    child.stdin?.destroy();
    child.stderr?.destroy();
  }

  async #stopChild(): Promise<void> {
    const child = this.#child;
    if (!child) return;
    this.#child = undefined;
    if (child.exitCode !== null || child.signalCode !== null) return;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
      }, 2_000);
      child.once('exit', () => {
        clearTimeout(timer);
        resolve();
      });
      child.stdin!.end();
    });
  }
}
