/**
 * The README's first command, end to end: `bash scripts/lab up` (full mesh), then `up --reflector`
 * over it (which must first remove the running lab), each checked against the reachability matrix
 * that tenant isolation (examples/lab/tenants.yaml) and the one fine-grained policy
 * (examples/lab/policy.yaml) imply, read as JSON from `scripts/lab status --json`; then
 * `bash scripts/lab down` must leave no rclab-* namespace, no lab process and no state dir, and the
 * machine's own links, routes and rules as they were. `down` also runs after a failure. Serial;
 * needs root, etcd and the lab's packages (scripts/lab installs what is missing).
 */
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { labSupport, run } from '../helpers/netns.ts';
import type { Matrix, MatrixWorkload } from '../../scripts/lab-matrix.ts';

const ROOT = resolve(import.meta.dirname, '../..');
const STATE_DIR = '/run/routecat-lab';
const support = await labSupport();
const hasEtcd = (await run('etcd', ['--version'])).code === 0;
const skip = !support.ok ? support.reason : !hasEtcd ? 'etcd not installed' : false;

interface LabRun {
  readonly code: number | null;
  readonly out: string;
  readonly ms: number;
}

/** `bash scripts/lab ARGS` with its output collected (and echoed as test diagnostics on failure). */
function lab(args: readonly string[], timeoutMs = 240_000): Promise<LabRun> {
  const started = Date.now();
  return new Promise((done) => {
    const child = spawn('bash', [resolve(ROOT, 'scripts/lab'), ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (out += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('close', (code) => {
      clearTimeout(timer);
      done({ code, out, ms: Date.now() - started });
    });
  });
}

interface LabStatus {
  readonly up: boolean;
  readonly state: { readonly mode: string; readonly upSeconds?: number } | null;
  readonly processes: ReadonlyArray<{ readonly name: string; readonly running: boolean }>;
  readonly namespaces: readonly string[];
  readonly matrix: Matrix | null;
}

async function status(): Promise<LabStatus> {
  const r = await lab(['status', '--json'], 60_000);
  return JSON.parse(r.out) as LabStatus;
}

/**
 * What the policies say, written out: a workload takes traffic from its own tenant only (profile),
 * except red's database, which takes only TCP 5432 from red's web servers (tier security).
 */
function expected(from: MatrixWorkload, to: MatrixWorkload, probe: string): { result: 'allowed' | 'denied'; policy?: string } {
  if (to.tenant === 'red' && to.role === 'db') {
    return from.tenant === 'red' && from.role === 'web' && probe === 'tcp/5432' ? { result: 'allowed' } : { result: 'denied', policy: 'security.red-db-from-web' };
  }
  return from.tenant === to.tenant ? { result: 'allowed' } : { result: 'denied', policy: `tenant-${to.tenant}` };
}

const SERVICE_PORT: Record<string, number> = { web: 80, app: 8080, db: 5432 };

function checkMatrix(m: Matrix, mode: string): void {
  assert.equal(m.mode, mode);
  assert.equal(m.workloads.length, 6, 'two workloads on each of three hosts');
  for (const host of ['host1', 'host2', 'host3']) {
    assert.deepEqual(m.workloads.filter((w) => w.host === host).map((w) => w.tenant).sort(), ['blue', 'red'], `${host}: one workload of each tenant`);
  }
  assert.equal(m.cells.length, 6 * 5 * 2, 'every ordered pair, ping and TCP');
  const wrong: string[] = [];
  for (const from of m.workloads) {
    for (const to of m.workloads) {
      if (from === to) continue;
      for (const probe of ['ping', `tcp/${SERVICE_PORT[to.role]}`]) {
        const c = m.cells.find((x) => x.from === from.name && x.to === to.name && x.probe === probe);
        const want = expected(from, to, probe);
        const flow = `${from.name} -> ${to.name} ${probe}`;
        if (!c) wrong.push(`${flow}: not probed`);
        else if (c.result !== want.result) wrong.push(`${flow}: ${c.result}, expected ${want.result}`);
        else if (c.mismatch) wrong.push(`${flow}: ${c.mismatch}`);
        else if (want.policy && !(c.explain?.decidedBy ?? '').includes(want.policy)) wrong.push(`${flow}: decided by '${c.explain?.decidedBy}', expected ${want.policy}`);
        else if (want.policy && c.explain?.where !== `ingress at ${to.host}`) wrong.push(`${flow}: denied at '${c.explain?.where}', expected ingress at ${to.host}`);
      }
    }
  }
  assert.deepEqual(wrong, [], 'the measured matrix is the expected one');
  assert.equal(m.mismatches, 0);
  assert.ok(m.examples.length >= 3, 'routecat ctl explain shown for each deciding policy (two profiles, one policy)');
  for (const e of m.examples) assert.ok(e.agrees, `${e.command} agrees with the matrix:\n${e.output}`);
}

/** The machine's own network configuration that the lab must never change. */
async function rootNetwork(): Promise<string> {
  const parts = await Promise.all([
    run('ip', ['-o', 'link', 'show']).then((r) => r.stdout.split('\n').map((l) => l.split(':')[1]?.trim() ?? '').sort().join(' ')),
    run('ip', ['route', 'show', 'table', 'all']).then((r) => r.stdout),
    run('ip', ['rule', 'show']).then((r) => r.stdout),
  ]);
  return parts.join('\n---\n');
}

async function leftovers(): Promise<string[]> {
  const ns = (await run('ip', ['netns', 'list'])).stdout.split('\n').filter((l) => l.startsWith('rclab-'));
  const procs = (await run('pgrep', ['-af', STATE_DIR])).stdout.split('\n').filter((l) => l.trim() && !l.includes('pgrep'));
  return [...ns.map((n) => `namespace ${n}`), ...procs.map((p) => `process ${p}`), ...(existsSync(STATE_DIR) ? [`state dir ${STATE_DIR}`] : [])];
}

describe('scripts/lab: the README\'s first command', { skip, timeout: 600_000, concurrency: 1 }, () => {
  let rootBefore = '';

  before(async () => {
    // A lab left by an earlier run (or a person) would make the first `up` also a cleanup test.
    const r = await lab(['down'], 120_000);
    assert.equal(r.code, 0, r.out);
    rootBefore = await rootNetwork();
  });

  after(async () => {
    // Also after a failure: nothing may stay behind.
    if ((await leftovers()).length > 0) await lab(['down'], 120_000);
  });

  test('up: a full mesh; the reachability matrix is the one the policies imply', async (t) => {
    const r = await lab(['up']);
    t.diagnostic(`scripts/lab up: ${(r.ms / 1000).toFixed(1)} s`);
    assert.equal(r.code, 0, r.out);
    assert.match(r.out, /BGP sessions Established: 6 of 6/);
    assert.match(r.out, /6 of 6 routes learned/);
    assert.match(r.out, /tunnel devices on the hosts \(ipip, vxlan, wireguard, gre\): none/);
    assert.match(r.out, /node-to-node mesh \| Established/);
    assert.match(r.out, /lab is up in [\d.]+ s/);
    const s = await status();
    assert.equal(s.up, true, `every lab process runs: ${JSON.stringify(s.processes.filter((p) => !p.running))}`);
    assert.equal(s.state?.mode, 'mesh');
    assert.equal(s.namespaces.length, 14, `fabric, 3 etcd, 3 hosts, rr, 6 workloads: ${s.namespaces.join(' ')}`);
    assert.deepEqual(s.processes.filter((p) => /^(etcd|proxy|node)/.test(p.name)).map((p) => p.name).sort(), ['etcd1', 'etcd2', 'etcd3', 'node-host1', 'node-host2', 'node-host3', 'proxy-host1', 'proxy-host2', 'proxy-host3']);
    checkMatrix(s.matrix!, 'mesh');
  });

  test('up --reflector over a running lab: removes it first, then routes through routecat reflector', async (t) => {
    const r = await lab(['up', '--reflector']);
    t.diagnostic(`scripts/lab up --reflector: ${(r.ms / 1000).toFixed(1)} s`);
    assert.equal(r.code, 0, r.out);
    assert.match(r.out, /removing an earlier lab first/);
    assert.match(r.out, /BGP sessions Established: 6 of 6/);
    assert.match(r.out, /route reflector client \| Established/);
    const s = await status();
    assert.equal(s.up, true);
    assert.equal(s.state?.mode, 'reflector');
    assert.ok(s.processes.some((p) => p.name === 'reflector' && p.running), 'routecat reflector runs in rclab-rr');
    checkMatrix(s.matrix!, 'reflector');
  });

  test('down: no namespace, process or state left; the machine\'s own links, routes and rules unchanged', async () => {
    const r = await lab(['down'], 120_000);
    assert.equal(r.code, 0, r.out);
    assert.deepEqual(await leftovers(), []);
    assert.equal(await rootNetwork(), rootBefore);
    const again = await lab(['down'], 60_000);
    assert.match(again.out, /nothing to remove/);
  });
});
