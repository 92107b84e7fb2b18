/**
 * The kernel side on a REAL kernel, inside throwaway network namespaces (never the machine's own):
 * the agent (tests/helpers/kernel-child.ts, run with `ip netns exec`) programs proto-192 routes and
 * the Calico sysctls for three workloads wired like Calico's CNI plugin; workloads ping each other
 * over IPv4 (proxy ARP for 169.254.1.1, no permanent neighbours) and IPv6 (default via the host
 * veth's link-local address); foreign routes survive; the monitor repairs a route deleted by hand
 * and brings back the route of a re-created veth; 1,000 and 10,000 routes go in one batch.
 */
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import type { RouteApplyStats } from '../../src/agent/route-reconciler.ts';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { IpBatch, checkBatchCommand } from '../../src/agent/kernel/ip-batch.ts';
import { KernelLab, waitFor, run, HOST_VETH_MAC, type AgentChild, type AgentLine, type Workload } from '../helpers/kernel-lab.ts';

type RouteStats = RouteApplyStats;

function routesOf(l: AgentLine): RouteStats {
  return l.routes as RouteStats;
}

const lab = new KernelLab();
after(async () => {
  await lab.cleanup();
  const left = (await run('ip', ['netns', 'list'])).stdout.split('\n').filter((l) => l.startsWith(`rck-${process.pid}-`));
  assert.deepEqual(left, [], 'no namespaces of ours are left');
});

async function ping(w: Workload, dst: string, family: 4 | 6 = 4): Promise<boolean> {
  const r = await run('ip', ['netns', 'exec', w.ns, 'ping', `-${family}`, '-c', '1', '-W', '1', dst], { timeoutMs: 5_000 });
  return r.code === 0;
}

async function pingWorks(w: Workload, dst: string, family: 4 | 6 = 4): Promise<void> {
  await waitFor(`ping -${family} from ${w.ns} to ${dst}`, () => ping(w, dst, family), 8_000, 50);
}

describe('kernel routes: three Calico-style workloads and a watching agent', () => {
  let host: string;
  const w: Workload[] = [];
  let agent: AgentChild;
  const endpoints = () => [
    { iface: 'cali1', ipv4Nets: ['10.65.0.1/32'], ipv6Nets: ['fd00:65::1/128'], name: 'w1' },
    { iface: 'cali2', ipv4Nets: ['10.65.0.2/32'], ipv6Nets: ['fd00:65::2/128'], name: 'w2' },
    { iface: 'cali3', ipv4Nets: ['10.65.0.3/32'], ipv6Nets: ['fd00:65::3/128'], name: 'w3' },
  ];

  before(async () => {
    host = await lab.netns();
    await lab.hostUplink(host);
    for (const i of [1, 2, 3]) w.push(await lab.workload(host, `cali${i}`, `10.65.0.${i}`, `fd00:65::${i}`));
    agent = lab.agent(host, { watch: true, endpoints: endpoints() });
    await agent.waitLine('ready', (l) => l.type === 'ready', 20_000);
  });
  after(async () => {
    await agent?.stop();
  });

  test('routes with proto 192 on the right devices, and the sysctls set', async () => {
    const first = agent.lines.find((l) => l.type === 'applied')!;
    assert.equal(routesOf(first).added, 6, JSON.stringify(first));
    assert.equal(routesOf(first).failed, 0);
    assert.deepEqual(await lab.protoRoutes(host), [
      '10.65.0.1 cali1',
      '10.65.0.2 cali2',
      '10.65.0.3 cali3',
      'fd00:65::1 cali1',
      'fd00:65::2 cali2',
      'fd00:65::3 cali3',
    ]);
    const v4 = JSON.parse(await lab.ip(host, '-4', '-json', 'route', 'show', 'proto', '192')) as { scope?: string }[];
    assert.ok(v4.every((r) => r.scope === 'link'), 'scope link');
    const sysctl = async (p: string) => (await lab.exec(host, ['cat', `/proc/sys/${p}`])).trim();
    for (const i of [1, 2, 3]) {
      assert.equal(await sysctl(`net/ipv4/conf/cali${i}/proxy_arp`), '1');
      assert.equal(await sysctl(`net/ipv4/neigh/cali${i}/proxy_delay`), '0');
      assert.equal(await sysctl(`net/ipv4/conf/cali${i}/forwarding`), '1');
      assert.equal(await sysctl(`net/ipv6/conf/cali${i}/proxy_ndp`), '1');
      assert.equal(await sysctl(`net/ipv6/conf/cali${i}/forwarding`), '1');
    }
    assert.equal(await sysctl('net/ipv4/ip_forward'), '1');
    assert.equal(await sysctl('net/ipv6/conf/all/forwarding'), '1');
    // The machine's own namespace was not touched by the agent (it runs inside `host`).
    assert.equal((await run('ip', ['-4', 'route', 'show', 'proto', '192'])).stdout.includes('10.65.0.'), false);
  });

  test('workloads ping each other over IPv4 via proxy ARP, with no permanent neighbours', async () => {
    await pingWorks(w[0], '10.65.0.2');
    await pingWorks(w[1], '10.65.0.3');
    await pingWorks(w[2], '10.65.0.1');
    for (const ns of [host, ...w.map((x) => x.ns)]) {
      assert.equal((await lab.ip(ns, 'neigh', 'show', 'nud', 'permanent')).trim(), '', `no permanent neighbours in ${ns}`);
    }
    // The workload learned the gateway 169.254.1.1 from the host's proxy ARP reply: the host veth's MAC.
    const neigh = await lab.ip(w[0].ns, 'neigh', 'show', '169.254.1.1', 'dev', 'eth0');
    assert.match(neigh, new RegExp(`lladdr ${HOST_VETH_MAC}`));
  });

  test('IPv6: /128 routes and ping -6 between workloads (default via the host veth link-local)', async () => {
    const v6 = JSON.parse(await lab.ip(host, '-6', '-json', 'route', 'show', 'proto', '192')) as { dst: string; dev: string; metric: number }[];
    assert.deepEqual(v6.map((r) => `${r.dst} ${r.dev}`).sort(), ['fd00:65::1 cali1', 'fd00:65::2 cali2', 'fd00:65::3 cali3']);
    assert.equal((await lab.ip(host, '-6', 'neigh', 'show', 'proxy')).trim(), '', 'no proxy NDP entries needed');
    await pingWorks(w[0], 'fd00:65::2', 6);
    await pingWorks(w[2], 'fd00:65::1', 6);
  });

  test('foreign routes are untouched; a stale route of ours is swept on resync', async () => {
    await lab.ip(host, 'route', 'add', '10.77.0.0/24', 'dev', 'cali1', 'proto', 'static');
    await lab.ip(host, 'route', 'add', '10.78.0.0/24', 'dev', 'rcup0');
    await lab.ip(host, '-6', 'route', 'add', 'fd77::/64', 'dev', 'cali2', 'proto', 'static');
    await lab.ip(host, 'route', 'add', '10.65.9.9/32', 'dev', 'cali1', 'proto', '192', 'scope', 'link');
    const applied = await agent.request({ cmd: 'resync' });
    assert.equal(routesOf(applied).deleted, 1, JSON.stringify(applied));
    const all = await lab.ip(host, 'route', 'show');
    assert.match(all, /10\.77\.0\.0\/24 dev cali1 proto static/);
    assert.match(all, /10\.78\.0\.0\/24 dev rcup0/);
    assert.match(await lab.ip(host, '-6', 'route', 'show'), /fd77::\/64 dev cali2 proto static/);
    assert.equal(all.includes('10.65.9.9'), false, 'stale proto-192 route swept');
    // Not in sync: a route of ours nobody wants is left alone.
    await lab.ip(host, 'route', 'add', '10.65.9.8/32', 'dev', 'cali1', 'proto', '192', 'scope', 'link');
    const a2 = await agent.request({ cmd: 'resync', inSync: false });
    assert.equal(routesOf(a2).deleted, 0);
    assert.equal(routesOf(a2).deletesDeferred, 1);
    assert.match(await lab.ip(host, 'route', 'show', 'proto', '192'), /10\.65\.9\.8/);
    await agent.request({ cmd: 'resync', inSync: true });
    assert.doesNotMatch(await lab.ip(host, 'route', 'show', 'proto', '192'), /10\.65\.9\.8/);
  });

  test('a route deleted by hand is repaired by the monitor within 2 s', async () => {
    await lab.ip(host, 'route', 'del', '10.65.0.2/32', 'dev', 'cali2', 'proto', '192');
    await lab.ip(host, '-6', 'route', 'del', 'fd00:65::2/128', 'dev', 'cali2', 'proto', '192');
    const ms = await waitFor(
      'the deleted routes to come back',
      async () => {
        const rs = await lab.protoRoutes(host);
        return rs.includes('10.65.0.2 cali2') && rs.includes('fd00:65::2 cali2');
      },
      2_000,
      10,
    );
    console.log(`# route deleted by hand: repaired after ${ms} ms`);
    await pingWorks(w[0], '10.65.0.2');
  });

  test('a deleted veth takes its route; re-created, the monitor brings the route back', async () => {
    const before = agent.lines.length;
    await lab.ip(host, 'link', 'del', 'cali3');
    await waitFor('cali3 routes gone', async () => !(await lab.protoRoutes(host)).some((r) => r.endsWith('cali3')), 2_000);
    const removed = await agent.waitLine(
      'the monitor to report cali3 removed',
      (l) => l.type === 'event' && (l.event as { type: string; change?: string; name?: string }).type === 'link' && (l.event as { change: string }).change === 'removed' && (l.event as { name: string }).name === 'cali3',
      5_000,
      before,
    );
    await agent.waitLine('an apply after the link removal', (l) => l.type === 'applied', 5_000, agent.lines.indexOf(removed));
    await new Promise((r) => setTimeout(r, 200));
    // The vanished link caused no failed commands and no errors.
    const since = agent.lines.slice(before);
    assert.deepEqual(since.filter((l) => l.type === 'error'), []);
    assert.deepEqual(since.filter((l) => l.type === 'applied' && routesOf(l).failed > 0), []);
    const t0 = Date.now();
    await lab.workload(host, 'cali3', '10.65.0.3', 'fd00:65::3', w[2].ns);
    const ms = await waitFor(
      'cali3 routes back',
      async () => {
        const rs = await lab.protoRoutes(host);
        return rs.includes('10.65.0.3 cali3') && rs.includes('fd00:65::3 cali3');
      },
      5_000,
      10,
    );
    console.log(`# veth re-created: route back ${ms} ms after polling began (${Date.now() - t0} ms incl. wiring)`);
    const last = [...agent.lines].reverse().find((l) => l.type === 'applied' && routesOf(l).added > 0)!;
    assert.equal(routesOf(last).failed, 0, JSON.stringify(last));
    await pingWorks(w[0], '10.65.0.3');
    await pingWorks(w[2], 'fd00:65::2', 6);
  });

  test('the monitor is restarted when ip monitor dies, and a resync follows', async () => {
    const ready = agent.lines.find((l) => l.type === 'ready')!;
    const pid = Number(ready.monitorPid);
    assert.ok(pid > 0);
    const from = agent.lines.length;
    process.kill(pid, 'SIGKILL');
    await agent.waitLine('monitor exited', (l) => l.type === 'event' && (l.event as { type: string }).type === 'exited', 5_000, from);
    const started = await agent.waitLine('monitor restarted', (l) => l.type === 'event' && (l.event as { type: string; restarts: number }).type === 'started' && (l.event as { restarts: number }).restarts === 1, 5_000, from);
    const resync = await agent.waitLine('the resync apply after it', (l) => l.type === 'applied', 5_000, agent.lines.indexOf(started));
    assert.equal(routesOf(resync).readRoutes, true);
    assert.equal(routesOf(resync).commands, 0, 'nothing to change');
    // And the restarted monitor still works.
    await lab.ip(host, 'route', 'del', '10.65.0.1/32', 'dev', 'cali1', 'proto', '192');
    await waitFor('route repaired by the restarted monitor', async () => (await lab.protoRoutes(host)).includes('10.65.0.1 cali1'), 2_000, 10);
  });

  test('an endpoint removed from the desired state loses its route (in sync)', async () => {
    const a = await agent.request({ endpoints: endpoints().slice(0, 2), inSync: true });
    assert.equal(routesOf(a).deleted, 2);
    assert.equal((await lab.protoRoutes(host)).some((r) => r.endsWith('cali3')), false);
    assert.equal(await ping(w[0], '10.65.0.3'), false);
  });
});

describe('kernel routes: per-command errors', () => {
  test('a command that fails is reported by its line; the rest of the batch applies, in later batches too', async () => {
    const host = await lab.netns();
    await lab.ipBatch(host, ['link add cali1 type veth peer name peer1', 'link set cali1 up', 'link set peer1 up']);
    // A foreign route with the same key as one we want: `add` must fail rather than replace it.
    await lab.ip(host, 'route', 'add', '10.65.0.13/32', 'dev', 'peer1', 'proto', 'static');
    const nets = [11, 12, 13, 14, 15].map((n) => `10.65.0.${n}/32`);
    const agent = lab.agent(host, { endpoints: [{ iface: 'cali1', ipv4Nets: nets }], applies: 3 });
    await agent.waitLine('three applies', (l) => l.type === 'applied' && l.n === 3, 20_000);
    await agent.stop();
    const [a1, a2, a3] = agent.lines.filter((l) => l.type === 'applied').map(routesOf);
    assert.equal(a1.added, 4);
    assert.equal(a1.failed, 1);
    assert.deepEqual(a1.errors, ['route add 10.65.0.13/32 dev cali1: RTNETLINK answers: File exists']);
    // The failure made the view dirty: the second apply re-reads and retries only that route, in
    // the same ip process, so its line number maps across batches.
    for (const a of [a2, a3]) {
      assert.equal(a.commands, 1);
      assert.equal(a.processesSpawned, 3, 'reads only; the batch process is reused');
      assert.deepEqual(a.errors, ['route add 10.65.0.13/32 dev cali1: RTNETLINK answers: File exists']);
    }
    assert.deepEqual(await lab.protoRoutes(host), ['10.65.0.11 cali1', '10.65.0.12 cali1', '10.65.0.14 cali1', '10.65.0.15 cali1']);
    assert.match(await lab.ip(host, 'route', 'show', '10.65.0.13'), /dev peer1 proto static/);
  });
});

/** N routes: `ifaces` veth pairs (both ends up, in `host`) with N/ifaces addresses each. */
async function bulkRun(count: number, ifaces: number): Promise<AgentLine[]> {
  const host = await lab.netns();
  const lines: string[] = [];
  for (let i = 0; i < ifaces; i++) lines.push(`link add cali${i} type veth peer name peer${i}`, `link set cali${i} up`, `link set peer${i} up`);
  await lab.ipBatch(host, lines);
  const per = count / ifaces;
  const eps = [];
  for (let i = 0; i < ifaces; i++) {
    const nets = [];
    for (let j = 0; j < per; j++) {
      const n = i * per + j;
      nets.push(`10.${100 + (n >> 16)}.${(n >> 8) & 255}.${n & 255}/32`);
    }
    eps.push({ iface: `cali${i}`, ipv4Nets: nets, name: `w${i}` });
  }
  const agent = lab.agent(host, { endpoints: eps, applies: 3 });
  let timer: ReturnType<typeof setTimeout> | undefined;
  const code = await Promise.race([agent.exited, new Promise<string>((r) => (timer = setTimeout(() => r('timeout'), 60_000)))]);
  clearTimeout(timer);
  if (code !== 0) await agent.stop(100);
  assert.equal(code, 0, agent.stderr.join('\n'));
  const applied = agent.lines.filter((l) => l.type === 'applied');
  assert.equal(applied.length, 3, JSON.stringify(agent.lines));
  const inKernel = (await lab.ip(host, '-4', 'route', 'show', 'proto', '192')).trim().split('\n').length;
  assert.equal(inKernel, count);
  return applied;
}

describe('kernel routes: bulk', () => {
  for (const [count, ifaces] of [
    [1_000, 10],
    [10_000, 100],
  ] as const) {
    test(`${count.toLocaleString('en')} routes: one batch, a handful of processes, idempotent`, async () => {
      const [first, clean, dirty] = await bulkRun(count, ifaces);
      const r1 = routesOf(first);
      assert.equal(r1.added, count);
      assert.equal(r1.failed, 0);
      assert.equal(r1.batches, 1, 'one batch');
      assert.equal(r1.commands, count);
      // ip -json link show + route show (v4, v6) + the one long-lived ip -batch.
      assert.ok(r1.processesSpawned <= 4, `processes spawned: ${r1.processesSpawned}`);
      const r2 = routesOf(clean);
      assert.equal(r2.commands, 0);
      assert.equal(r2.processesSpawned, 0);
      const r3 = routesOf(dirty);
      assert.equal(r3.readRoutes, true);
      assert.equal(r3.commands, 0);
      assert.equal(r3.processesSpawned, 3);
      const f = (d: RouteStats['durationsMs']) => `total ${d.total.toFixed(1)} ms (read ${d.read.toFixed(1)}, diff ${d.diff.toFixed(1)}, write ${d.write.toFixed(1)})`;
      console.log(`# ${count} routes, first apply: ${f(r1.durationsMs)}; processes ${r1.processesSpawned}, batches ${r1.batches}`);
      console.log(`# ${count} routes, clean re-apply: ${f(r2.durationsMs)}; dirty re-apply (re-read, 0 commands): ${f(r3.durationsMs)}`);
    });
  }
});

describe('ip batch protocol (a stand-in `ip`, no kernel involved)', () => {
  // Speaks `ip -force -batch -`'s stderr protocol: message lines, then `Command failed -:<line>`.
  const FAKE_IP = `#!/bin/bash
n=0
while IFS= read -r line; do
  n=$((n+1))
  case "$line" in
    *rc/marker*) echo 'Device "rc/marker" does not exist.' >&2; echo "Command failed -:$n" >&2 ;;
    *fail*) echo "RTNETLINK answers: File exists" >&2; echo "Command failed -:$n" >&2 ;;
    *warn*) echo "Warning: something odd" >&2 ;;
    *die*) echo "Error: argument is wrong" >&2; exit 255 ;;
    *hang*) exec sleep 30 ;;
  esac
done
`;
  let dir: string;
  let ipPath: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'rck-ipbatch-'));
    ipPath = join(dir, 'ip');
    writeFileSync(ipPath, FAKE_IP);
    chmodSync(ipPath, 0o755);
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  test('failures map to their commands by line, across batches; an exit rejects; the next batch respawns', async () => {
    const b = new IpBatch({ ipPath });
    try {
      const r1 = await b.run(['route add ok1', 'route add fail1', 'route add warn1', 'route add ok2']);
      assert.equal(r1.spawned, true);
      assert.deepEqual(r1.failures, [{ index: 1, command: 'route add fail1', error: 'RTNETLINK answers: File exists' }]);
      assert.deepEqual(r1.warnings, ['Warning: something odd']);
      const r2 = await b.run(['route add fail2', 'route add ok3', 'route add fail3']);
      assert.equal(r2.spawned, false);
      assert.deepEqual(r2.failures.map((f) => [f.index, f.command]), [
        [0, 'route add fail2'],
        [2, 'route add fail3'],
      ]);
      await assert.rejects(b.run(['route add ok4', 'route add die']), (e: Error & { code?: string }) => e.code === 'E_IP_BATCH_EXITED' && /argument is wrong/.test(e.message));
      const r4 = await b.run(['route add fail4']);
      assert.equal(r4.spawned, true);
      assert.equal(b.spawnCount, 2);
      assert.deepEqual(r4.failures.map((f) => f.index), [0]);
    } finally {
      await b.close();
    }
  });

  test('a process that has read recycleAfterLines lines is replaced before the next batch; line mapping starts over', async () => {
    const b = new IpBatch({ ipPath, recycleAfterLines: 4 });
    try {
      const r1 = await b.run(['route add ok1', 'route add ok2', 'route add ok3']); // 3 lines + marker = 4
      assert.equal(r1.spawned, true);
      const r2 = await b.run(['route add ok4', 'route add fail1']);
      assert.equal(r2.spawned, true, 'the process that read 4 lines was replaced');
      assert.deepEqual(r2.failures.map((f) => [f.index, f.command]), [[1, 'route add fail1']]);
      const r3 = await b.run(['route add fail2']);
      assert.equal(r3.spawned, false, '3 lines read: kept');
      assert.deepEqual(r3.failures.map((f) => f.index), [0]);
      assert.equal(b.spawnCount, 2);
    } finally {
      await b.close();
    }
  });

  test('a batch that never completes times out and kills the process', async () => {
    const b = new IpBatch({ ipPath, timeoutMs: 300 });
    try {
      await assert.rejects(b.run(['route add hang']), (e: Error & { code?: string }) => e.code === 'E_IP_BATCH_TIMEOUT');
      const r = await b.run(['route add ok']);
      assert.equal(r.spawned, true);
      assert.deepEqual(r.failures, []);
    } finally {
      await b.close();
    }
  });

  test('commands that ip would interpret (newlines, quotes, comments, escapes) are refused', () => {
    for (const bad of ['route add 1\nroute del 2', 'route add "x"', 'route add x # y', 'route add x\\', '  ']) {
      assert.throws(() => checkBatchCommand(bad), /not allowed in an ip batch/);
    }
    checkBatchCommand('route add 10.0.0.1/32 dev cali1 proto 192 scope link table main');
  });
});
