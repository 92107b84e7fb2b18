/**
 * The lab's reachability matrix: from every workload to every other, a real ping and a real TCP
 * connect to the destination's service port (listeners on LISTEN_PORTS in every workload). Each
 * denial is explained by `routecat ctl explain`'s evaluator (src/policy/explain.ts: the verdict and
 * the policy or profile that decided it) over one snapshot of the datastore's resources, and the
 * `routecat ctl explain` binary itself is run once per distinct deciding policy: its output is
 * shown, and its verdict must agree. (One binary run per denial would cost ~0.4 s of CPU each,
 * most of the lab's time budget on a 2-core machine.) A probe that gets no answer although the
 * explanation says ALLOW is tried again a few times (first packets, ARP) and, if it still fails,
 * marked as a disagreement. Rendered as a table for people and kept as JSON (matrix.json) for tests.
 *
 * Owns probing and explaining; never changes the lab (no namespace, process or policy is made here).
 */
import { RESOURCE_PREFIX } from '../src/datastore/keys.ts';
import { explainFlow, type Explanation } from '../src/policy/explain.ts';
import { inNs, mustInNs, pool } from './lab-exec.ts';

/** The port each role serves (every workload listens on all of them; the matrix probes the destination's). */
export const SERVICE_PORTS: Readonly<Record<string, number>> = { web: 80, app: 8080, db: 5432 };
export const LISTEN_PORTS = [...new Set(Object.values(SERVICE_PORTS))].sort((a, b) => a - b);

export interface Probe {
  readonly id: string;
  readonly protocol: 'icmp' | 'tcp';
  readonly port?: number;
}

/** What is sent from one workload to another: a ping, and a TCP connect to the destination's service port. */
export function probesTo(to: { readonly role: string }): Probe[] {
  const port = SERVICE_PORTS[to.role] ?? 80;
  return [{ id: 'ping', protocol: 'icmp' }, { id: `tcp/${port}`, protocol: 'tcp', port }];
}

export interface MatrixWorkload {
  readonly name: string;
  readonly tenant: string;
  readonly role: string;
  readonly host: string;
  readonly ns: string;
  readonly ip: string;
}

export interface Explained {
  readonly verdict: 'allow' | 'deny';
  /** For a denial: the policy, profile or tier end that decided it, and where ("ingress at host2"). */
  readonly decidedBy?: string;
  readonly where?: string;
}

export interface Cell {
  readonly from: string;
  readonly to: string;
  readonly probe: string;
  /** What the real packets did. */
  readonly result: 'allowed' | 'denied';
  /** ctl explain's view, for every denied cell. */
  readonly explain?: Explained;
  /** Real packets and ctl explain disagree. */
  readonly mismatch?: string;
}

export interface MatrixEnv {
  readonly bin: string;
  /** Namespace and etcd endpoint `ctl explain` runs with (a host and its local proxy). */
  readonly ctlNs: string;
  readonly etcd: string;
  readonly say: (line: string) => void;
}

async function reaches(from: MatrixWorkload, to: MatrixWorkload, p: Probe): Promise<boolean> {
  const r =
    p.protocol === 'icmp'
      ? await inNs(from.ns, 'ping', ['-c', '1', '-W', '1', to.ip], { timeoutMs: 10_000 })
      : await inNs(from.ns, 'timeout', ['1', 'bash', '-c', `exec 3<>/dev/tcp/${to.ip}/${p.port}`], { timeoutMs: 10_000 });
  return r.code === 0;
}

const policyName = (id: string | undefined): string => (id ?? '?').replace(/^pro\//, 'profile ').replace(/^gnp\//, 'GlobalNetworkPolicy ').replace(/^np\//, 'NetworkPolicy ');

/** The deciding step of a denial, in words. */
export function decidedBy(e: Explanation): Explained {
  if (e.verdict === 'allow') return { verdict: 'allow' };
  const [dir, side] = e.egress?.verdict === 'deny' ? ['egress', e.egress] : ['ingress', e.ingress];
  const where = side ? `${dir} at ${side.node}` : undefined;
  const last = side?.steps.at(-1);
  if (!side || !last) return { verdict: 'deny', decidedBy: 'no step recorded', where };
  if (last.action === 'deny') {
    return { verdict: 'deny', decidedBy: `${last.tier ? `tier ${last.tier}, ` : ''}${policyName(last.policy)} rule ${last.ruleIndex ?? '?'} (Deny)`, where };
  }
  if (last.action === 'end-of-tier') return { verdict: 'deny', decidedBy: `end of tier ${last.tier ?? '?'} (no policy there allowed it)`, where };
  const profiles = [...new Set(side.steps.filter((s) => s.policy?.startsWith('pro/')).map((s) => s.policy!.slice(4)))];
  if (profiles.length > 0) return { verdict: 'deny', decidedBy: `profile ${profiles.join(', ')} (no rule allowed it: default deny)`, where };
  return { verdict: 'deny', decidedBy: last.action, where };
}

/** The datastore's resources as `routecat ctl explain` reads them (one etcd range, via etcdctl). */
async function loadResources(env: MatrixEnv): Promise<Array<{ key: string; value: string }>> {
  const out = await mustInNs(env.ctlNs, 'etcdctl', ['--endpoints', env.etcd, 'get', '--prefix', RESOURCE_PREFIX, '-w', 'json'], { timeoutMs: 30_000, env: { ETCDCTL_API: '3' } });
  const kvs = (JSON.parse(out) as { kvs?: Array<{ key: string; value: string }> }).kvs ?? [];
  const b64 = (t: string): string => Buffer.from(t, 'base64').toString('utf8');
  return kvs.map((kv) => ({ key: b64(kv.key), value: b64(kv.value) }));
}

function explainArgs(from: MatrixWorkload, to: MatrixWorkload, p: Probe): string[] {
  return ['ctl', 'explain', from.ip, to.ip, '--protocol', p.protocol, ...(p.port ? ['--port', String(p.port)] : [])];
}

/** `routecat ctl explain` as a person would run it on a host: its text output. */
async function explainByBinary(env: MatrixEnv, from: MatrixWorkload, to: MatrixWorkload, p: Probe): Promise<string> {
  return mustInNs(env.ctlNs, env.bin, [...explainArgs(from, to, p), '--etcd-endpoints', env.etcd, '--log-level', 'warn'], { timeoutMs: 60_000 });
}

export interface ExplainExample {
  /** The command, as run on the lab host. */
  readonly command: string;
  readonly output: string;
  readonly decidedBy: string;
  readonly agrees: boolean;
}

export interface Matrix {
  readonly mode: string;
  readonly probes: readonly string[];
  readonly workloads: readonly MatrixWorkload[];
  readonly cells: readonly Cell[];
  /** `routecat ctl explain` run for one denial of each distinct deciding policy. */
  readonly examples: readonly ExplainExample[];
  readonly mismatches: number;
  readonly measuredAt: string;
  readonly seconds: number;
}

/** Probes every ordered pair of workloads; explains each denial. */
export async function measureMatrix(mode: string, workloads: readonly MatrixWorkload[], env: MatrixEnv): Promise<Matrix> {
  const started = Date.now();
  const jobs: Array<{ from: MatrixWorkload; to: MatrixWorkload; p: Probe }> = [];
  for (const from of workloads) for (const to of workloads) if (from !== to) for (const p of probesTo(to)) jobs.push({ from, to, p });
  env.say(`probing ${jobs.length} flows with real packets (${workloads.length} workloads x ${workloads.length - 1} others x ping and TCP to the service port)...`);
  const resources = await loadResources(env);
  const explain = (from: MatrixWorkload, to: MatrixWorkload, p: Probe): Explained =>
    decidedBy(explainFlow(resources, { src: from.ip, dst: to.ip, protocol: p.protocol, ...(p.port ? { dstPort: p.port } : {}) }));
  let done = 0;
  let lastSaid = Date.now();
  const cells = await pool(
    10,
    jobs.map(({ from, to, p }) => async (): Promise<Cell> => {
      const base = { from: from.name, to: to.name, probe: p.id };
      let ok = await reaches(from, to, p);
      let cell: Cell;
      if (ok) cell = { ...base, result: 'allowed' };
      else {
        const ex = explain(from, to, p);
        // Policy allows it: the first packets may have raced ARP or the dataplane; try again.
        for (let i = 0; i < 4 && !ok && ex.verdict === 'allow'; i++) {
          await new Promise((r) => setTimeout(r, 500));
          ok = await reaches(from, to, p);
        }
        cell = ok ? { ...base, result: 'allowed' } : { ...base, result: 'denied', explain: ex, ...(ex.verdict === 'allow' ? { mismatch: 'no answer, but ctl explain says ALLOW' } : {}) };
      }
      done++;
      if (Date.now() - lastSaid > 2_000) {
        lastSaid = Date.now();
        env.say(`  ${done} of ${jobs.length} flows probed`);
      }
      return cell;
    }),
  );
  env.say(`  ${jobs.length} of ${jobs.length} flows probed; running routecat ctl explain for one denial of each deciding policy`);
  const byReason = new Map<string, (typeof jobs)[number]>();
  cells.forEach((c, i) => {
    const why = c.explain?.decidedBy;
    if (c.result === 'denied' && !c.mismatch && why && !byReason.has(why)) byReason.set(why, jobs[i]!);
  });
  const examples = await pool(
    2,
    [...byReason].map(([why, { from, to, p }]) => async (): Promise<ExplainExample> => {
      const output = (await explainByBinary(env, from, to, p)).trimEnd();
      const ex = explain(from, to, p);
      return { command: `routecat ${explainArgs(from, to, p).join(' ')}`, output, decidedBy: why, agrees: output.startsWith('DENY') && ex.verdict === 'deny' && output.includes(ex.decidedBy?.match(/(profile|GlobalNetworkPolicy|NetworkPolicy) (\S+)/)?.[2] ?? '\0') };
    }),
  );
  return {
    mode,
    probes: ['ping', 'tcp'],
    workloads,
    cells,
    examples,
    mismatches: cells.filter((c) => c.mismatch).length + examples.filter((e) => !e.agrees).length,
    measuredAt: new Date().toISOString(),
    seconds: Math.round((Date.now() - started) / 100) / 10,
  };
}

/** The matrix as text: one row per source, one column per destination, then each denial's reason. */
export function renderMatrix(m: Matrix): string[] {
  const cell = (from: string, to: string): string => {
    if (from === to) return '·';
    return m.cells
      .filter((x) => x.from === from && x.to === to)
      .map((c) => (c.mismatch ? '!' : c.result === 'allowed' ? '✓' : '✗'))
      .join(' ');
  };
  const label = (w: MatrixWorkload): string => `${w.name} (${w.host})`;
  const head = (w: MatrixWorkload): string => `${w.name}:${SERVICE_PORTS[w.role] ?? 80}`;
  const first = Math.max(...m.workloads.map((w) => label(w).length)) + 2;
  const width = Math.max(...m.workloads.map((w) => head(w).length + 2));
  const lines = [
    `cells: ping, then TCP to the destination's service port (${Object.entries(SERVICE_PORTS).map(([r, p]) => `${r} ${p}`).join(', ')})   ✓ answered (allowed)   ✗ no answer (denied)${m.mismatches ? '   ! real packets disagree with ctl explain' : ''}`,
    '',
    `${'from \\ to'.padEnd(first)}${m.workloads.map((w) => head(w).padEnd(width)).join('')}`,
  ];
  for (const f of m.workloads) lines.push(`${label(f).padEnd(first)}${m.workloads.map((t) => cell(f.name, t.name).padEnd(width)).join('')}`);
  lines.push('', 'why each denial (ctl explain\'s evaluator over the datastore: where it was dropped, and the policy that decided it):');
  const groups = new Map<string, string[]>();
  for (const c of m.cells) {
    if (c.result !== 'denied') continue;
    const why = c.mismatch ? `!! ${c.mismatch}` : `${c.explain?.where ?? '?'}: ${c.explain?.decidedBy ?? '?'}`;
    const key = `${c.from} -> ${c.to}\0${why}`;
    groups.set(key, [...(groups.get(key) ?? []), c.probe]);
  }
  const pairWidth = Math.max(0, ...[...groups.keys()].map((k) => k.split('\0')[0]!.length)) + 2;
  for (const [key, probes] of groups) {
    const [pair, why] = key.split('\0') as [string, string];
    lines.push(`  ${pair.padEnd(pairWidth)}${probes.join(', ').padEnd(16)}${why}`);
  }
  if (m.examples.length > 0) lines.push('', 'routecat ctl explain itself, for one denial of each deciding policy (run in host1):');
  for (const e of m.examples) {
    lines.push('', `$ ${e.command}${e.agrees ? '' : '   !! disagrees with the matrix'}`, ...e.output.split('\n').map((l) => `  ${l}`));
  }
  return lines;
}
