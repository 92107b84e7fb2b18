/**
 * The BGP FSM (src/bgp/session/fsm.ts) driven as a model with a FakeClock: timers armed and
 * cleared by the FSM's own actions, messages fed as events, everything sent recorded. Then
 * BgpSession (src/bgp/session/session.ts) against a scripted peer and against another BgpSession
 * over real TCP on 127.0.0.1.
 */
import { describe, test, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, connect, type Server, type Socket, type AddressInfo } from 'node:net';
import fc from 'fast-check';
import {
  EVENTS,
  FSM,
  STATES,
  OPEN_HOLD_SEC,
  checkOpen,
  collisionWinner,
  negotiateHoldTime,
  keepaliveSec,
  shutdownData,
  step,
  type Action,
  type Event,
  type State,
  type TimerName,
  type FsmContext,
} from '../../src/bgp/session/fsm.ts';
import { FakeClock, type TimerHandle } from '../../src/bgp/session/clock.ts';
import { BgpSession, type DownInfo, type EstablishedInfo } from '../../src/bgp/session/session.ts';
import { encodeMessage, decodeMessage, Framer, packUpdates, endOfRib } from '../../src/bgp/codec/index.ts';
import type { BgpMessage, OpenMessage, UpdateMessage } from '../../src/bgp/types.ts';
import { setLogLevel } from '../../src/log.ts';

setLogLevel('silent');

// ---------------------------------------------------------------------------------------------
// The model: FSM + FakeClock
// ---------------------------------------------------------------------------------------------

class Model {
  state: State = 'Idle';
  readonly clock = new FakeClock();
  readonly timers = new Map<TimerName, TimerHandle>();
  readonly log: Action[] = [];
  ctx: FsmContext;

  constructor(ctx: Partial<FsmContext> = {}) {
    this.ctx = { passive: false, connectRetrySec: 5, holdTimeSec: 90, ...ctx };
  }

  fire(event: Event, extra: Partial<FsmContext> = {}): Action[] {
    const tr = step(this.state, event, { ...this.ctx, ...extra });
    this.state = tr.next;
    for (const a of tr.actions) {
      this.log.push(a);
      if (a.type === 'StartTimer') {
        const old = this.timers.get(a.name);
        if (old) this.clock.clearTimer(old);
        const name = a.name;
        const h = this.clock.setTimer(a.sec * 1000, () => {
          if (this.timers.get(name) !== h) return;
          this.timers.delete(name);
          this.fire(name === 'hold' ? 'HoldTimerExpires' : name === 'keepalive' ? 'KeepaliveTimerExpires' : 'ConnectRetryTimerExpires');
        });
        this.timers.set(name, h);
      } else if (a.type === 'StopTimer') {
        const old = this.timers.get(a.name);
        if (old) this.clock.clearTimer(old);
        this.timers.delete(a.name);
      }
    }
    return [...tr.actions];
  }

  /** Drive to `target` along the normal path (active side). */
  to(target: State): this {
    const path: Array<[State, Event]> = [
      ['Connect', 'ManualStart'],
      ['OpenSent', 'TcpConnectionConfirmed'],
      ['OpenConfirm', 'BGPOpen'],
      ['Established', 'KeepAliveMsg'],
    ];
    if (target === 'Idle') return this;
    for (const [s, e] of path) {
      this.fire(e);
      assert.equal(this.state, s);
      if (s === target) return this;
    }
    throw new Error(`no path to ${target}`);
  }

  sent(type: Action['type']): Action[] {
    return this.log.filter((a) => a.type === type);
  }

  clearLog(): void {
    this.log.length = 0;
  }
}

const notifications = (actions: readonly Action[]) =>
  actions.filter((a): a is Extract<Action, { type: 'SendNotification' }> => a.type === 'SendNotification').map((a) => `${a.code}/${a.subcode}`);

describe('BGP FSM table', () => {
  test('every (state, event) cell exists and yields a known state', () => {
    const ctxs: FsmContext[] = [
      { passive: false, connectRetrySec: 5, holdTimeSec: 90 },
      { passive: true, connectRetrySec: 5, holdTimeSec: 0, error: { code: 3, subcode: 1 } },
    ];
    for (const s of STATES) {
      for (const e of EVENTS) {
        for (const ctx of ctxs) {
          const tr = FSM[s][e](ctx);
          assert.ok(STATES.includes(tr.next), `${s} x ${e}`);
          if (tr.next === 'Idle' && s !== 'Idle') {
            assert.ok(tr.actions.some((a) => a.type === 'Down'), `${s} x ${e} -> Idle reports Down`);
            assert.ok(tr.actions.some((a) => a.type === 'DropConnection'), `${s} x ${e} -> Idle drops the connection`);
          }
        }
      }
    }
  });

  test('active start: Connect, then OPEN on TCP up with the large hold timer, then OpenConfirm and Established', () => {
    const m = new Model();
    assert.deepEqual(
      m.fire('ManualStart').map((a) => a.type),
      ['StartTimer', 'InitiateConnection'],
    );
    assert.equal(m.state, 'Connect');
    const a = m.fire('TcpConnectionConfirmed');
    assert.equal(m.state, 'OpenSent');
    assert.ok(a.some((x) => x.type === 'SendOpen'));
    assert.ok(a.some((x) => x.type === 'StartTimer' && x.name === 'hold' && x.sec === OPEN_HOLD_SEC));
    assert.ok(!m.timers.has('connectRetry'));
    m.fire('BGPOpen');
    assert.equal(m.state, 'OpenConfirm');
    assert.equal(m.sent('SendKeepalive').length, 1);
    const e = m.fire('KeepAliveMsg');
    assert.equal(m.state, 'Established');
    assert.ok(e.some((x) => x.type === 'Established'));
  });

  test('passive start waits in Active and never initiates; connect retry does not connect', () => {
    const m = new Model({ passive: true });
    assert.deepEqual(m.fire('ManualStart'), []);
    assert.equal(m.state, 'Active');
    assert.deepEqual(m.fire('ConnectRetryTimerExpires'), []);
    assert.equal(m.state, 'Active');
    m.fire('TcpConnectionConfirmed');
    assert.equal(m.state, 'OpenSent');
  });

  test('connect failure retries every connectRetrySec', () => {
    const m = new Model({ connectRetrySec: 5 });
    m.fire('ManualStart');
    m.fire('TcpConnectionFails');
    assert.equal(m.state, 'Active');
    m.clearLog();
    m.clock.advance(4_999);
    assert.equal(m.sent('InitiateConnection').length, 0);
    m.clock.advance(1);
    assert.equal(m.state, 'Connect');
    assert.equal(m.sent('InitiateConnection').length, 1);
    // still no answer: a new attempt 5 s later
    m.clock.advance(5_000);
    assert.equal(m.sent('InitiateConnection').length, 2);
    assert.equal(m.sent('DropConnection').length, 1, 'the hanging attempt is dropped first');
  });

  for (const s of ['OpenSent', 'OpenConfirm', 'Established'] as const) {
    test(`hold timer expiry in ${s} sends NOTIFICATION 4 and goes Idle`, () => {
      const m = new Model({ holdTimeSec: 9 }).to(s);
      m.clearLog();
      // Nothing from the peer: in OpenSent the 4-minute hold, else the negotiated 9 s.
      const hold = s === 'OpenSent' ? OPEN_HOLD_SEC : 9;
      m.clock.advance(hold * 1000 - 1);
      assert.equal(m.state, s);
      m.clock.advance(1);
      assert.equal(m.state, 'Idle');
      assert.deepEqual(notifications(m.log), ['4/0']);
      assert.equal(m.sent('DropConnection').length, 1);
      assert.equal(m.timers.size, 0, 'no timer left armed');
      assert.equal(m.clock.pending, 0);
    });
  }

  test('keepalive cadence: every hold/3 s; received keepalives keep the session up', () => {
    const m = new Model({ holdTimeSec: 90 }).to('Established');
    m.clearLog();
    for (let t = 0; t < 10; t++) {
      m.clock.advance(29_000);
      m.fire('KeepAliveMsg'); // the peer's keepalive, every 29 s
    }
    // 290 s elapsed since OpenConfirm's timers were armed at t=0: keepalives at 30, 60, ..., 270.
    assert.equal(m.sent('SendKeepalive').length, 9);
    assert.equal(m.state, 'Established');
    assert.equal(keepaliveSec(90), 30);
    assert.equal(keepaliveSec(3), 1);
    assert.equal(keepaliveSec(4), 1);
  });

  test('UPDATEs restart the hold timer too', () => {
    const m = new Model({ holdTimeSec: 9 }).to('Established');
    for (let i = 0; i < 5; i++) {
      m.clock.advance(8_000);
      m.fire('UpdateMsg');
    }
    assert.equal(m.state, 'Established');
    assert.equal(m.sent('DeliverUpdate').length, 5);
  });

  test('hold time 0 disables keepalives and the hold timer', () => {
    const m = new Model({ holdTimeSec: 0 }).to('Established');
    assert.ok(!m.timers.has('hold'));
    assert.ok(!m.timers.has('keepalive'));
    m.clearLog();
    m.clock.advance(3_600_000);
    assert.equal(m.state, 'Established');
    assert.equal(m.sent('SendKeepalive').length, 0);
    assert.equal(m.clock.pending, 0);
  });

  test('NOTIFICATION received in every state: Idle afterwards, no NOTIFICATION sent back', () => {
    for (const s of STATES) {
      const m = s === 'Active' ? new Model({ passive: true }) : new Model();
      if (s === 'Active') m.fire('ManualStart');
      else m.to(s);
      assert.equal(m.state, s);
      m.clearLog();
      m.fire('NotifMsg', { detail: '6/2' });
      assert.equal(m.state, 'Idle', `from ${s}`);
      assert.deepEqual(notifications(m.log), [], `from ${s}`);
      if (s !== 'Idle') {
        const down = m.sent('Down')[0];
        assert.ok(down && down.type === 'Down' && down.reason.includes('6/2'), `from ${s}: ${JSON.stringify(down)}`);
        assert.equal(m.timers.size, 0);
      }
    }
  });

  const unexpected: Array<[State, Event, string]> = [
    ['OpenSent', 'KeepAliveMsg', '5/1'],
    ['OpenSent', 'UpdateMsg', '5/1'],
    ['OpenSent', 'RouteRefreshMsg', '5/1'],
    ['OpenSent', 'KeepaliveTimerExpires', '5/1'],
    ['OpenConfirm', 'BGPOpen', '5/2'],
    ['OpenConfirm', 'UpdateMsg', '5/2'],
    ['OpenConfirm', 'RouteRefreshMsg', '5/2'],
    ['Established', 'BGPOpen', '5/3'],
    ['Established', 'ConnectRetryTimerExpires', '5/3'],
  ];
  for (const [s, e, n] of unexpected) {
    test(`unexpected ${e} in ${s}: FSM error NOTIFICATION ${n}, Idle`, () => {
      const m = new Model().to(s);
      m.clearLog();
      m.fire(e);
      assert.equal(m.state, 'Idle');
      assert.deepEqual(notifications(m.log), [n]);
    });
  }

  test('decode errors send the NOTIFICATION they carry', () => {
    for (const [s, e] of [
      ['OpenSent', 'BGPOpenMsgErr'],
      ['OpenSent', 'BGPHeaderErr'],
      ['Established', 'UpdateMsgErr'],
      ['Established', 'BGPHeaderErr'],
    ] as Array<[State, Event]>) {
      const m = new Model().to(s);
      m.clearLog();
      m.fire(e, { error: { code: 3, subcode: 11 } });
      assert.equal(m.state, 'Idle');
      assert.deepEqual(notifications(m.log), ['3/11'], `${s} x ${e}`);
    }
  });

  test('ManualStop: Cease/2 with the shutdown communication when connected, silent otherwise', () => {
    const m = new Model().to('Established');
    m.clearLog();
    const data = shutdownData('maintenance');
    m.fire('ManualStop', { error: { code: 6, subcode: 2, data } });
    assert.equal(m.state, 'Idle');
    const n = m.sent('SendNotification')[0];
    assert.ok(n && n.type === 'SendNotification' && n.data);
    assert.equal(n.data![0], 11);
    assert.equal(new TextDecoder().decode(n.data!.subarray(1)), 'maintenance');
    const c = new Model().to('Connect');
    c.clearLog();
    c.fire('ManualStop');
    assert.equal(c.state, 'Idle');
    assert.deepEqual(notifications(c.log), []);
    assert.equal(c.timers.size, 0);
    assert.equal(shutdownData('é'.repeat(200))[0], 254, 'cut at a character boundary within 255 octets');
  });

  test('collision resolution both ways; the dumped connection gets Cease/7', () => {
    // Higher local id: keep the connection we initiated.
    assert.equal(collisionWinner('10.0.0.2', '10.0.0.1'), 'outgoing');
    assert.equal(collisionWinner('10.0.0.1', '10.0.0.2'), 'incoming');
    // Compared as unsigned 32-bit numbers, not strings.
    assert.equal(collisionWinner('192.168.0.1', '9.255.255.255'), 'outgoing');
    assert.equal(collisionWinner('9.255.255.255', '192.168.0.1'), 'incoming');
    for (const s of ['OpenSent', 'OpenConfirm', 'Established'] as const) {
      const m = new Model().to(s);
      m.clearLog();
      m.fire('OpenCollisionDump');
      assert.equal(m.state, 'Idle');
      assert.deepEqual(notifications(m.log), ['6/7']);
    }
  });

  test('OPEN checks: version, peer AS (4-octet aware), hold time 1-2, BGP identifier', () => {
    const cfg = { localAs: 64512, peerAs: 64512, localId: '10.0.0.1' };
    const open = (o: Partial<OpenMessage> = {}): OpenMessage => ({
      type: 'open',
      version: 4,
      myAs: 64512,
      holdTime: 90,
      bgpId: '10.0.0.2',
      capabilities: { multiprotocol: ['ipv4-unicast'], as4: 64512 },
      ...o,
    });
    const code = (o: OpenMessage, c = cfg) => {
      const n = checkOpen(o, c);
      return n ? `${n.code}/${n.subcode}` : 'ok';
    };
    assert.equal(code(open()), 'ok');
    assert.equal(code(open({ holdTime: 0 })), 'ok');
    assert.equal(code(open({ holdTime: 3 })), 'ok');
    assert.equal(code(open({ holdTime: 1 })), '2/6');
    assert.equal(code(open({ holdTime: 2 })), '2/6');
    assert.equal(code(open({ version: 3 })), '2/1');
    assert.equal(code(open({ myAs: 64513, capabilities: { multiprotocol: [], as4: 64513 } })), '2/2');
    assert.equal(code(open({ bgpId: '0.0.0.0' })), '2/3');
    assert.equal(code(open({ bgpId: '10.0.0.1' })), '2/3', 'iBGP peer with our own id');
    assert.equal(code(open({ myAs: 65000, bgpId: '10.0.0.1', capabilities: { multiprotocol: [] } }), { ...cfg, peerAs: 65000 }), 'ok');
    // 4-octet AS: AS_TRANS in My AS, the real AS in the capability
    const big = { localAs: 64512, peerAs: 4200000001, localId: '10.0.0.1' };
    assert.equal(code(open({ myAs: 23456, capabilities: { multiprotocol: [], as4: 4200000001 } }), big), 'ok');
    assert.equal(code(open({ myAs: 23456, capabilities: { multiprotocol: [] } }), big), '2/2');
    assert.equal(negotiateHoldTime(90, 30), 30);
    assert.equal(negotiateHoldTime(90, 0), 0);
    assert.equal(negotiateHoldTime(0, 240), 0);
  });

  test('property: random event sequences keep timers consistent with the state', () => {
    fc.assert(
      fc.property(
        fc.boolean(),
        fc.constantFrom(0, 3, 9, 90),
        fc.array(fc.oneof(fc.constantFrom(...EVENTS), fc.integer({ min: 1, max: 300_000 })), { maxLength: 60 }),
        (passive, hold, steps) => {
          const m = new Model({ passive, holdTimeSec: hold });
          for (const s of steps) {
            if (typeof s === 'number') m.clock.advance(s);
            else m.fire(s, { error: { code: 3, subcode: 1 } });
            if (m.state === 'Idle') assert.equal(m.timers.size, 0, 'Idle has no timers');
            if (m.state === 'Established' || m.state === 'OpenConfirm') {
              assert.equal(m.timers.has('keepalive'), hold > 0);
              assert.equal(m.timers.has('hold'), hold > 0);
            }
            if (m.state === 'OpenSent') assert.ok(m.timers.has('hold'));
            if (passive && m.state !== 'Idle') assert.ok(!m.log.some((a) => a.type === 'InitiateConnection'));
          }
        },
      ),
      { numRuns: 300 },
    );
  });
});

// ---------------------------------------------------------------------------------------------
// BgpSession over real sockets
// ---------------------------------------------------------------------------------------------

const CAPS = { multiprotocol: ['ipv4-unicast', 'ipv6-unicast'] as const, routeRefresh: true };
const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
    p.then(
      (v) => {
        clearTimeout(t);
        resolve(v);
      },
      (e: unknown) => {
        clearTimeout(t);
        reject(e);
      },
    );
  });
}

function once<T>(s: BgpSession, ev: 'established' | 'down' | 'update', ms = 5_000): Promise<T> {
  return withTimeout(new Promise<T>((resolve) => s.once(ev, (x: unknown) => resolve(x as T))), ms, `${ev}`);
}

async function listen(onSocket: (s: Socket) => void): Promise<{ server: Server; port: number }> {
  const server = createServer(onSocket);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  cleanups.push(() => new Promise<void>((r) => server.close(() => r())));
  return { server, port: (server.address() as AddressInfo).port };
}

function session(o: Partial<ConstructorParameters<typeof BgpSession>[0]> & { peerPort: number }): BgpSession {
  const s = new BgpSession({
    localAs: 64512,
    peerAs: 64512,
    localId: '10.0.0.1',
    peerAddress: '127.0.0.1',
    capabilities: { multiprotocol: [...CAPS.multiprotocol], routeRefresh: true },
    connectRetrySec: 1,
    ...o,
  });
  cleanups.push(() => s.stop());
  return s;
}

/** A scripted peer on a raw socket: frames and decodes what the session sends. */
class RawPeer {
  readonly msgs: BgpMessage[] = [];
  readonly #framer = new Framer();
  readonly #waiters = new Set<() => void>();
  closed = false;
  readonly socket: Socket;
  constructor(socket: Socket) {
    this.socket = socket;
    socket.on('data', (d: Buffer) => {
      for (const f of this.#framer.push(d)) this.msgs.push(decodeMessage(f, { as4: true }));
      for (const w of this.#waiters) w();
    });
    socket.on('close', () => {
      this.closed = true;
      for (const w of this.#waiters) w();
    });
    socket.on('error', () => undefined);
  }
  send(m: BgpMessage): void {
    this.socket.write(encodeMessage(m, { as4: true }));
  }
  wait(what: string, cond: () => boolean, ms = 5_000): Promise<void> {
    return withTimeout(
      new Promise<void>((resolve) => {
        const check = (): void => {
          if (cond()) {
            this.#waiters.delete(check);
            resolve();
          }
        };
        this.#waiters.add(check);
        check();
      }),
      ms,
      what,
    );
  }
  of<T extends BgpMessage['type']>(type: T): Array<Extract<BgpMessage, { type: T }>> {
    return this.msgs.filter((m): m is Extract<BgpMessage, { type: T }> => m.type === type);
  }
}

const peerOpen = (o: Partial<OpenMessage> = {}): OpenMessage => ({
  type: 'open',
  version: 4,
  myAs: 64512,
  holdTime: 9,
  bgpId: '10.0.0.2',
  capabilities: { multiprotocol: ['ipv4-unicast'], as4: 64512 },
  ...o,
});

/** A passive session on FakeClock timers, with a RawPeer connected to it. */
async function passiveWithRawPeer(o: { holdTime?: number } = {}) {
  const clock = new FakeClock();
  let s!: BgpSession;
  const { port } = await listen((sock) => s.acceptSocket(sock));
  s = session({ peerPort: 179, passive: true, clock, holdTime: o.holdTime ?? 90 });
  s.start();
  assert.equal(s.state, 'Active');
  const sock = connect(port, '127.0.0.1');
  cleanups.push(() => sock.destroy());
  const peer = new RawPeer(sock);
  await peer.wait('OPEN from the session', () => peer.of('open').length === 1);
  return { s, peer, clock };
}

describe('BgpSession', () => {
  test('scripted peer: OPEN checks, Established, keepalive cadence and hold expiry on the fake clock', async () => {
    const { s, peer, clock } = await passiveWithRawPeer();
    const open = peer.of('open')[0]!;
    assert.equal(open.myAs, 64512);
    assert.equal(open.holdTime, 90);
    assert.equal(open.capabilities.as4, 64512);
    const est = once<EstablishedInfo>(s, 'established');
    peer.send(peerOpen({ holdTime: 9 }));
    peer.send({ type: 'keepalive' });
    const info = await est;
    assert.equal(info.holdTimeSec, 9);
    assert.equal(info.keepaliveSec, 3);
    assert.equal(info.peerId, '10.0.0.2');
    assert.deepEqual([...info.negotiated.families], ['ipv4-unicast']);
    assert.equal(s.state, 'Established');
    await peer.wait('the OpenConfirm keepalive', () => peer.of('keepalive').length === 1);
    clock.advance(3_000);
    await peer.wait('keepalive at 3 s', () => peer.of('keepalive').length === 2);
    clock.advance(3_000);
    await peer.wait('keepalive at 6 s', () => peer.of('keepalive').length === 3);
    const down = once<DownInfo>(s, 'down');
    clock.advance(3_000);
    const d = await down;
    assert.ok(d.wasEstablished);
    assert.deepEqual([d.notification?.direction, d.notification?.code], ['sent', 4]);
    await peer.wait('NOTIFICATION 4 and close', () => peer.closed && peer.of('notification').length === 1);
    assert.equal(peer.of('notification')[0]!.code, 4);
    assert.equal(s.state, 'Active', 'a passive session waits again');
  });

  test('scripted peer: hold time 1 is rejected with OPEN error 6; bad AS with 2', async () => {
    for (const [o, sub] of [
      [{ holdTime: 1 }, 6],
      [{ myAs: 65001, capabilities: { multiprotocol: [], as4: 65001 } }, 2],
    ] as Array<[Partial<OpenMessage>, number]>) {
      const { s, peer } = await passiveWithRawPeer();
      const down = once<DownInfo>(s, 'down');
      peer.send(peerOpen(o));
      const d = await down;
      assert.equal(d.notification?.code, 2);
      assert.equal(d.notification?.subcode, sub);
      await peer.wait('NOTIFICATION', () => peer.closed && peer.of('notification').length === 1);
      assert.deepEqual([peer.of('notification')[0]!.code, peer.of('notification')[0]!.subcode], [2, sub]);
      await s.stop();
    }
  });

  test('scripted peer: a malformed message closes this session with the codec NOTIFICATION; unexpected UPDATE in OpenSent is 5/1', async () => {
    {
      const { s, peer } = await passiveWithRawPeer();
      peer.send(peerOpen());
      peer.send({ type: 'keepalive' });
      await once(s, 'established');
      const down = once<DownInfo>(s, 'down');
      // An UPDATE whose attribute list length runs past the message: UPDATE error 3/1.
      const bad = Buffer.from(encodeMessage({ type: 'keepalive' }, { as4: true }));
      const frame = Buffer.concat([bad, Buffer.from([0, 0, 0, 50])]);
      frame.writeUInt16BE(frame.length, 16);
      frame[18] = 2;
      peer.socket.write(frame);
      const d = await down;
      assert.equal(d.notification?.direction, 'sent');
      assert.equal(d.notification?.code, 3);
      await peer.wait('close', () => peer.closed);
    }
    {
      const { s, peer } = await passiveWithRawPeer();
      const down = once<DownInfo>(s, 'down');
      peer.socket.write(endOfRib('ipv4-unicast', { as4: true }));
      const d = await down;
      assert.deepEqual([d.notification?.code, d.notification?.subcode], [5, 1]);
    }
  });

  const updateFrame = encodeMessage(
    { type: 'update', withdrawn: [], attributes: { origin: 0, asPath: [], nextHop: '10.0.0.2', localPref: 100 }, nlri: [{ prefix: '10.66.0.0/24' }] },
    { as4: true },
  );

  test('pauseInput(): nothing is delivered and the hold timer does not blame the peer; resumeInput() delivers all', async () => {
    const { s, peer, clock } = await passiveWithRawPeer();
    peer.send(peerOpen({ holdTime: 9 }));
    peer.send({ type: 'keepalive' });
    await once(s, 'established');
    let got = 0;
    s.on('update', () => got++);
    s.pauseInput();
    peer.socket.write(Buffer.concat(Array.from({ length: 50 }, () => updateFrame)));
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(got, 0);
    clock.advance(30_000); // three hold times
    assert.equal(s.state, 'Established');
    await peer.wait('our keepalives go on', () => peer.of('keepalive').length >= 10);
    s.resumeInput();
    await withTimeout(
      new Promise<void>((r) => {
        const t = setInterval(() => got === 50 && (clearInterval(t), r()), 10);
      }),
      5_000,
      '50 updates',
    );
    assert.equal(s.counters.updatesIn, 50);
    assert.equal(s.counters.prefixesReceived, 50);
  });

  test('a flood of UPDATEs with a slow consumer: decoded in slices, keepalives keep their cadence', async () => {
    let s!: BgpSession;
    const { port } = await listen((sock) => s.acceptSocket(sock));
    s = session({ peerPort: 179, passive: true, holdTime: 3 });
    s.start();
    const sock = connect(port, '127.0.0.1');
    cleanups.push(() => sock.destroy());
    const peer = new RawPeer(sock);
    const kaTimes: number[] = [];
    const origPush = peer.msgs.push.bind(peer.msgs);
    peer.msgs.push = (...m: BgpMessage[]) => {
      for (const x of m) if (x.type === 'keepalive') kaTimes.push(Date.now());
      return origPush(...m);
    };
    peer.send(peerOpen({ holdTime: 3 }));
    peer.send({ type: 'keepalive' });
    await once(s, 'established');
    const peerKa = setInterval(() => peer.send({ type: 'keepalive' }), 500);
    cleanups.push(() => clearInterval(peerKa));
    // One 64 KiB read holds ~1,300 of these: without slicing, one read would block the loop ~2 s.
    const N = 2_500;
    let got = 0;
    let downs = 0;
    s.on('down', () => downs++);
    s.on('update', () => {
      got++;
      const until = performance.now() + 1.5; // a slow consumer: ~3.75 s for all of them
      while (performance.now() < until);
    });
    const t0 = Date.now();
    peer.socket.write(Buffer.concat(Array.from({ length: N }, () => updateFrame)));
    await withTimeout(
      new Promise<void>((r) => {
        const t = setInterval(() => (got === N || downs > 0) && (clearInterval(t), r()), 20);
      }),
      30_000,
      `${N} updates`,
    );
    const took = Date.now() - t0;
    assert.equal(downs, 0);
    assert.equal(got, N);
    assert.equal(s.state, 'Established');
    const during = kaTimes.filter((t) => t >= t0 && t <= t0 + took);
    assert.ok(took > 1_500, `the consumer was slow enough to matter (${took} ms)`);
    const gaps = [t0, ...during, t0 + took].slice(1).map((t, i, a) => t - (i === 0 ? t0 : a[i - 1]!));
    assert.ok(Math.max(...gaps) < 2_500, `keepalive gaps while busy: ${gaps.join(', ')} ms`);
  });

  test('RFC 7606: an UPDATE with a malformed MED is passed on as treat-as-withdraw; the session stays up', async () => {
    const { s, peer } = await passiveWithRawPeer();
    peer.send(peerOpen());
    peer.send({ type: 'keepalive' });
    await once(s, 'established');
    // ORIGIN, AS_PATH, NEXT_HOP, MED with length 3, LOCAL_PREF; NLRI 10.66.0.0/24
    const body = Buffer.from([0, 0, 0, 27, 0x40, 1, 1, 0, 0x40, 2, 0, 0x40, 3, 4, 10, 0, 0, 2, 0x80, 4, 3, 0, 0, 0, 0x40, 5, 4, 0, 0, 0, 100, 24, 10, 66, 0]);
    const hdr = Buffer.alloc(19, 0xff);
    hdr.writeUInt16BE(19 + body.length, 16);
    hdr[18] = 2;
    const got = once<UpdateMessage>(s, 'update');
    peer.socket.write(Buffer.concat([hdr, body]));
    const u = await got;
    assert.equal(u.handling, 'treat-as-withdraw');
    assert.deepEqual(u.nlri.map((n) => n.prefix), ['10.66.0.0/24']);
    assert.equal(s.counters.updatesWithErrors, 1);
    assert.equal(s.state, 'Established');
    assert.equal(peer.of('notification').length, 0);
  });

  test('send() backpressure: resolves on drain once the peer reads again', async () => {
    let b!: BgpSession;
    const { port } = await listen((sock) => b.acceptSocket(sock));
    b = session({ peerPort: 179, passive: true, localId: '10.0.0.2' });
    const a = session({ peerPort: port, localId: '10.0.0.1' });
    b.start();
    const est = Promise.all([once(a, 'established'), once(b, 'established')]);
    a.start();
    await est;
    let got = 0;
    b.on('update', () => got++);
    b.pauseInput();
    const batch = Array.from({ length: 1000 }, () => updateFrame);
    let sent = 0;
    let pending: Promise<void> | undefined;
    // Fill our socket buffer, the kernel's and the peer's until a send() stays pending.
    for (let i = 0; i < 500 && !pending; i++) {
      const p = a.send(batch);
      sent += batch.length;
      if (a.writable) continue;
      const stuck = await Promise.race([p.then(() => false), new Promise<boolean>((r) => setTimeout(() => r(true), 300))]);
      if (stuck) pending = p;
    }
    assert.ok(pending, 'send() waits while the peer does not read');
    assert.equal(a.writable, false);
    let drained = false;
    a.once('drain', () => (drained = true));
    assert.ok(got < sent, 'the paused peer has not taken everything');
    b.resumeInput();
    await withTimeout(pending, 10_000, 'drain');
    assert.ok(drained);
    await withTimeout(
      new Promise<void>((r) => {
        const t = setInterval(() => got === sent && (clearInterval(t), r()), 10);
      }),
      20_000,
      `${sent} updates`,
    );
    assert.equal(a.counters.updatesOut, sent);
    assert.equal(b.counters.updatesIn, sent);
  });

  test('stop() sends Cease/2 with the RFC 9003 shutdown communication', async () => {
    const { s, peer } = await passiveWithRawPeer();
    peer.send(peerOpen());
    peer.send({ type: 'keepalive' });
    await once(s, 'established');
    await withTimeout(s.stop('going for maintenance'), 5_000, 'stop');
    await peer.wait('NOTIFICATION', () => peer.of('notification').length === 1);
    const n = peer.of('notification')[0]!;
    assert.deepEqual([n.code, n.subcode, n.shutdownText], [6, 2, 'going for maintenance']);
    assert.equal(s.state, 'Idle');
  });

  test('two sessions over TCP on 127.0.0.1: Established, UPDATE both ways, counters', async () => {
    let b!: BgpSession;
    const { port } = await listen((sock) => b.acceptSocket(sock));
    b = session({ peerPort: 179, passive: true, localId: '10.0.0.2' });
    const a = session({ peerPort: port, localId: '10.0.0.1', holdTime: 30 });
    b.start();
    const estA = once<EstablishedInfo>(a, 'established');
    const estB = once<EstablishedInfo>(b, 'established');
    a.start();
    const [ia, ib] = await Promise.all([estA, estB]);
    assert.equal(ia.holdTimeSec, 30);
    assert.equal(ib.holdTimeSec, 30);
    assert.equal(ia.direction, 'outgoing');
    assert.equal(ib.direction, 'incoming');
    assert.deepEqual([...ia.negotiated.families].sort(), ['ipv4-unicast', 'ipv6-unicast']);
    assert.ok(ia.negotiated.routeRefresh);

    const got = once<UpdateMessage>(b, 'update');
    const bufs = packUpdates(
      { afiSafi: 'ipv4-unicast', attributes: { origin: 0, asPath: [], localPref: 100 }, nextHop: '10.0.0.1', nlri: [{ prefix: '10.65.0.0/26' }, { prefix: '10.65.1.0/26' }], withdrawn: [] },
      a.encodeOptions!,
    );
    await a.send(bufs);
    const u = await got;
    assert.deepEqual(u.nlri.map((n) => n.prefix), ['10.65.0.0/26', '10.65.1.0/26']);
    assert.equal(u.attributes.nextHop, '10.0.0.1');
    const got6 = once<UpdateMessage>(a, 'update');
    await b.send(
      packUpdates(
        { afiSafi: 'ipv6-unicast', attributes: { origin: 0, asPath: [], localPref: 100 }, nextHop: 'fd00::2', nlri: [{ prefix: 'fd00:65::/122' }], withdrawn: [] },
        b.encodeOptions!,
      ),
    );
    const u6 = await got6;
    assert.deepEqual(u6.mpReach?.nlri.map((n) => n.prefix), ['fd00:65::/122']);
    assert.equal(b.counters.updatesIn, 1);
    assert.equal(b.counters.prefixesReceived, 2);
    assert.equal(a.counters.updatesOut, 1);
    assert.ok(a.uptimeMs >= 0);

    const downB = once<DownInfo>(b, 'down');
    await a.stop('bye');
    const d = await downB;
    assert.equal(d.notification?.direction, 'received');
    assert.equal(d.notification?.shutdownText, 'bye');
    assert.equal(b.state, 'Active');
  });

  for (const [idA, idB] of [
    ['10.0.0.1', '10.0.0.2'],
    ['10.0.0.2', '10.0.0.1'],
  ] as const) {
    test(`collision over TCP (A id ${idA}, B id ${idB}): one connection survives, initiated by the higher id`, async () => {
      let a!: BgpSession;
      let b!: BgpSession;
      // Hand over the incoming connections only once both exist, together: a real collision on both sides.
      const held: Array<() => void> = [];
      const hold = (accept: () => void): void => {
        held.push(accept);
        if (held.length === 2) for (const h of held) h();
      };
      const la = await listen((sock) => hold(() => a.acceptSocket(sock)));
      const lb = await listen((sock) => hold(() => b.acceptSocket(sock)));
      a = session({ peerPort: lb.port, localId: idA });
      b = session({ peerPort: la.port, localId: idB });
      const downs: DownInfo[] = [];
      a.on('down', (d) => downs.push(d));
      b.on('down', (d) => downs.push(d));
      const estA = once<EstablishedInfo>(a, 'established');
      const estB = once<EstablishedInfo>(b, 'established');
      a.start();
      b.start();
      const [ia, ib] = await Promise.all([estA, estB]);
      // The survivor was initiated by the higher id: if A's id is higher, A's outgoing one.
      const aHigher = idA > idB;
      assert.equal(ia.direction, aHigher ? 'outgoing' : 'incoming');
      assert.equal(ib.direction, aHigher ? 'incoming' : 'outgoing');
      assert.equal(ia.localPort, ib.remotePort, 'both ends of the same TCP connection');
      // Stable: nothing else happens for a while.
      await new Promise((r) => setTimeout(r, 300));
      assert.deepEqual(downs, []);
      assert.ok(a.counters.notificationsOut + b.counters.notificationsOut >= 1, 'the losing connection got Cease/7');
      assert.equal(a.counters.establishedTransitions + b.counters.establishedTransitions, 2);
      assert.equal(a.state, 'Established');
      assert.equal(b.state, 'Established');
    });
  }
});
