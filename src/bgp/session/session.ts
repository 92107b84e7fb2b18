/**
 * One BGP peer: the transport connection(s), the RFC 4271 FSM (fsm.ts) per connection, collision
 * detection (RFC 4271 6.8), OPEN checks and capability negotiation, timers on an injected clock,
 * and backpressure both ways. Messages come and go through the codec (src/bgp/codec/).
 *
 * Connections: an outgoing one (unless `passive`), which reconnects after connectRetrySec, and
 * incoming ones handed over by the listener with acceptSocket(). Each runs its own FSM; when two
 * reach OpenConfirm the one initiated by the higher BGP Identifier stays and the other is closed
 * with Cease/7; a connection whose OPEN arrives while another is Established is closed the same way.
 *
 * Events: 'state' (state, previous), 'established' (EstablishedInfo), 'update' (UpdateMessage),
 * 'route-refresh' (RouteRefreshMessage), 'down' (DownInfo), 'drain' (the socket took all of
 * what send() wrote).
 *
 * Input backpressure: frames are decoded in slices (at most MAX_MESSAGES_PER_SLICE messages or
 * MAX_SLICE_MS per event-loop turn), so timers keep firing under a flood; the socket is paused
 * while more than INPUT_HIGH_WATER frames wait, and while the consumer has called pauseInput()
 * (until resumeInput()).
 * The hold timer does not expire while frames of ours wait to be processed: our slowness is not
 * the peer's silence.
 */
import { EventEmitter } from 'node:events';
import { connect as netConnect, type Socket } from 'node:net';
import { setImmediate } from 'node:timers';
import type { Capabilities, CodecOptions, NotificationMessage, OpenMessage, RouteRefreshMessage, UpdateMessage, BgpMessage } from '../types.ts';
import { MessageType } from '../types.ts';
import { encodeMessage, decodeMessage, Framer } from '../codec/index.ts';
import { negotiate, codecOptions, type Negotiated } from '../codec/capabilities.ts';
import { BgpError } from '../codec/errors.ts';
import { logger, type Logger } from '../../log.ts';
import { realClock, type Clock, type TimerHandle } from './clock.ts';
import {
  AS_TRANS,
  CeaseSubcode,
  DEFAULT_CONNECT_RETRY_SEC,
  DEFAULT_HOLD_SEC,
  ErrorCode,
  checkOpen,
  collisionWinner,
  keepaliveSec,
  negotiateHoldTime,
  peerAsOf,
  shutdownData,
  step,
  type Action,
  type Direction,
  type Event,
  type NotificationSpec,
  type State,
  type TimerName,
} from './fsm.ts';

export interface BgpSessionOptions {
  readonly localAs: number;
  readonly peerAs: number;
  /** Our BGP Identifier (router id), a dotted quad. */
  readonly localId: string;
  readonly peerAddress: string;
  /** Default 179. */
  readonly peerPort?: number;
  /** Source address of outgoing connections. */
  readonly localAddress?: string;
  /** Only accept connections (acceptSocket), never initiate one. */
  readonly passive?: boolean;
  /** Seconds; 0 or >= 3. Default 90. */
  readonly holdTime?: number;
  /** Seconds between connection attempts / restarts. Default 5. */
  readonly connectRetrySec?: number;
  readonly capabilities: Capabilities;
  readonly clock?: Clock;
  /** Log tag; default `bgp <peerAddress>`. */
  readonly name?: string;
}

export interface EstablishedInfo {
  readonly peerId: string;
  readonly peerAs: number;
  readonly holdTimeSec: number;
  readonly keepaliveSec: number;
  readonly negotiated: Negotiated;
  readonly remoteOpen: OpenMessage;
  readonly direction: Direction;
  readonly localAddress?: string;
  readonly localPort?: number;
  readonly remoteAddress?: string;
  readonly remotePort?: number;
}

export interface NotificationInfo {
  readonly direction: 'sent' | 'received';
  readonly code: number;
  readonly subcode: number;
  readonly data: Uint8Array;
  readonly shutdownText?: string;
}

export interface DownInfo {
  readonly reason: string;
  readonly notification?: NotificationInfo;
  /** The connection had been Established. */
  readonly wasEstablished: boolean;
}

export interface SessionCounters {
  messagesIn: number;
  messagesOut: number;
  updatesIn: number;
  updatesOut: number;
  keepalivesIn: number;
  keepalivesOut: number;
  notificationsIn: number;
  notificationsOut: number;
  /** NLRI announced to us (IPv4 and MP_REACH), cumulative. */
  prefixesReceived: number;
  /** NLRI withdrawn by the peer (IPv4 and MP_UNREACH), cumulative. */
  withdrawalsReceived: number;
  /** UPDATEs that came with an RFC 7606 handling (treat-as-withdraw, attribute-discard). */
  updatesWithErrors: number;
  establishedTransitions: number;
}

export interface BgpSessionEvents {
  state: [state: State, previous: State];
  established: [info: EstablishedInfo];
  update: [update: UpdateMessage];
  'route-refresh': [msg: RouteRefreshMessage];
  down: [info: DownInfo];
  drain: [];
}

/** Frames decoded per event-loop turn at most, and time spent per turn at most. */
export const MAX_MESSAGES_PER_SLICE = 256;
export const MAX_SLICE_MS = 10;
/** Pause the socket when this many frames wait for decoding; resume below INPUT_LOW_WATER. */
export const INPUT_HIGH_WATER = 4096;
export const INPUT_LOW_WATER = 1024;
/** How long a closing socket may take to flush its last NOTIFICATION before it is destroyed. */
const CLOSE_GRACE_MS = 2_000;

const STATE_RANK: Record<State, number> = { Idle: 0, Active: 1, Connect: 2, OpenSent: 3, OpenConfirm: 4, Established: 5 };

interface Conn {
  readonly id: number;
  readonly dir: Direction;
  state: State;
  socket?: Socket;
  framer: Framer;
  queue: Buffer[];
  queueHead: number;
  scheduled: boolean;
  pausedByUs: boolean;
  readonly timers: Map<TimerName, TimerHandle>;
  holdTimeSec: number;
  remoteOpen?: OpenMessage;
  negotiated?: Negotiated;
  decodeOpts: CodecOptions;
  encodeOpts: CodecOptions;
  /** Closed in favour of another connection (collision): its Down is not the session's. */
  parked: boolean;
  wasEstablished: boolean;
  lastNotification?: NotificationInfo;
}

const INITIAL_CODEC: CodecOptions = { as4: false };

function queued(c: Conn): number {
  return c.queue.length - c.queueHead;
}

export class BgpSession extends EventEmitter<BgpSessionEvents> {
  readonly options: Required<Pick<BgpSessionOptions, 'peerPort' | 'holdTime' | 'connectRetrySec' | 'passive'>> & BgpSessionOptions;
  readonly counters: SessionCounters = {
    messagesIn: 0,
    messagesOut: 0,
    updatesIn: 0,
    updatesOut: 0,
    keepalivesIn: 0,
    keepalivesOut: 0,
    notificationsIn: 0,
    notificationsOut: 0,
    prefixesReceived: 0,
    withdrawalsReceived: 0,
    updatesWithErrors: 0,
    establishedTransitions: 0,
  };
  readonly #clock: Clock;
  readonly #log: Logger;
  readonly #conns = new Set<Conn>();
  readonly #localCaps: Capabilities;
  readonly #openMessage: OpenMessage;
  readonly #keepaliveFrame: Buffer;
  #connIds = 0;
  #started = false;
  #stopped = false;
  #inputPaused = false;
  #restartTimer?: TimerHandle;
  #established?: Conn;
  #establishedAt?: number;
  #lastState: State = 'Idle';
  #stopText?: string;

  constructor(options: BgpSessionOptions) {
    super();
    const holdTime = options.holdTime ?? DEFAULT_HOLD_SEC;
    if (!Number.isInteger(holdTime) || holdTime < 0 || holdTime > 0xffff || holdTime === 1 || holdTime === 2) {
      throw new RangeError(`BGP hold time ${holdTime}: must be 0 or 3..65535 seconds`);
    }
    for (const [k, v] of [['localAs', options.localAs], ['peerAs', options.peerAs]] as const) {
      if (!Number.isInteger(v) || v < 1 || v > 0xffffffff) throw new RangeError(`BGP ${k} ${v}: must be 1..4294967295`);
    }
    this.options = {
      ...options,
      peerPort: options.peerPort ?? 179,
      holdTime,
      connectRetrySec: options.connectRetrySec ?? DEFAULT_CONNECT_RETRY_SEC,
      passive: options.passive ?? false,
    };
    this.#clock = options.clock ?? realClock;
    this.#log = logger(options.name ?? `bgp ${options.peerAddress}`);
    this.#localCaps = { ...options.capabilities, as4: options.capabilities.as4 ?? options.localAs };
    this.#openMessage = {
      type: 'open',
      version: 4,
      myAs: options.localAs > 0xffff ? AS_TRANS : options.localAs,
      holdTime,
      bgpId: options.localId,
      capabilities: this.#localCaps,
    };
    this.#keepaliveFrame = encodeMessage({ type: 'keepalive' }, INITIAL_CODEC);
  }

  get isIbgp(): boolean {
    return this.options.localAs === this.options.peerAs;
  }

  /** The session's state: that of its most advanced connection. */
  get state(): State {
    let best: State = this.#started && !this.#stopped && this.options.passive ? 'Active' : 'Idle';
    for (const c of this.#conns) if (STATE_RANK[c.state] > STATE_RANK[best]) best = c.state;
    return best;
  }

  /** Milliseconds since the session became Established (0 when it is not). */
  get uptimeMs(): number {
    return this.#established && this.#establishedAt !== undefined ? this.#clock.now() - this.#establishedAt : 0;
  }

  /** What was negotiated with the peer, while Established. */
  get negotiated(): Negotiated | undefined {
    return this.#established?.negotiated;
  }

  /** Codec options for UPDATEs sent on the Established connection (encode once, send many). */
  get encodeOptions(): CodecOptions | undefined {
    return this.#established?.encodeOpts;
  }

  /** The peer's OPEN, while Established. */
  get remoteOpen(): OpenMessage | undefined {
    return this.#established?.remoteOpen;
  }

  /** False when send() has filled the socket's buffer: wait for 'drain' before building more. */
  get writable(): boolean {
    const s = this.#established?.socket;
    return !!s && !s.destroyed && !s.writableNeedDrain;
  }

  start(): void {
    if (this.#started && !this.#stopped) return;
    this.#started = true;
    this.#stopped = false;
    this.#stopText = undefined;
    if (!this.options.passive) this.#startOutgoing();
    this.#noteState();
  }

  /**
   * Stop: Cease/Administrative Shutdown (RFC 9003 text when given) on every connection that has
   * one; no reconnection until start(). Resolves when the sockets are closed (at most ~2 s).
   * With `restarting`, an Established session on which both sides negotiated graceful restart is
   * closed without a NOTIFICATION instead: the peer keeps our routes (as stale) until we are back
   * or the restart time runs out (RFC 4724), as for a crash.
   */
  async stop(shutdownText?: string, opts: { readonly restarting?: boolean } = {}): Promise<void> {
    this.#stopped = true;
    this.#stopText = shutdownText;
    if (this.#restartTimer) this.#clock.clearTimer(this.#restartTimer);
    this.#restartTimer = undefined;
    const sockets: Socket[] = [];
    const gr = this.negotiated?.gracefulRestart;
    const keepRoutes = Boolean(opts.restarting && gr?.local && gr.families.length > 0);
    for (const c of [...this.#conns]) {
      if (c.socket) sockets.push(c.socket);
      if (keepRoutes && c.state === 'Established' && c.socket) {
        this.#log.info('stopping for a restart: closing without NOTIFICATION so the peer keeps our routes');
        c.socket.destroy();
        continue;
      }
      const error: NotificationSpec = {
        code: ErrorCode.Cease,
        subcode: CeaseSubcode.AdministrativeShutdown,
        ...(shutdownText !== undefined ? { data: shutdownData(shutdownText) } : {}),
      };
      this.#dispatch(c, 'ManualStop', { error });
    }
    this.#noteState();
    await Promise.all(
      sockets.map(
        (s) =>
          new Promise<void>((resolve) => {
            if (s.destroyed) return resolve();
            const tm = setTimeout(() => {
              s.destroy();
              resolve();
            }, CLOSE_GRACE_MS + 100);
            s.once('close', () => {
              clearTimeout(tm);
              resolve();
            });
          }),
      ),
    );
  }

  /** A connection from the peer (the listener dispatches by remote address). */
  acceptSocket(socket: Socket): void {
    if (!this.#started || this.#stopped) {
      this.#log.debug(`refusing connection from ${socket.remoteAddress}: session not started`);
      socket.destroy();
      return;
    }
    for (const c of this.#conns) {
      if (c.dir === 'incoming' && c.state !== 'Idle' && c.state !== 'Established') {
        this.#log.debug(`refusing second incoming connection from ${socket.remoteAddress}`);
        socket.destroy();
        return;
      }
    }
    const conn = this.#newConn('incoming');
    this.#attach(conn, socket);
    this.#dispatch(conn, 'ManualStart');
    this.#dispatch(conn, 'TcpConnectionConfirmed');
  }

  /**
   * Write pre-encoded UPDATE (or End-of-RIB) messages on the Established connection. Resolves at
   * once while the socket's buffer has room, else on 'drain' (or when the connection closes).
   */
  send(buffers: readonly Buffer[]): Promise<void> {
    const c = this.#established;
    const s = c?.socket;
    if (!c || !s || s.destroyed) return Promise.reject(new Error(`BGP session with ${this.options.peerAddress} is not Established`));
    s.cork();
    for (const b of buffers) s.write(b);
    s.uncork();
    this.counters.updatesOut += buffers.length;
    this.counters.messagesOut += buffers.length;
    if (!s.writableNeedDrain) return Promise.resolve();
    return new Promise((resolve) => {
      const done = (): void => {
        s.off('drain', done);
        s.off('close', done);
        resolve();
      };
      s.once('drain', done);
      s.once('close', done);
    });
  }

  /** Stop handing out decoded messages (the consumer's queue is long); the socket pauses soon after. */
  pauseInput(): void {
    this.#inputPaused = true;
  }

  resumeInput(): void {
    if (!this.#inputPaused) return;
    this.#inputPaused = false;
    for (const c of this.#conns) {
      if (c.pausedByUs && queued(c) < INPUT_LOW_WATER && c.socket) {
        c.pausedByUs = false;
        c.socket.resume();
      }
      this.#schedule(c);
    }
  }

  get inputPaused(): boolean {
    return this.#inputPaused;
  }

  // -------------------------------------------------------------------------------------------
  // Connections
  // -------------------------------------------------------------------------------------------

  #newConn(dir: Direction): Conn {
    const conn: Conn = {
      id: ++this.#connIds,
      dir,
      state: 'Idle',
      framer: new Framer(),
      queue: [],
      queueHead: 0,
      scheduled: false,
      pausedByUs: false,
      timers: new Map(),
      holdTimeSec: this.options.holdTime,
      decodeOpts: INITIAL_CODEC,
      encodeOpts: INITIAL_CODEC,
      parked: false,
      wasEstablished: false,
    };
    this.#conns.add(conn);
    return conn;
  }

  #outgoing(): Conn | undefined {
    for (const c of this.#conns) if (c.dir === 'outgoing') return c;
    return undefined;
  }

  #startOutgoing(): void {
    let c = this.#outgoing();
    if (!c) c = this.#newConn('outgoing');
    this.#resetConn(c);
    this.#dispatch(c, 'ManualStart');
  }

  #resetConn(c: Conn): void {
    c.framer = new Framer();
    c.queue = [];
    c.queueHead = 0;
    c.holdTimeSec = this.options.holdTime;
    c.remoteOpen = undefined;
    c.negotiated = undefined;
    c.decodeOpts = INITIAL_CODEC;
    c.encodeOpts = INITIAL_CODEC;
    c.parked = false;
    c.wasEstablished = false;
    c.lastNotification = undefined;
  }

  #attach(conn: Conn, socket: Socket): void {
    conn.socket = socket;
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => {
      if (conn.socket !== socket) return;
      let frames: Buffer[];
      try {
        frames = conn.framer.push(chunk);
      } catch (err) {
        this.#decodeFailed(conn, 'BGPHeaderErr', err);
        return;
      }
      if (frames.length === 0) return;
      for (const f of frames) conn.queue.push(f);
      if ((queued(conn) > INPUT_HIGH_WATER || this.#inputPaused) && !conn.pausedByUs) {
        conn.pausedByUs = true;
        socket.pause();
      }
      this.#schedule(conn);
    });
    socket.on('drain', () => {
      if (conn.socket === socket && conn === this.#established) this.emit('drain');
    });
    const failed = (why: string): void => {
      if (conn.socket !== socket) return;
      this.#dispatch(conn, 'TcpConnectionFails', { detail: why });
    };
    socket.on('error', (err) => failed(err.message));
    socket.on('close', () => failed('connection closed by peer'));
  }

  #initiate(conn: Conn): void {
    const { peerAddress, peerPort, localAddress } = this.options;
    const socket = netConnect({ host: peerAddress, port: peerPort, ...(localAddress ? { localAddress } : {}) });
    this.#attach(conn, socket);
    socket.once('connect', () => {
      if (conn.socket !== socket) return;
      this.#dispatch(conn, 'TcpConnectionConfirmed');
    });
  }

  #drop(conn: Conn): void {
    const s = conn.socket;
    conn.socket = undefined;
    conn.queue = [];
    conn.queueHead = 0;
    conn.pausedByUs = false;
    if (!s) return;
    s.on('error', () => undefined);
    if (s.destroyed) return;
    if (s.connecting) {
      s.destroy();
      return;
    }
    s.end();
    const tm = setTimeout(() => s.destroy(), CLOSE_GRACE_MS);
    s.once('close', () => clearTimeout(tm));
    s.resume(); // let the FIN from the peer arrive
  }

  #write(conn: Conn, frame: Buffer): void {
    const s = conn.socket;
    if (!s || s.destroyed || !s.writable) return;
    s.write(frame);
    this.counters.messagesOut++;
  }

  // -------------------------------------------------------------------------------------------
  // Input
  // -------------------------------------------------------------------------------------------

  #schedule(conn: Conn): void {
    if (conn.scheduled || this.#inputPaused || queued(conn) === 0) return;
    conn.scheduled = true;
    setImmediate(() => this.#processSlice(conn));
  }

  #processSlice(conn: Conn): void {
    conn.scheduled = false;
    const t0 = performance.now();
    let n = 0;
    while (queued(conn) > 0 && !this.#inputPaused && conn.socket) {
      if (n >= MAX_MESSAGES_PER_SLICE || performance.now() - t0 > MAX_SLICE_MS) break;
      const frame = conn.queue[conn.queueHead++]!;
      n++;
      this.#handleFrame(conn, frame);
    }
    if (conn.queueHead > 1024 && conn.queueHead * 2 > conn.queue.length) {
      conn.queue = conn.queue.slice(conn.queueHead);
      conn.queueHead = 0;
    } else if (queued(conn) === 0) {
      conn.queue = [];
      conn.queueHead = 0;
    }
    if (conn.pausedByUs && !this.#inputPaused && queued(conn) < INPUT_LOW_WATER && conn.socket) {
      conn.pausedByUs = false;
      conn.socket.resume();
    }
    this.#schedule(conn);
  }

  #decodeFailed(conn: Conn, event: Event, err: unknown): void {
    if (err instanceof BgpError) {
      this.#log.warn(`decode error (${event}): ${err.message}`);
      const n = err.notification;
      this.#dispatch(conn, event, { error: { code: n.code, subcode: n.subcode, data: n.data }, detail: err.message });
    } else {
      const msg = err instanceof Error ? err.message : String(err);
      this.#log.error(`internal error decoding a message: ${msg}`);
      this.#dispatch(conn, event, { error: { code: ErrorCode.Cease, subcode: 0 }, detail: `internal error: ${msg}` });
    }
  }

  #handleFrame(conn: Conn, frame: Buffer): void {
    let msg: BgpMessage;
    try {
      msg = decodeMessage(frame, conn.decodeOpts);
    } catch (err) {
      const type = frame.length > 18 ? frame[18] : 0;
      this.#decodeFailed(conn, type === MessageType.OPEN ? 'BGPOpenMsgErr' : type === MessageType.UPDATE ? 'UpdateMsgErr' : 'BGPHeaderErr', err);
      return;
    }
    this.counters.messagesIn++;
    switch (msg.type) {
      case 'open':
        this.#onOpen(conn, msg);
        return;
      case 'keepalive':
        this.counters.keepalivesIn++;
        this.#dispatch(conn, 'KeepAliveMsg');
        return;
      case 'update':
        this.#onUpdate(conn, msg);
        return;
      case 'notification':
        this.#onNotification(conn, msg);
        return;
      case 'route-refresh':
        this.#dispatch(conn, 'RouteRefreshMsg', { routeRefresh: msg });
        return;
    }
  }

  #onOpen(conn: Conn, open: OpenMessage): void {
    if (conn.state !== 'OpenSent') {
      this.#dispatch(conn, 'BGPOpen');
      return;
    }
    const bad = checkOpen(open, this.options);
    if (bad) {
      this.#dispatch(conn, 'BGPOpenMsgErr', {
        error: bad,
        detail: `OPEN from AS ${peerAsOf(open)} id ${open.bgpId} hold ${open.holdTime} rejected (${bad.code}/${bad.subcode})`,
      });
      return;
    }
    const negotiated = negotiate(this.#localCaps, open.capabilities);
    if (negotiated.families.size === 0) this.#log.warn(`no address family in common with ${open.bgpId}`);
    const opts = codecOptions(negotiated, this.isIbgp);
    conn.remoteOpen = open;
    conn.negotiated = negotiated;
    conn.decodeOpts = opts.decode;
    conn.encodeOpts = opts.encode;
    conn.holdTimeSec = negotiateHoldTime(this.options.holdTime, open.holdTime);
    this.#dispatch(conn, 'BGPOpen');
    if ((conn.state as State) === 'OpenConfirm') this.#detectCollision(conn);
  }

  /** RFC 4271 6.8, run when `conn` has just received its OPEN. */
  #detectCollision(conn: Conn): void {
    for (const other of this.#conns) {
      if (other === conn || !other.socket) continue;
      if (other.state === 'Established') {
        this.#log.info(`connection collision with an Established connection: closing the new ${conn.dir} one`);
        conn.parked = true;
        this.#dispatch(conn, 'OpenCollisionDump');
        return;
      }
      if (other.state === 'OpenSent' || other.state === 'OpenConfirm') {
        const keep = collisionWinner(this.options.localId, conn.remoteOpen!.bgpId);
        const loser = conn.dir === keep ? other : conn;
        this.#log.info(`connection collision: keeping the ${keep} connection (local id ${this.options.localId}, remote ${conn.remoteOpen!.bgpId})`);
        loser.parked = true;
        this.#dispatch(loser, 'OpenCollisionDump');
        return;
      }
    }
  }

  #onUpdate(conn: Conn, update: UpdateMessage): void {
    this.counters.updatesIn++;
    if (conn.state === 'Established') {
      this.counters.prefixesReceived += update.nlri.length + (update.mpReach?.nlri.length ?? 0);
      this.counters.withdrawalsReceived += update.withdrawn.length + (update.mpUnreach?.withdrawn.length ?? 0);
      if (update.handling) {
        this.counters.updatesWithErrors++;
        this.#log.warn(`UPDATE with errors handled as ${update.handling} (RFC 7606): ${(update.errors ?? []).join('; ')}`);
      }
    }
    this.#dispatch(conn, 'UpdateMsg', { update });
  }

  #onNotification(conn: Conn, n: NotificationMessage): void {
    this.counters.notificationsIn++;
    conn.lastNotification = {
      direction: 'received',
      code: n.code,
      subcode: n.subcode,
      data: n.data,
      ...(n.shutdownText !== undefined ? { shutdownText: n.shutdownText } : {}),
    };
    const text = n.shutdownText ? ` "${n.shutdownText}"` : '';
    this.#dispatch(conn, 'NotifMsg', { detail: `${n.code}/${n.subcode}${text}` });
  }

  // -------------------------------------------------------------------------------------------
  // FSM
  // -------------------------------------------------------------------------------------------

  #dispatch(
    conn: Conn,
    event: Event,
    extra: { error?: NotificationSpec; detail?: string; update?: UpdateMessage; routeRefresh?: RouteRefreshMessage } = {},
  ): void {
    const from = conn.state;
    const tr = step(from, event, {
      passive: this.options.passive || conn.dir === 'incoming',
      connectRetrySec: this.options.connectRetrySec,
      holdTimeSec: conn.holdTimeSec,
      ...(extra.error ? { error: extra.error } : {}),
      ...(extra.detail !== undefined ? { detail: extra.detail } : {}),
    });
    conn.state = tr.next;
    if (from !== tr.next) this.#log.debug(`conn ${conn.id} (${conn.dir}): ${from} -> ${tr.next} on ${event}`);
    for (const a of tr.actions) this.#run(conn, a, extra);
    this.#noteState();
  }

  #run(conn: Conn, a: Action, extra: { update?: UpdateMessage; routeRefresh?: RouteRefreshMessage }): void {
    switch (a.type) {
      case 'SendOpen':
        this.#write(conn, encodeMessage(this.#openMessage, INITIAL_CODEC));
        return;
      case 'SendKeepalive':
        this.#write(conn, this.#keepaliveFrame);
        this.counters.keepalivesOut++;
        return;
      case 'SendNotification': {
        const data = a.data ?? new Uint8Array(0);
        this.#write(conn, encodeMessage({ type: 'notification', code: a.code, subcode: a.subcode, data }, conn.encodeOpts));
        this.counters.notificationsOut++;
        conn.lastNotification = {
          direction: 'sent',
          code: a.code,
          subcode: a.subcode,
          data,
          ...(a.code === ErrorCode.Cease && a.subcode === CeaseSubcode.AdministrativeShutdown && this.#stopText !== undefined
            ? { shutdownText: this.#stopText }
            : {}),
        };
        return;
      }
      case 'StartTimer': {
        const old = conn.timers.get(a.name);
        if (old) this.#clock.clearTimer(old);
        const h = this.#clock.setTimer(a.sec * 1000, () => this.#onTimer(conn, a.name, h));
        conn.timers.set(a.name, h);
        return;
      }
      case 'StopTimer': {
        const old = conn.timers.get(a.name);
        if (old) this.#clock.clearTimer(old);
        conn.timers.delete(a.name);
        return;
      }
      case 'DropConnection':
        this.#drop(conn);
        return;
      case 'InitiateConnection':
        this.#initiate(conn);
        return;
      case 'DeliverUpdate':
        if (extra.update) this.emit('update', extra.update);
        return;
      case 'DeliverRouteRefresh':
        if (extra.routeRefresh) this.emit('route-refresh', extra.routeRefresh);
        return;
      case 'Established':
        this.#onEstablished(conn);
        return;
      case 'Down':
        this.#onDown(conn, a.reason);
        return;
    }
  }

  #onTimer(conn: Conn, name: TimerName, handle: TimerHandle): void {
    if (conn.timers.get(name) !== handle) return;
    conn.timers.delete(name);
    if (name === 'hold' && (queued(conn) > 0 || conn.pausedByUs) && conn.socket) {
      // Messages from the peer are waiting on us: not the peer's silence.
      const h = this.#clock.setTimer(conn.holdTimeSec * 1000 || 1000, () => this.#onTimer(conn, 'hold', h));
      conn.timers.set('hold', h);
      return;
    }
    const event: Event = name === 'hold' ? 'HoldTimerExpires' : name === 'keepalive' ? 'KeepaliveTimerExpires' : 'ConnectRetryTimerExpires';
    if (event === 'KeepaliveTimerExpires') this.#log.debug(`conn ${conn.id}: keepalive`);
    this.#dispatch(conn, event);
  }

  #onEstablished(conn: Conn): void {
    conn.wasEstablished = true;
    this.#established = conn;
    this.#establishedAt = this.#clock.now();
    this.counters.establishedTransitions++;
    // Any other connection attempt is now redundant.
    for (const other of [...this.#conns]) {
      if (other === conn) continue;
      other.parked = true;
      if (other.state === 'OpenSent' || other.state === 'OpenConfirm') this.#dispatch(other, 'OpenCollisionDump');
      else if (other.state !== 'Idle') this.#dispatch(other, 'ManualStop');
      if (other.dir === 'incoming') this.#conns.delete(other);
    }
    const open = conn.remoteOpen!;
    const s = conn.socket;
    const info: EstablishedInfo = {
      peerId: open.bgpId,
      peerAs: peerAsOf(open),
      holdTimeSec: conn.holdTimeSec,
      keepaliveSec: keepaliveSec(conn.holdTimeSec),
      negotiated: conn.negotiated!,
      remoteOpen: open,
      direction: conn.dir,
      ...(s?.localAddress ? { localAddress: s.localAddress, localPort: s.localPort } : {}),
      ...(s?.remoteAddress ? { remoteAddress: s.remoteAddress, remotePort: s.remotePort } : {}),
    };
    this.#log.info(`Established with ${info.peerId} AS ${info.peerAs} (hold ${info.holdTimeSec} s, ${conn.dir})`);
    this.emit('established', info);
  }

  #onDown(conn: Conn, reason: string): void {
    const wasEstablished = conn.wasEstablished;
    const notification = conn.lastNotification;
    if (conn === this.#established) {
      this.#established = undefined;
      this.#establishedAt = undefined;
    }
    if (conn.dir === 'incoming') this.#conns.delete(conn);
    const othersAlive = [...this.#conns].some((c) => c !== conn && STATE_RANK[c.state] >= STATE_RANK.OpenSent);
    if (conn.parked) {
      this.#log.debug(`conn ${conn.id} (${conn.dir}) closed: ${reason}`);
    } else if (othersAlive && !wasEstablished) {
      this.#log.info(`${conn.dir} connection closed: ${reason} (another connection carries on)`);
    } else {
      if (wasEstablished || !this.#stopped) this.#log.warn(`session down: ${reason}`);
      this.emit('down', { reason, wasEstablished, ...(notification ? { notification } : {}) });
    }
    if (!this.#stopped) this.#scheduleRestart();
  }

  /** Bring the outgoing connection back after connectRetrySec, unless another connection is up. */
  #scheduleRestart(): void {
    if (this.options.passive || this.#restartTimer) return;
    const h = this.#clock.setTimer(this.options.connectRetrySec * 1000, () => {
      if (this.#restartTimer !== h) return;
      this.#restartTimer = undefined;
      if (this.#stopped) return;
      const out = this.#outgoing();
      if (out && out.state !== 'Idle') return;
      const busy = [...this.#conns].some((c) => STATE_RANK[c.state] >= STATE_RANK.OpenSent);
      if (busy) {
        // Another connection is in progress; if it becomes Established we are done, if it fails
        // its Down schedules us again.
        if (![...this.#conns].some((c) => c.state === 'Established')) this.#scheduleRestart();
        return;
      }
      this.#startOutgoing();
    });
    this.#restartTimer = h;
  }

  #noteState(): void {
    const s = this.state;
    if (s === this.#lastState) return;
    const prev = this.#lastState;
    this.#lastState = s;
    this.emit('state', s, prev);
  }
}
