/**
 * The clock the BGP session reads time and arms timers with, injected so that tests can drive
 * hold/keepalive/connect-retry timers by hand (FakeClock) instead of waiting for them.
 */

/** An armed timer, as returned by Clock.setTimer; opaque to callers. */
export interface TimerHandle {
  readonly clockTimer: true;
}

export interface Clock {
  /** Milliseconds, monotonic within one clock. */
  now(): number;
  setTimer(ms: number, fn: () => void): TimerHandle;
  clearTimer(handle: TimerHandle): void;
}

interface RealHandle extends TimerHandle {
  readonly id: ReturnType<typeof setTimeout>;
}

/** Wall-clock timers (setTimeout) and performance.now(); works on Node and Deno. */
export const realClock: Clock = {
  now: () => performance.now(),
  setTimer(ms: number, fn: () => void): TimerHandle {
    const handle: RealHandle = { clockTimer: true, id: setTimeout(fn, ms) };
    return handle;
  },
  clearTimer(handle: TimerHandle): void {
    clearTimeout((handle as RealHandle).id);
  },
};

interface FakeTimer extends TimerHandle {
  readonly due: number;
  readonly seq: number;
  readonly fn: () => void;
}

/** A manual clock: time moves only in advance(); due timers run in (due time, arming order). */
export class FakeClock implements Clock {
  #now: number;
  #seq = 0;
  readonly #timers = new Set<FakeTimer>();

  constructor(startMs = 0) {
    this.#now = startMs;
  }

  now(): number {
    return this.#now;
  }

  setTimer(ms: number, fn: () => void): TimerHandle {
    const t: FakeTimer = { clockTimer: true, due: this.#now + Math.max(0, ms), seq: this.#seq++, fn };
    this.#timers.add(t);
    return t;
  }

  clearTimer(handle: TimerHandle): void {
    this.#timers.delete(handle as FakeTimer);
  }

  /** Timers still armed. */
  get pending(): number {
    return this.#timers.size;
  }

  /** Milliseconds until the next armed timer, or undefined when none is armed. */
  nextDueIn(): number | undefined {
    let min: number | undefined;
    for (const t of this.#timers) if (min === undefined || t.due < min) min = t.due;
    return min === undefined ? undefined : min - this.#now;
  }

  /** Move time forward by `ms`, running every timer that falls due (including ones armed meanwhile). */
  advance(ms: number): void {
    const end = this.#now + ms;
    for (;;) {
      let next: FakeTimer | undefined;
      for (const t of this.#timers) {
        if (t.due <= end && (!next || t.due < next.due || (t.due === next.due && t.seq < next.seq))) next = t;
      }
      if (!next) break;
      this.#timers.delete(next);
      this.#now = Math.max(this.#now, next.due);
      next.fn();
    }
    this.#now = end;
  }
}
