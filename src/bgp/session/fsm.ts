/**
 * The BGP-4 finite state machine of RFC 4271 section 8, for ONE transport connection, as an
 * exhaustive table: `FSM[state][event](ctx) -> { next, actions }`. Pure: no sockets, no timers, no
 * clock; actions are data that the session (session.ts) carries out in order. The compiler checks
 * that every (state, event) cell exists.
 *
 * Simplifications against RFC 4271 8.2.2 (the optional session attributes routecat does not use):
 * no DelayOpen, no damping / IdleHoldTimer (the session restarts after connectRetrySec), no
 * AutomaticStop counters. Collision detection (6.8) needs two connections and lives in the
 * session; the FSM only knows the OpenCollisionDump event. Passive sessions (ManualStart with
 * ctx.passive) wait in Active for a connection handed to them and never initiate one.
 *
 * Also here, pure helpers for OPEN checks, hold-time negotiation, collision resolution and
 * RFC 9003 shutdown communication, so that they are unit-testable without a socket.
 */
import type { OpenMessage } from '../types.ts';

export const STATES = ['Idle', 'Connect', 'Active', 'OpenSent', 'OpenConfirm', 'Established'] as const;
export type State = (typeof STATES)[number];

export const EVENTS = [
  'ManualStart',
  'ManualStop',
  'ConnectRetryTimerExpires',
  'HoldTimerExpires',
  'KeepaliveTimerExpires',
  'TcpConnectionConfirmed',
  'TcpConnectionFails',
  'BGPOpen',
  'BGPHeaderErr',
  'BGPOpenMsgErr',
  'NotifMsg',
  'KeepAliveMsg',
  'UpdateMsg',
  'UpdateMsgErr',
  'RouteRefreshMsg',
  'OpenCollisionDump',
] as const;
export type Event = (typeof EVENTS)[number];

export type TimerName = 'connectRetry' | 'hold' | 'keepalive';

export interface NotificationSpec {
  readonly code: number;
  readonly subcode: number;
  readonly data?: Uint8Array;
}

export type Action =
  | { readonly type: 'SendOpen' }
  | { readonly type: 'SendKeepalive' }
  | { readonly type: 'SendNotification'; readonly code: number; readonly subcode: number; readonly data?: Uint8Array }
  | { readonly type: 'StartTimer'; readonly name: TimerName; readonly sec: number }
  | { readonly type: 'StopTimer'; readonly name: TimerName }
  | { readonly type: 'DropConnection' }
  | { readonly type: 'InitiateConnection' }
  | { readonly type: 'DeliverUpdate' }
  | { readonly type: 'DeliverRouteRefresh' }
  | { readonly type: 'Established' }
  | { readonly type: 'Down'; readonly reason: string };

export interface FsmContext {
  /** Wait for connections (never initiate one). */
  readonly passive: boolean;
  readonly connectRetrySec: number;
  /** The negotiated hold time (from BGPOpen on); 0 disables the hold and keepalive timers. */
  readonly holdTimeSec: number;
  /** What to send for BGPHeaderErr, BGPOpenMsgErr and UpdateMsgErr. */
  readonly error?: NotificationSpec;
  /** Extra words for a Down reason (the NOTIFICATION received, the socket error...). */
  readonly detail?: string;
}

export interface Transition {
  readonly next: State;
  readonly actions: readonly Action[];
}

export type FsmTable = Record<State, Record<Event, (ctx: FsmContext) => Transition>>;

/** NOTIFICATION error codes (RFC 4271 4.5) and the subcodes the session uses. */
export const ErrorCode = {
  MessageHeader: 1,
  OpenMessage: 2,
  UpdateMessage: 3,
  HoldTimerExpired: 4,
  Fsm: 5,
  Cease: 6,
} as const;

export const OpenSubcode = {
  UnsupportedVersion: 1,
  BadPeerAs: 2,
  BadBgpId: 3,
  UnsupportedOptionalParameter: 4,
  UnacceptableHoldTime: 6,
  UnsupportedCapability: 7,
} as const;

/** RFC 6608 subcodes of the FSM error. */
export const FsmSubcode = { Unspecified: 0, OpenSent: 1, OpenConfirm: 2, Established: 3 } as const;

/** RFC 4486 Cease subcodes. */
export const CeaseSubcode = {
  MaxPrefixes: 1,
  AdministrativeShutdown: 2,
  PeerDeconfigured: 3,
  AdministrativeReset: 4,
  ConnectionRejected: 5,
  OtherConfigChange: 6,
  ConnectionCollisionResolution: 7,
  OutOfResources: 8,
} as const;

/** RFC 4271 8.2.2: "a large value (4 minutes)" for the hold timer while waiting for OPEN. */
export const OPEN_HOLD_SEC = 240;
export const DEFAULT_HOLD_SEC = 90;
export const DEFAULT_CONNECT_RETRY_SEC = 5;

/** Keepalive interval for a negotiated hold time: a third of it, at least 1 s; 0 when disabled. */
export function keepaliveSec(holdTimeSec: number): number {
  return holdTimeSec === 0 ? 0 : Math.max(1, Math.floor(holdTimeSec / 3));
}

// ---------------------------------------------------------------------------------------------
// Transition building blocks
// ---------------------------------------------------------------------------------------------

const t = (next: State, ...actions: Action[]): Transition => ({ next, actions });
const stay = (state: State) => (): Transition => t(state);
const start = (name: TimerName, sec: number): Action => ({ type: 'StartTimer', name, sec });
const stopTimer = (name: TimerName): Action => ({ type: 'StopTimer', name });
const notify = (code: number, subcode: number, data?: Uint8Array): Action =>
  data ? { type: 'SendNotification', code, subcode, data } : { type: 'SendNotification', code, subcode };
const STOP_ALL: readonly Action[] = [stopTimer('connectRetry'), stopTimer('hold'), stopTimer('keepalive')];
const DROP: Action = { type: 'DropConnection' };

function reason(what: string, ctx: FsmContext): string {
  return ctx.detail ? `${what}: ${ctx.detail}` : what;
}

/** To Idle from a state with a BGP connection, optionally sending a NOTIFICATION first. */
function toIdle(what: string, n?: NotificationSpec) {
  return (ctx: FsmContext): Transition =>
    t('Idle', ...(n ? [notify(n.code, n.subcode, n.data)] : []), ...STOP_ALL, DROP, { type: 'Down', reason: reason(what, ctx) });
}

/** To Idle sending the NOTIFICATION the event carries (ctx.error). */
function toIdleWithError(what: string) {
  return (ctx: FsmContext): Transition => {
    const e = ctx.error ?? { code: ErrorCode.Fsm, subcode: FsmSubcode.Unspecified };
    return toIdle(`${what} (sent NOTIFICATION ${e.code}/${e.subcode})`, e)(ctx);
  };
}

/** An event the state does not expect: FSM error (code 5, RFC 6608 subcode), then Idle. */
function fsmError(state: State, subcode: number) {
  return (ctx: FsmContext): Transition =>
    toIdle(`unexpected event in ${state} (sent NOTIFICATION 5/${subcode})`, { code: ErrorCode.Fsm, subcode })(ctx);
}

/** Hold and keepalive timers once the peer's OPEN has fixed the hold time. */
function negotiatedTimers(ctx: FsmContext): Action[] {
  if (ctx.holdTimeSec === 0) return [stopTimer('hold'), stopTimer('keepalive')];
  return [start('hold', ctx.holdTimeSec), start('keepalive', keepaliveSec(ctx.holdTimeSec))];
}

const restartHold = (ctx: FsmContext): Action[] => (ctx.holdTimeSec === 0 ? [] : [start('hold', ctx.holdTimeSec)]);

/** A TCP connection is up (either direction): send OPEN, wait for the peer's with a large hold timer. */
const connected = (): Transition => t('OpenSent', stopTimer('connectRetry'), { type: 'SendOpen' }, start('hold', OPEN_HOLD_SEC));

/** Connect and Active: events that need a BGP connection; back to Idle (RFC 4271 8.2.2). */
const noConnectionYet = (state: State) => (ctx: FsmContext): Transition =>
  t('Idle', ...STOP_ALL, DROP, { type: 'Down', reason: reason(`unexpected event in ${state}`, ctx) });

const CEASE_ADMIN: NotificationSpec = { code: ErrorCode.Cease, subcode: CeaseSubcode.AdministrativeShutdown };
const CEASE_COLLISION: NotificationSpec = { code: ErrorCode.Cease, subcode: CeaseSubcode.ConnectionCollisionResolution };
const HOLD_EXPIRED: NotificationSpec = { code: ErrorCode.HoldTimerExpired, subcode: 0 };

/** ManualStop in a state with a BGP connection: Cease/Administrative Shutdown (data from ctx.error if given). */
const manualStop = (ctx: FsmContext): Transition => toIdle('stopped', ctx.error ?? CEASE_ADMIN)(ctx);

export const FSM: FsmTable = {
  Idle: {
    ManualStart: (ctx) =>
      ctx.passive ? t('Active') : t('Connect', start('connectRetry', ctx.connectRetrySec), { type: 'InitiateConnection' }),
    ManualStop: stay('Idle'),
    ConnectRetryTimerExpires: stay('Idle'),
    HoldTimerExpires: stay('Idle'),
    KeepaliveTimerExpires: stay('Idle'),
    // A connection while stopped is refused.
    TcpConnectionConfirmed: () => t('Idle', DROP),
    TcpConnectionFails: stay('Idle'),
    BGPOpen: stay('Idle'),
    BGPHeaderErr: stay('Idle'),
    BGPOpenMsgErr: stay('Idle'),
    NotifMsg: stay('Idle'),
    KeepAliveMsg: stay('Idle'),
    UpdateMsg: stay('Idle'),
    UpdateMsgErr: stay('Idle'),
    RouteRefreshMsg: stay('Idle'),
    OpenCollisionDump: stay('Idle'),
  },

  Connect: {
    ManualStart: stay('Connect'),
    ManualStop: (ctx) => t('Idle', ...STOP_ALL, DROP, { type: 'Down', reason: reason('stopped', ctx) }),
    ConnectRetryTimerExpires: (ctx) =>
      t('Connect', DROP, start('connectRetry', ctx.connectRetrySec), { type: 'InitiateConnection' }),
    HoldTimerExpires: noConnectionYet('Connect'),
    KeepaliveTimerExpires: noConnectionYet('Connect'),
    TcpConnectionConfirmed: connected,
    // Retry later; meanwhile accept a connection from the peer (Active).
    TcpConnectionFails: (ctx) => t('Active', DROP, start('connectRetry', ctx.connectRetrySec)),
    BGPOpen: noConnectionYet('Connect'),
    BGPHeaderErr: noConnectionYet('Connect'),
    BGPOpenMsgErr: noConnectionYet('Connect'),
    NotifMsg: noConnectionYet('Connect'),
    KeepAliveMsg: noConnectionYet('Connect'),
    UpdateMsg: noConnectionYet('Connect'),
    UpdateMsgErr: noConnectionYet('Connect'),
    RouteRefreshMsg: noConnectionYet('Connect'),
    OpenCollisionDump: noConnectionYet('Connect'),
  },

  Active: {
    ManualStart: stay('Active'),
    ManualStop: (ctx) => t('Idle', ...STOP_ALL, DROP, { type: 'Down', reason: reason('stopped', ctx) }),
    ConnectRetryTimerExpires: (ctx) =>
      ctx.passive ? t('Active') : t('Connect', start('connectRetry', ctx.connectRetrySec), { type: 'InitiateConnection' }),
    HoldTimerExpires: noConnectionYet('Active'),
    KeepaliveTimerExpires: noConnectionYet('Active'),
    TcpConnectionConfirmed: connected,
    // No connection in Active: nothing to fail; keep waiting.
    TcpConnectionFails: stay('Active'),
    BGPOpen: noConnectionYet('Active'),
    BGPHeaderErr: noConnectionYet('Active'),
    BGPOpenMsgErr: noConnectionYet('Active'),
    NotifMsg: noConnectionYet('Active'),
    KeepAliveMsg: noConnectionYet('Active'),
    UpdateMsg: noConnectionYet('Active'),
    UpdateMsgErr: noConnectionYet('Active'),
    RouteRefreshMsg: noConnectionYet('Active'),
    OpenCollisionDump: noConnectionYet('Active'),
  },

  OpenSent: {
    ManualStart: stay('OpenSent'),
    ManualStop: manualStop,
    ConnectRetryTimerExpires: fsmError('OpenSent', FsmSubcode.OpenSent),
    HoldTimerExpires: toIdle('hold timer expired in OpenSent', HOLD_EXPIRED),
    KeepaliveTimerExpires: fsmError('OpenSent', FsmSubcode.OpenSent),
    // A second connection is the session's business (collision detection), not this one's.
    TcpConnectionConfirmed: stay('OpenSent'),
    TcpConnectionFails: (ctx) =>
      ctx.passive
        ? t('Idle', ...STOP_ALL, DROP, { type: 'Down', reason: reason('connection lost in OpenSent', ctx) })
        : t('Active', stopTimer('hold'), stopTimer('keepalive'), DROP, start('connectRetry', ctx.connectRetrySec)),
    BGPOpen: (ctx) => t('OpenConfirm', stopTimer('connectRetry'), { type: 'SendKeepalive' }, ...negotiatedTimers(ctx)),
    BGPHeaderErr: toIdleWithError('bad message header in OpenSent'),
    BGPOpenMsgErr: toIdleWithError('bad OPEN'),
    OpenCollisionDump: toIdle('connection collision', CEASE_COLLISION),
    NotifMsg: toIdle('NOTIFICATION received in OpenSent'),
    KeepAliveMsg: fsmError('OpenSent', FsmSubcode.OpenSent),
    UpdateMsg: fsmError('OpenSent', FsmSubcode.OpenSent),
    UpdateMsgErr: fsmError('OpenSent', FsmSubcode.OpenSent),
    RouteRefreshMsg: fsmError('OpenSent', FsmSubcode.OpenSent),
  },

  OpenConfirm: {
    ManualStart: stay('OpenConfirm'),
    ManualStop: manualStop,
    ConnectRetryTimerExpires: fsmError('OpenConfirm', FsmSubcode.OpenConfirm),
    HoldTimerExpires: toIdle('hold timer expired in OpenConfirm', HOLD_EXPIRED),
    KeepaliveTimerExpires: (ctx) => t('OpenConfirm', { type: 'SendKeepalive' }, start('keepalive', keepaliveSec(ctx.holdTimeSec))),
    TcpConnectionConfirmed: stay('OpenConfirm'),
    TcpConnectionFails: toIdle('connection lost in OpenConfirm'),
    BGPOpen: fsmError('OpenConfirm', FsmSubcode.OpenConfirm),
    BGPHeaderErr: toIdleWithError('bad message header in OpenConfirm'),
    BGPOpenMsgErr: toIdleWithError('bad OPEN in OpenConfirm'),
    OpenCollisionDump: toIdle('connection collision', CEASE_COLLISION),
    NotifMsg: toIdle('NOTIFICATION received in OpenConfirm'),
    KeepAliveMsg: (ctx) => t('Established', ...restartHold(ctx), { type: 'Established' }),
    UpdateMsg: fsmError('OpenConfirm', FsmSubcode.OpenConfirm),
    UpdateMsgErr: fsmError('OpenConfirm', FsmSubcode.OpenConfirm),
    RouteRefreshMsg: fsmError('OpenConfirm', FsmSubcode.OpenConfirm),
  },

  Established: {
    ManualStart: stay('Established'),
    ManualStop: manualStop,
    ConnectRetryTimerExpires: fsmError('Established', FsmSubcode.Established),
    HoldTimerExpires: toIdle('hold timer expired', HOLD_EXPIRED),
    KeepaliveTimerExpires: (ctx) => t('Established', { type: 'SendKeepalive' }, start('keepalive', keepaliveSec(ctx.holdTimeSec))),
    TcpConnectionConfirmed: stay('Established'),
    TcpConnectionFails: toIdle('connection lost'),
    BGPOpen: fsmError('Established', FsmSubcode.Established),
    BGPHeaderErr: toIdleWithError('bad message header'),
    BGPOpenMsgErr: toIdleWithError('bad OPEN in Established'),
    OpenCollisionDump: toIdle('connection collision', CEASE_COLLISION),
    NotifMsg: toIdle('NOTIFICATION received'),
    KeepAliveMsg: (ctx) => t('Established', ...restartHold(ctx)),
    UpdateMsg: (ctx) => t('Established', ...restartHold(ctx), { type: 'DeliverUpdate' }),
    UpdateMsgErr: toIdleWithError('bad UPDATE'),
    RouteRefreshMsg: (ctx) => t('Established', ...restartHold(ctx), { type: 'DeliverRouteRefresh' }),
  },
};

/** One step of the FSM. */
export function step(state: State, event: Event, ctx: FsmContext): Transition {
  return FSM[state][event](ctx);
}

// ---------------------------------------------------------------------------------------------
// OPEN checks, negotiation, collision
// ---------------------------------------------------------------------------------------------

export const AS_TRANS = 23456;

/** A dotted quad as an unsigned 32-bit number, or undefined when it is not one. */
export function ipv4ToUint(addr: string): number | undefined {
  const parts = addr.split('.');
  if (parts.length !== 4) return undefined;
  let n = 0;
  for (const p of parts) {
    if (!/^\d{1,3}$/.test(p)) return undefined;
    const v = Number(p);
    if (v > 255) return undefined;
    n = n * 256 + v;
  }
  return n;
}

export interface OpenCheckConfig {
  readonly localAs: number;
  readonly peerAs: number;
  readonly localId: string;
}

/** The peer's real AS from its OPEN: the 4-octet AS capability when present, else My AS. */
export function peerAsOf(open: OpenMessage): number {
  return open.capabilities.as4 ?? open.myAs;
}

/**
 * RFC 4271 6.2 (+ RFC 6793, RFC 6286) checks of a received OPEN, as the NOTIFICATION to send, or
 * undefined when it is acceptable.
 */
export function checkOpen(open: OpenMessage, cfg: OpenCheckConfig): NotificationSpec | undefined {
  if (open.version !== 4) return { code: ErrorCode.OpenMessage, subcode: OpenSubcode.UnsupportedVersion, data: Uint8Array.of(0, 4) };
  const as = peerAsOf(open);
  if (as !== cfg.peerAs || (open.capabilities.as4 === undefined && open.myAs === AS_TRANS)) {
    return { code: ErrorCode.OpenMessage, subcode: OpenSubcode.BadPeerAs };
  }
  if (open.holdTime === 1 || open.holdTime === 2) return { code: ErrorCode.OpenMessage, subcode: OpenSubcode.UnacceptableHoldTime };
  const id = ipv4ToUint(open.bgpId);
  if (id === undefined || id === 0 || (cfg.peerAs === cfg.localAs && open.bgpId === cfg.localId)) {
    return { code: ErrorCode.OpenMessage, subcode: OpenSubcode.BadBgpId };
  }
  return undefined;
}

/** The hold time both sides use: the smaller of the two (0 when either says 0). */
export function negotiateHoldTime(localSec: number, remoteSec: number): number {
  return Math.min(localSec, remoteSec);
}

export type Direction = 'outgoing' | 'incoming';

/**
 * RFC 4271 6.8: of two connections with the same peer, keep the one initiated by the speaker with
 * the higher BGP Identifier (compared as unsigned 32-bit integers).
 */
export function collisionWinner(localId: string, remoteId: string): Direction {
  return (ipv4ToUint(localId) ?? 0) > (ipv4ToUint(remoteId) ?? 0) ? 'outgoing' : 'incoming';
}

/** RFC 9003 shutdown communication: a length octet and up to 255 octets of UTF-8 (cut at a character). */
export function shutdownData(text: string): Uint8Array {
  const enc = new TextEncoder();
  let bytes = enc.encode(text);
  if (bytes.length > 255) {
    let s = text;
    while (enc.encode(s).length > 255) s = s.slice(0, -1);
    bytes = enc.encode(s);
  }
  const out = new Uint8Array(bytes.length + 1);
  out[0] = bytes.length;
  out.set(bytes, 1);
  return out;
}
