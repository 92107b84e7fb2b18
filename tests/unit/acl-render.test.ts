/**
 * ACL dataplane rendering and minimal-change behaviour, against a stateful fake kernel that
 * understands just enough iptables-save/-restore, ipset save/restore and nft (-f, -j list) to
 * hold state, to refuse what the real tools refuse (a rule naming a missing chain or set, deleting
 * a set or chain still referenced, a restore without --noflush) and to be read back.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  AclCompileCache,
  chainTargets,
  compileAclModel,
  endpointChainName,
  createAclDataplane,
  ipSetName,
  MAX_CHAIN_NAME,
  MAX_SET_NAME,
  policyChainName,
  type AclDataplane,
  type AclKind,
  type CommandRunner,
} from '../../src/agent/dataplane/acl.ts';
import { CommandError } from '../../src/agent/dataplane/exec.ts';
import { IptablesDataplane, portChunks } from '../../src/agent/dataplane/iptables.ts';
import { NftablesDataplane } from '../../src/agent/dataplane/nftables.ts';
import type {
  CompiledPolicy,
  CompiledRule,
  DataplaneModel,
  EndpointPolicies,
  IpSet,
  LocalEndpoint,
  PoolInfo,
} from '../../src/agent/model.ts';

// ---------------------------------------------------------------------------------------------
// Fake kernel
// ---------------------------------------------------------------------------------------------

interface Call {
  readonly cmd: string;
  readonly args: readonly string[];
  readonly stdin?: string;
}

interface NftChain {
  hook?: string;
  rules: { text: string; comment?: string }[];
}

const BUILTINS: Record<string, string[]> = {
  filter: ['INPUT', 'FORWARD', 'OUTPUT'],
  nat: ['PREROUTING', 'INPUT', 'OUTPUT', 'POSTROUTING'],
};
const TARGETS = new Set(['ACCEPT', 'DROP', 'RETURN', 'MARK', 'LOG', 'MASQUERADE']);

function fail(cmd: string, args: readonly string[], stderr: string): never {
  throw new CommandError({ command: cmd, args, exitCode: 1, signal: null, stdout: '', stderr, timedOut: false });
}

class FakeKernel implements CommandRunner {
  calls: Call[] = [];
  /** `${family}/${table}` -> chain -> rule specs (as iptables-save prints them after `-A chain `). */
  ipt = new Map<string, Map<string, string[]>>();
  ipsets = new Map<string, { type: string; family: string; members: Set<string> }>();
  nft: { exists: boolean; chains: Map<string, NftChain>; sets: Map<string, { type: string; elems: string[] }> } = {
    exists: false,
    chains: new Map(),
    sets: new Map(),
  };
  /** Commands whose next invocation fails (for error-path tests). */
  failNext = new Set<string>();

  constructor() {
    for (const family of [4, 6]) {
      for (const table of ['filter', 'nat']) {
        this.ipt.set(`${family}/${table}`, new Map(BUILTINS[table].map((c) => [c, [] as string[]])));
      }
    }
  }

  /** Calls that change state (everything but the reads). */
  writes(): Call[] {
    return this.calls.filter(
      (c) =>
        !c.cmd.endsWith('-save') &&
        !(c.cmd === 'ipset' && c.args[0] === 'save') &&
        !(c.cmd === 'nft' && c.args[0] === '-j') &&
        !(c.cmd === 'iptables' && c.args[0] === '-V'),
    );
  }

  async run(cmd: string, args: string[], stdin?: string): Promise<{ stdout: string; stderr: string }> {
    this.calls.push({ cmd, args, stdin });
    if (this.failNext.delete(cmd)) fail(cmd, args, 'injected failure');
    switch (cmd) {
      case 'iptables':
        return { stdout: 'iptables v1.8.9 (nf_tables)\n', stderr: '' };
      case 'iptables-save':
      case 'ip6tables-save':
        return { stdout: this.iptSave(cmd === 'iptables-save' ? 4 : 6, args[args.indexOf('-t') + 1]), stderr: '' };
      case 'iptables-restore':
      case 'ip6tables-restore':
        if (!args.includes('--noflush')) fail(cmd, args, 'refusing a restore that would flush whole tables');
        this.iptRestore(cmd, args, cmd === 'iptables-restore' ? 4 : 6, stdin ?? '');
        return { stdout: '', stderr: '' };
      case 'ipset':
        if (args[0] === 'save') return { stdout: this.ipsetSave(), stderr: '' };
        if (args[0] === 'restore') {
          this.ipsetRestore(args, stdin ?? '');
          return { stdout: '', stderr: '' };
        }
        return fail(cmd, args, `unsupported: ${args.join(' ')}`);
      case 'nft':
        return { stdout: this.nftRun(args, stdin ?? ''), stderr: '' };
      default:
        return fail(cmd, args, 'command not found');
    }
  }

  // --- iptables ---

  iptSave(family: number, table: string): string {
    const chains = this.ipt.get(`${family}/${table}`);
    if (!chains) return '';
    const out = [`*${table}`];
    for (const name of chains.keys()) out.push(`:${name} ${BUILTINS[table].includes(name) ? 'ACCEPT' : '-'} [0:0]`);
    for (const [name, rules] of chains) for (const r of rules) out.push(`-A ${name} ${r}`);
    out.push('COMMIT', '');
    return out.join('\n');
  }

  iptRestore(cmd: string, args: readonly string[], family: number, script: string): void {
    let table = '';
    let work: Map<string, string[]> | null = null;
    const bad = (line: string, why: string): never => fail(cmd, args, `line '${line}': ${why}`);
    for (const line of script.split('\n')) {
      if (line === '' || line.startsWith('#')) continue;
      if (line.startsWith('*')) {
        table = line.slice(1);
        const cur = this.ipt.get(`${family}/${table}`);
        if (!cur) bad(line, 'no such table');
        work = new Map([...(cur as Map<string, string[]>)].map(([k, v]) => [k, [...v]]));
        continue;
      }
      if (!work) return bad(line, 'no table');
      const w: Map<string, string[]> = work;
      if (line === 'COMMIT') {
        this.ipt.set(`${family}/${table}`, w);
        work = null;
        continue;
      }
      if (line.startsWith(':')) {
        const name = line.slice(1).split(' ')[0];
        if (!BUILTINS[table].includes(name)) w.set(name, []);
        continue;
      }
      const m = /^(-A|-I|-D|-X) (\S+)(?: (.*))?$/.exec(line);
      if (!m) bad(line, 'cannot parse');
      const [, op, chain, restRaw] = m as RegExpExecArray;
      const rest = restRaw ?? '';
      const rules = w.get(chain);
      if (!rules) bad(line, `no chain ${chain}`);
      const list = rules as string[];
      const checkRefs = (spec: string): void => {
        for (const t of spec.matchAll(/(?:-j|-g) (\S+)/g)) {
          if (!TARGETS.has(t[1]) && !w.has(t[1])) bad(line, `no chain/target ${t[1]}`);
        }
        for (const s of spec.matchAll(/--match-set (\S+)/g)) if (!this.ipsets.has(s[1])) bad(line, `no ipset ${s[1]}`);
      };
      if (op === '-A') {
        checkRefs(rest);
        list.push(rest);
      } else if (op === '-I') {
        const im = /^(\d+) (.*)$/.exec(rest);
        if (!im) return bad(line, 'bad insert');
        checkRefs(im[2]);
        list.splice(Number(im[1]) - 1, 0, im[2]);
      } else if (op === '-D') {
        const i = list.indexOf(rest);
        if (i < 0) bad(line, 'Bad rule (does a matching rule exist in that chain?)');
        list.splice(i, 1);
      } else {
        if (list.length > 0) bad(line, 'chain not empty');
        for (const [other, rs] of w) {
          if (rs.some((r) => new RegExp(`(?:-j|-g) ${chain}(?: |$)`).test(r))) bad(line, `chain referenced from ${other}`);
        }
        w.delete(chain);
      }
    }
    if (work) fail(cmd, args, 'missing COMMIT');
  }

  // --- ipset ---

  ipsetSave(): string {
    const out: string[] = [];
    for (const [name, s] of this.ipsets) {
      out.push(`create ${name} ${s.type} family ${s.family} hashsize 1024 maxelem 1048576 bucketsize 12 initval 0x1`);
      for (const m of s.members) out.push(`add ${name} ${m}`);
    }
    return out.join('\n') + '\n';
  }

  setInUse(name: string): boolean {
    for (const chains of this.ipt.values()) {
      for (const rules of chains.values()) if (rules.some((r) => r.includes(`--match-set ${name} `))) return true;
    }
    return false;
  }

  ipsetRestore(args: readonly string[], script: string): void {
    const exist = args.includes('-exist');
    const sets = new Map([...this.ipsets].map(([k, v]) => [k, { ...v, members: new Set(v.members) }]));
    for (const line of script.split('\n')) {
      if (!line.trim()) continue;
      const w = line.trim().split(/\s+/);
      const set = sets.get(w[1]);
      switch (w[0]) {
        case 'create':
          if (set && !exist) fail('ipset', args, `set ${w[1]} exists`);
          if (!set) sets.set(w[1], { type: w[2], family: w[w.indexOf('family') + 1], members: new Set() });
          break;
        case 'add':
          if (!set) return fail('ipset', args, `no set ${w[1]}`);
          if (w[3] === undefined && /\/0$/.test(w[2])) fail('ipset', args, 'zero prefix not supported');
          set.members.add(w[2]);
          break;
        case 'del':
          if (!set) return fail('ipset', args, `no set ${w[1]}`);
          if (!set.members.delete(w[2]) && !exist) fail('ipset', args, 'element not in set');
          break;
        case 'destroy':
          if (!set) return fail('ipset', args, `no set ${w[1]}`);
          if (this.setInUse(w[1])) fail('ipset', args, `Set cannot be destroyed: ${w[1]} is in use by a kernel component`);
          sets.delete(w[1]);
          break;
        default:
          fail('ipset', args, `unsupported line ${line}`);
      }
    }
    this.ipsets = sets;
  }

  // --- nft ---

  nftRun(args: readonly string[], script: string): string {
    if (args[0] === '-j' && args[1] === 'list') {
      if (!this.nft.exists) fail('nft', args, 'Error: No such file or directory\nlist table inet routecat');
      return this.nftJson();
    }
    if (args[0] === 'delete' && args[1] === 'table') {
      if (!this.nft.exists) fail('nft', args, 'Error: No such file or directory');
      this.nft = { exists: false, chains: new Map(), sets: new Map() };
      return '';
    }
    if (args[0] === '-f' && args[1] === '-') {
      const st = {
        exists: this.nft.exists,
        chains: new Map([...this.nft.chains].map(([k, v]) => [k, { hook: v.hook, rules: [...v.rules] }])),
        sets: new Map([...this.nft.sets].map(([k, v]) => [k, { type: v.type, elems: [...v.elems] }])),
      };
      for (const line of script.split('\n')) {
        if (!line.trim()) continue;
        const bad = (why: string): never => fail('nft', args, `${why}: ${line}`);
        const m = /^(add|flush|delete) (table|chain|set|element|rule) inet routecat(?: (\S+))?(?: (.*))?$/.exec(line);
        if (!m) bad('cannot parse');
        const [, verb, what, name, rest] = m as RegExpExecArray;
        if (what !== 'table' && !st.exists) bad('No such file or directory (table)');
        const key = `${verb} ${what}`;
        if (key === 'add table') st.exists = true;
        else if (key === 'add set') {
          if (!st.sets.has(name)) st.sets.set(name, { type: /type (\w+);/.exec(rest ?? '')?.[1] ?? '?', elems: [] });
        } else if (key === 'flush set') {
          const s = st.sets.get(name) ?? bad('no such set');
          s.elems = [];
        } else if (key === 'add element') {
          const s = st.sets.get(name) ?? bad('no such set');
          const body = /^\{ (.*) \}$/.exec(rest ?? '')?.[1] ?? bad('bad elements');
          s.elems.push(...body.split(', '));
        } else if (key === 'delete set') {
          if (!st.sets.has(name)) bad('no such set');
          for (const c of st.chains.values()) if (c.rules.some((r) => r.text.includes(`@${name}`))) bad('Device or resource busy (set in use)');
          st.sets.delete(name);
        } else if (key === 'add chain') {
          if (!st.chains.has(name)) st.chains.set(name, { hook: /hook (\w+)/.exec(rest ?? '')?.[1], rules: [] });
        } else if (key === 'flush chain') {
          (st.chains.get(name) ?? bad('no such chain')).rules = [];
        } else if (key === 'delete chain') {
          const c = st.chains.get(name) ?? bad('no such chain');
          if (c.rules.length > 0) bad('Device or resource busy (chain not empty)');
          for (const other of st.chains.values()) {
            if (other.rules.some((r) => new RegExp(`(?:jump|goto) ${name}(?:[ ,}]|$)`).test(r.text))) bad('Device or resource busy (chain in use)');
          }
          st.chains.delete(name);
        } else if (key === 'add rule') {
          const c = st.chains.get(name) ?? bad('no such chain');
          const cm = /^(.*) comment "([^"]*)"$/.exec(rest ?? '');
          const text = cm ? cm[1] : (rest ?? '');
          for (const t of text.matchAll(/(?:jump|goto) ([\w-]+)/g)) if (!st.chains.has(t[1])) bad(`no chain ${t[1]}`);
          for (const s of text.matchAll(/@([\w-]+)/g)) if (!st.sets.has(s[1])) bad(`no set ${s[1]}`);
          c.rules.push({ text, comment: cm?.[2] });
        } else bad('unsupported');
      }
      this.nft = st;
      return '';
    }
    return fail('nft', args, 'unsupported');
  }

  nftJson(): string {
    const items: unknown[] = [{ metainfo: { version: '1.0.6', json_schema_version: 1 } }];
    items.push({ table: { family: 'inet', name: 'routecat', handle: 1 } });
    let handle = 2;
    for (const [name, s] of this.nft.sets) {
      const elem = s.elems.map((e) => {
        if (e.includes('-')) return { range: e.split('-') };
        if (e.includes('/')) return { prefix: { addr: e.split('/')[0], len: Number(e.split('/')[1]) } };
        return e;
      });
      items.push({ set: { family: 'inet', name, table: 'routecat', type: s.type, handle: handle++, flags: ['interval'], ...(elem.length ? { elem } : {}) } });
    }
    for (const [name, c] of this.nft.chains) {
      items.push({ chain: { family: 'inet', table: 'routecat', name, handle: handle++, ...(c.hook ? { hook: c.hook, type: 'filter', prio: 0, policy: 'accept' } : {}) } });
    }
    for (const [name, c] of this.nft.chains) {
      for (const r of c.rules) {
        items.push({ rule: { family: 'inet', table: 'routecat', chain: name, handle: handle++, expr: [], ...(r.comment ? { comment: r.comment } : {}) } });
      }
    }
    return JSON.stringify({ nftables: items });
  }
}

// ---------------------------------------------------------------------------------------------
// Model builders
// ---------------------------------------------------------------------------------------------

const noPolicies: EndpointPolicies = { tiers: [], profiles: [] };

function workload(n: number, opts: { profile?: string; ingress?: EndpointPolicies; egress?: EndpointPolicies; iface?: string } = {}): LocalEndpoint {
  const profiles = opts.profile ? [opts.profile] : [];
  return {
    id: `wep/default/w${n}`,
    type: 'workload',
    name: `w${n}`,
    namespace: 'default',
    iface: opts.iface ?? `cali${n}`,
    ipv4Nets: [`10.65.0.${n}/32`],
    ipv6Nets: [`fd00:65::${n}/128`],
    allowSpoofedSourcePrefixes: [],
    labels: {},
    ingress: opts.ingress ?? { tiers: [], profiles },
    egress: opts.egress ?? { tiers: [], profiles },
  };
}

function rule(action: CompiledRule['action'], match: CompiledRule['match'] = {}, index = 0, never?: boolean): CompiledRule {
  return never ? { action, match, index, never } : { action, match, index };
}

function profile(name: string, setId: string): CompiledPolicy {
  return {
    id: `pro/${name}`,
    kind: 'Profile',
    name,
    ingress: [rule('allow', { srcIpSets: [setId] })],
    egress: [rule('allow')],
  };
}

function gnp(name: string, tier: string, ingress: CompiledRule[], egress: CompiledRule[] = []): CompiledPolicy {
  return { id: `gnp/${tier}.${name}`, kind: 'GlobalNetworkPolicy', name: `${tier}.${name}`, tier, ingress, egress };
}

interface ModelParts {
  endpoints: LocalEndpoint[];
  policies: CompiledPolicy[];
  ipSets?: IpSet[];
  pools?: PoolInfo[];
  failsafeInbound?: DataplaneModel['failsafeInbound'];
  failsafeOutbound?: DataplaneModel['failsafeOutbound'];
}

function model(p: ModelParts): DataplaneModel {
  return {
    hostname: 'host-a',
    endpoints: new Map(p.endpoints.map((e) => [e.id, e])),
    policies: new Map(p.policies.map((x) => [x.id, x])),
    ipSets: new Map((p.ipSets ?? []).map((s) => [s.id, s])),
    pools: p.pools ?? [],
    failsafeInbound: p.failsafeInbound ?? [],
    failsafeOutbound: p.failsafeOutbound ?? [],
    problems: [],
  };
}

const tenantA: IpSet = { id: 's:tenant-a', source: 'tenant == "a"', ipv4: ['10.65.0.1/32', '10.65.0.2/32'], ipv6: ['fd00:65::1/128', 'fd00:65::2/128'] };
const tenantB: IpSet = { id: 's:tenant-b', source: 'tenant == "b"', ipv4: ['10.65.0.3/32'], ipv6: ['fd00:65::3/128'] };
const web = gnp('web', 'security', [rule('allow', { protocol: 'tcp', dstPorts: [{ first: 80, last: 80 }] }, 0), rule('pass', { protocol: 'tcp', dstPorts: [{ first: 8080, last: 8080 }] }, 1)]);
const platform = gnp('platform', 'default', [rule('allow', { protocol: 'tcp', dstPorts: [{ first: 8080, last: 8080 }] })]);

function baseParts(): ModelParts {
  return {
    endpoints: [
      workload(1, { profile: 'pro/tenant-a' }),
      workload(2, {
        egress: { tiers: [], profiles: ['pro/tenant-a'] },
        ingress: {
          tiers: [
            { tier: 'security', policies: [web.id] },
            { tier: 'default', policies: [platform.id] },
          ],
          profiles: ['pro/tenant-a'],
        },
      }),
      workload(3, { profile: 'pro/tenant-b' }),
    ],
    policies: [profile('tenant-a', tenantA.id), profile('tenant-b', tenantB.id), web, platform],
    ipSets: [tenantA, tenantB],
    pools: [
      { name: 'default-ipv4', cidr: '10.65.0.0/16', natOutgoing: true, disabled: false },
      { name: 'other', cidr: '10.66.0.0/16', natOutgoing: false, disabled: false },
      { name: 'v6', cidr: 'fd00:65::/64', natOutgoing: false, disabled: false },
    ],
  };
}

function scriptOf(calls: Call[], cmd: string, family?: string): string {
  return calls
    .filter((c) => c.cmd === cmd)
    .map((c) => c.stdin ?? '')
    .filter((s) => family === undefined || s.startsWith(`*${family}`))
    .join('');
}

/** Chains an iptables-restore script declares (flushes/creates). */
function declared(script: string): string[] {
  return [...script.matchAll(/^:(\S+)/gm)].map((m) => m[1]).sort();
}

function newDp(kind: AclKind, fake: FakeKernel, extra: { endpointToHostAction?: 'Drop' | 'Accept' | 'Return' } = {}): AclDataplane {
  return createAclDataplane(kind, { runner: fake, ...extra });
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

describe('acl compile', () => {
  test('chain and set names stay within kernel limits', () => {
    const long = 'x'.repeat(200);
    const m = model({
      endpoints: [
        workload(1, { profile: `pro/${long}`, iface: 'cali0123456789a' }),
        { ...workload(2, { profile: `pro/${long}` }), id: `hep/${long}`, type: 'host', iface: 'eth0.1234567890' },
      ],
      policies: [{ ...profile(long, `s:${long}`), id: `pro/${long}` }],
      ipSets: [{ id: `s:${long}`, source: long, ipv4: ['10.0.0.0/8'], ipv6: [] }],
    });
    const rs = compileAclModel(m, { ifacePrefix: 'cali', endpointToHostAction: 'Drop', ipv6: true });
    assert.ok(rs.chains.length > 10);
    for (const c of rs.chains) assert.ok(c.name.length <= MAX_CHAIN_NAME, `${c.name} is ${c.name.length} long`);
    for (const s of rs.sets) assert.ok(s.name.length <= MAX_SET_NAME, `${s.name}`);
    assert.ok(rs.chains.some((c) => /^rc-fh-h[0-9a-f]{16}$/.test(c.name)), 'an interface name with a dot gets a hashed chain name');
    // every jump target exists
    const names = new Set(rs.chains.map((c) => c.name));
    for (const c of rs.chains) {
      for (const r of c.rules) {
        for (const t of chainTargets(r)) assert.ok(names.has(t), `${c.name} -> ${t}`);
      }
    }
  });

  test('never rules are omitted; ipVersion, icmp and nets pick the family', () => {
    const pol = gnp('mix', 'default', [
      rule('allow', { protocol: 'tcp' }, 0, true),
      rule('deny', { ipVersion: 6, protocol: 'udp' }, 1),
      rule('deny', { protocol: 'icmp', icmp: { type: 8, code: 0 } }, 2),
      rule('deny', { srcNets: ['10.1.0.0/16'] }, 3),
      rule('deny', { srcNets: ['10.1.0.0/16', '2001:db8::/32', '10.2.0.0/16'] }, 4),
    ]);
    const m = model({ endpoints: [workload(1, { ingress: { tiers: [{ tier: 'default', policies: [pol.id] }], profiles: [] } })], policies: [pol] });
    const rs = compileAclModel(m, { ifacePrefix: 'cali', endpointToHostAction: 'Drop', ipv6: true });
    const chain = rs.chains.find((c) => c.name === policyChainName(pol, 'ingress'));
    assert.ok(chain);
    const matches = chain.rules.map((r) => r.match);
    assert.equal(chain.rules.length, 5, JSON.stringify(matches));
    assert.deepEqual(matches[0], { family: 6, protocol: 'udp' });
    assert.deepEqual(matches[1], { family: 4, protocol: 'icmp', icmp: { type: 8, code: 0 } });
    assert.deepEqual(matches[2], { family: 4, addrs: [{ dir: 'src', negate: false, nets: ['10.1.0.0/16'] }] });
    assert.deepEqual(matches[3], { family: 4, addrs: [{ dir: 'src', negate: false, nets: ['10.1.0.0/16', '10.2.0.0/16'] }] });
    assert.deepEqual(matches[4], { family: 6, addrs: [{ dir: 'src', negate: false, nets: ['2001:db8::/32'] }] });
    assert.ok(chain.rules.every((r) => r.action.kind === 'drop'));
  });

  test('multiport chunks: 15 slots, ranges take two', () => {
    const ports = Array.from({ length: 16 }, (_, i) => ({ first: 100 + i, last: 100 + i }));
    assert.deepEqual(portChunks(ports).map((c) => c.split(',').length), [15, 1]);
    assert.deepEqual(portChunks([...Array.from({ length: 7 }, (_, i) => ({ first: i * 10, last: i * 10 + 5 })), { first: 99, last: 99 }]), [
      '0:5,10:15,20:25,30:35,40:45,50:55,60:65,99',
    ]);
    assert.equal(portChunks(Array.from({ length: 8 }, (_, i) => ({ first: i * 10, last: i * 10 + 5 }))).length, 2);
  });

  test("a host endpoint with iface '*' takes every interface no other names, except loopback; a second one is skipped", () => {
    const hep = (id: string, iface: string) => ({ ...workload(9, {}), id, type: 'host' as const, iface });
    const m = model({ endpoints: [hep('hep/all', '*'), hep('hep/all2', '*'), hep('hep/eth1', 'eth1')], policies: [] });
    const rs = compileAclModel(m, { ifacePrefix: 'cali', endpointToHostAction: 'Drop', ipv6: true });
    assert.deepEqual(rs.skipped, ['hep/all2: hep/all is already the all-interfaces host endpoint']);
    const dispatch = rs.chains.find((c) => c.name === 'rc-from-hep-dispatch')!.rules;
    const anyChain = endpointChainName('fh', { id: 'hep/all', iface: '*' });
    assert.deepEqual(
      dispatch.map((r) => [r.match, r.action]),
      [
        [{}, { kind: 'dispatch', key: 'iif', targets: [{ iface: 'eth1', chain: 'rc-fh-eth1' }] }],
        [{ iif: 'lo' }, { kind: 'return' }],
        [{}, { kind: 'goto', chain: anyChain }],
      ],
      'named interfaces first, loopback left alone, then the all-interfaces endpoint',
    );
    assert.ok(rs.chains.some((c) => c.name === anyChain), 'its chain exists');
  });
});

describe('iptables backend', () => {
  test('renders the bookended layout, sets first, one restore per table', async () => {
    const fake = new FakeKernel();
    const m = model({ ...baseParts(), failsafeInbound: [{ protocol: 'tcp', port: 22 }], endpoints: [...baseParts().endpoints, { ...workload(7), id: 'hep/eth0', type: 'host', iface: 'eth0', ingress: noPolicies, egress: noPolicies }] });
    const stats = await newDp('iptables', fake).apply(m, { inSync: true });
    assert.equal(stats.changed, true);
    assert.equal(stats.rulesWritten, stats.rulesTotal);
    const writes = fake.writes();
    assert.deepEqual(
      writes.map((c) => c.cmd),
      ['ipset', 'iptables-restore', 'iptables-restore', 'ip6tables-restore', 'ip6tables-restore'],
      'sets, then v4 filter, v4 nat, v6 filter, v6 nat',
    );
    const v4 = scriptOf(writes, 'iptables-restore', 'filter');
    assert.match(v4, /^-I FORWARD 1 -m comment --comment "routecat:[0-9a-f]{16}" -j rc-FORWARD$/m);
    assert.match(v4, /^-I INPUT 1 -m comment --comment "routecat:[0-9a-f]{16}" -j rc-INPUT$/m);
    assert.match(v4, /^-A rc-FORWARD -m comment --comment "rc:[0-9a-f]{16}" -i cali\+ -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT$/m);
    assert.match(v4, /^-A rc-FORWARD .*-i cali\+ -m conntrack --ctstate INVALID -j DROP$/m);
    assert.match(v4, /^-A rc-FORWARD .*-i cali\+ -j rc-from-wl-dispatch$/m);
    assert.match(v4, /^-A rc-FORWARD .*-o cali\+ -j rc-to-wl-dispatch$/m);
    assert.match(v4, /^-A rc-from-wl-dispatch .* -i cali1 -g rc-fw-cali1$/m);
    assert.match(v4, /^-A rc-to-wl-dispatch .* -o cali3 -g rc-tw-cali3$/m);
    // fail closed: the dispatch chains end in DROP
    assert.match(v4, /^-A rc-from-wl-dispatch -m comment --comment "rc:[0-9a-f]{16}" -j DROP\n(?!-A rc-from-wl-dispatch)/m);
    // anti-spoofing first in the from-workload chain
    assert.match(v4, /^-A rc-fw-cali1 -m comment --comment "rc:[0-9a-f]{16}" -j MARK --set-xmark 0x0\/0x30000\n-A rc-fw-cali1 .* ! -s 10\.65\.0\.1\/32 -j DROP$/m);
    // tiers: jump while pass mark clear, accept mark returns, end of tier drops
    const web4 = policyChainName(web, 'ingress');
    assert.match(v4, new RegExp(`^-A rc-tw-cali2 .* -m mark --mark 0x0/0x20000 -j ${web4}$`, 'm'));
    assert.match(v4, /^-A rc-tw-cali2 .* -m mark --mark 0x10000\/0x10000 -j RETURN$/m);
    assert.match(v4, /^-A rc-tw-cali2 .* -m mark --mark 0x0\/0x20000 -j DROP$/m);
    assert.match(v4, new RegExp(`^-A ${web4} .* -p tcp -m multiport --dports 80 -j MARK --set-xmark 0x10000/0x10000$`, 'm'));
    assert.match(v4, new RegExp(`^-A ${web4} .* -p tcp -m multiport --dports 8080 -j MARK --set-xmark 0x20000/0x20000$`, 'm'));
    // profile uses the model's ipset
    assert.match(v4, new RegExp(`--match-set ${ipSetName(4, tenantA.id)} src -j MARK --set-xmark 0x10000/0x10000`));
    // workload to host: policy then the default Drop
    assert.match(v4, /^-A rc-wl-to-host .* -j rc-from-wl-dispatch\n-A rc-wl-to-host .* -j DROP$/m);
    // host endpoint: failsafe first
    assert.match(v4, /^-A rc-failsafe-in .* -p tcp -m multiport --dports 22 -j ACCEPT$/m);
    assert.match(v4, /^-A rc-fh-eth0 .* -j rc-failsafe-in$/m);
    // nat: natOutgoing pool to anywhere outside all pools (two pools -> a set)
    const nat4 = scriptOf(writes, 'iptables-restore', 'nat');
    assert.match(nat4, /^-A rc-nat-POSTROUTING .* -s 10\.65\.0\.0\/16 -m set ! --match-set rc4-[0-9a-f]{16} dst -j MASQUERADE$/m);
    assert.match(nat4, /^-I POSTROUTING 1 .* -j rc-nat-POSTROUTING$/m);
    const v6 = scriptOf(writes, 'ip6tables-restore', 'filter');
    assert.match(v6, /! -s fd00:65::1\/128 -j DROP/);
    assert.match(v6, /-p ipv6-icmp -m icmp6 --icmpv6-type 135 -j ACCEPT/);
    // the ipset script created the model sets (members as ipset prints them)
    const sets = scriptOf(writes, 'ipset');
    assert.match(sets, new RegExp(`^create ${ipSetName(4, tenantA.id)} hash:net family inet`, 'm'));
    assert.match(sets, new RegExp(`^add ${ipSetName(6, tenantA.id)} fd00:65::1$`, 'm'));
  });

  test('re-applying an unchanged model writes nothing, also after a fresh read-back', async () => {
    const fake = new FakeKernel();
    const dp = newDp('iptables', fake);
    const m = model(baseParts());
    await dp.apply(m, { inSync: true });
    fake.calls = [];
    const again = await dp.apply(m, { inSync: true });
    assert.deepEqual([again.changed, again.rulesWritten, again.setsWritten], [false, 0, 0]);
    assert.equal(fake.calls.length, 0, 'no read-back and no write while the cache is valid');
    const fresh = await newDp('iptables', fake).apply(m, { inSync: true });
    assert.deepEqual([fresh.changed, fresh.rulesWritten, fresh.setsWritten], [false, 0, 0]);
    assert.equal(fake.writes().length, 0);
  });

  test('changing one policy rewrites only its chain', async () => {
    const fake = new FakeKernel();
    const dp = newDp('iptables', fake);
    const parts = baseParts();
    await dp.apply(model(parts), { inSync: true });
    fake.calls = [];
    const web2 = { ...web, ingress: [rule('allow', { protocol: 'tcp', dstPorts: [{ first: 81, last: 81 }] })] };
    const stats = await dp.apply(model({ ...parts, policies: parts.policies.map((p) => (p.id === web.id ? web2 : p)) }), { inSync: true });
    const writes = fake.writes();
    assert.deepEqual(writes.map((c) => c.cmd), ['iptables-restore', 'ip6tables-restore']);
    const chain = policyChainName(web, 'ingress');
    for (const w of writes) assert.deepEqual(declared(w.stdin ?? ''), [chain]);
    assert.equal(stats.rulesWritten, 4, 'one set-mark + one return rule per family');
    assert.equal(stats.setsWritten, 0);
  });

  test('inSync false deletes nothing; inSync true then removes chains and sets in order', async () => {
    const fake = new FakeKernel();
    const dp = newDp('iptables', fake);
    const parts = baseParts();
    await dp.apply(model(parts), { inSync: true });
    const reduced: ModelParts = { ...parts, endpoints: parts.endpoints.filter((e) => e.name !== 'w3'), policies: parts.policies.filter((p) => p.id !== 'pro/tenant-b'), ipSets: [tenantA] };
    fake.calls = [];
    const s1 = await dp.apply(model(reduced), { inSync: false });
    assert.equal(s1.changed, true, 'the dispatch chains changed');
    for (const w of fake.writes()) {
      assert.doesNotMatch(w.stdin ?? '', /^-X /m);
      assert.doesNotMatch(w.stdin ?? '', /^destroy /m);
    }
    assert.ok(fake.ipt.get('4/filter')?.has('rc-fw-cali3'), 'stale chain kept while not in sync');
    assert.ok(fake.ipsets.has(ipSetName(4, tenantB.id)));
    fake.calls = [];
    const s2 = await dp.apply(model(reduced), { inSync: true });
    assert.equal(s2.changed, true);
    const writes = fake.writes();
    assert.deepEqual(writes.map((c) => c.cmd), ['iptables-restore', 'ip6tables-restore', 'ipset'], 'sets destroyed after the rules');
    assert.match(writes[0].stdin ?? '', /^-X rc-fw-cali3$/m);
    assert.match(writes[0].stdin ?? '', new RegExp(`^-X ${policyChainName({ id: 'pro/tenant-b', kind: 'Profile' }, 'ingress')}$`, 'm'));
    assert.ok(!fake.ipt.get('4/filter')?.has('rc-fw-cali3'));
    assert.ok(!fake.ipsets.has(ipSetName(4, tenantB.id)));
    assert.ok(fake.ipsets.has(ipSetName(4, tenantA.id)));
  });

  test('set membership changes are adds/deletes of members only', async () => {
    const fake = new FakeKernel();
    const dp = newDp('iptables', fake);
    const parts = baseParts();
    await dp.apply(model(parts), { inSync: true });
    fake.calls = [];
    const a2 = { ...tenantA, ipv4: ['10.65.0.1/32', '10.65.0.9/32'] };
    const stats = await dp.apply(model({ ...parts, ipSets: [a2, tenantB] }), { inSync: true });
    assert.deepEqual(fake.writes().map((c) => c.cmd), ['ipset']);
    const name = ipSetName(4, tenantA.id);
    assert.equal(fake.writes()[0].stdin, `add ${name} 10.65.0.9\ndel ${name} 10.65.0.2\n`);
    assert.deepEqual([stats.rulesWritten, stats.setsWritten], [0, 1]);
  });

  test('drift: a rule removed behind our back is restored by rewriting only its chain', async () => {
    const fake = new FakeKernel();
    const dp = newDp('iptables', fake);
    const m = model(baseParts());
    await dp.apply(m, { inSync: true });
    fake.ipt.get('4/filter')?.get('rc-fw-cali1')?.pop();
    // someone also put a rule above our jump
    fake.ipt.get('4/filter')?.get('FORWARD')?.unshift('-j ACCEPT');
    await dp.readBack();
    fake.calls = [];
    await dp.apply(m, { inSync: true });
    const writes = fake.writes();
    assert.equal(writes.length, 1);
    assert.deepEqual(declared(writes[0].stdin ?? ''), ['rc-fw-cali1']);
    assert.match(writes[0].stdin ?? '', /^-D FORWARD -m comment --comment "routecat:[0-9a-f]{16}" -j rc-FORWARD$/m);
    assert.match(writes[0].stdin ?? '', /^-I FORWARD 1 /m);
    assert.match(fake.ipt.get('4/filter')?.get('FORWARD')?.[0] ?? '', /routecat:/);
  });

  test('an error invalidates the cache; the next apply reads back and converges', async () => {
    const fake = new FakeKernel();
    const dp = newDp('iptables', fake);
    const m = model(baseParts());
    fake.failNext.add('ip6tables-restore');
    await assert.rejects(dp.apply(m, { inSync: true }), (e: Error & { code?: string }) => e.code === 'E_ACL_APPLY' && /injected failure/.test(e.message));
    fake.calls = [];
    const stats = await dp.apply(m, { inSync: true });
    assert.ok(fake.calls.some((c) => c.cmd === 'iptables-save'), 'read back after the error');
    assert.deepEqual(fake.writes().map((c) => c.cmd), ['ip6tables-restore', 'ip6tables-restore'], 'only what was not yet written');
    assert.equal(stats.changed, true);
  });

  test('cleanup removes every chain, jump and set of ours and nothing else', async () => {
    const fake = new FakeKernel();
    fake.ipt.get('4/filter')?.get('FORWARD')?.push('-j ACCEPT');
    fake.ipt.get('4/filter')?.set('OTHER', ['-j RETURN']);
    const dp = newDp('iptables', fake);
    await dp.apply(model(baseParts()), { inSync: true });
    await dp.cleanup();
    for (const [key, chains] of fake.ipt) {
      for (const [name, rules] of chains) {
        assert.ok(!name.startsWith('rc-'), `${key} ${name}`);
        for (const r of rules) assert.doesNotMatch(r, /routecat:|rc-/);
      }
    }
    assert.deepEqual(fake.ipt.get('4/filter')?.get('FORWARD'), ['-j ACCEPT']);
    assert.ok(fake.ipt.get('4/filter')?.has('OTHER'));
    assert.equal(fake.ipsets.size, 0);
  });
});

describe('rule matches, both backends', () => {
  const pol = gnp('features', 'default', [
    rule('log', { protocol: 'udp' }, 0),
    rule('allow', { dstPorts: [{ first: 53, last: 53 }] }, 1),
    rule('deny', { notSrcNets: ['10.9.0.0/16', '10.8.0.0/16', 'fd00:9::/32'] }, 2),
    rule('allow', { protocol: 'tcp', dstPorts: Array.from({ length: 16 }, (_, i) => ({ first: 2000 + i * 10, last: 2000 + i * 10 })) }, 3),
    rule('deny', { protocol: 'icmpv6', notIcmp: { type: 128 } }, 4),
  ]);
  const m = model({ endpoints: [workload(1, { ingress: { tiers: [{ tier: 'default', policies: [pol.id] }], profiles: [] } })], policies: [pol] });
  const chain = policyChainName(pol, 'ingress');

  test('iptables', async () => {
    const fake = new FakeKernel();
    await newDp('iptables', fake).apply(m, { inSync: true });
    const v4 = (fake.ipt.get('4/filter')?.get(chain) ?? []).map((r) => r.replace(/-m comment --comment "rc:[0-9a-f]{16}" /, ''));
    const v6 = (fake.ipt.get('6/filter')?.get(chain) ?? []).map((r) => r.replace(/-m comment --comment "rc:[0-9a-f]{16}" /, ''));
    assert.equal(v4[0], '-p udp -j LOG --log-prefix "rc in default.features: "');
    assert.deepEqual(v4.slice(1, 4), ['tcp', 'udp', 'sctp'].map((p) => `-p ${p} -m multiport --dports 53 -j MARK --set-xmark 0x10000/0x10000`), 'ports without protocol');
    assert.match(v4[5], /^-m set ! --match-set rc4-[0-9a-f]{16} src -j DROP$/, 'several nets -> a set');
    assert.match(v4[6], /^-p tcp -m multiport --dports 2000,2010,.*,2140 -j MARK/);
    assert.match(v4[7], /^-p tcp -m multiport --dports 2150 -j MARK/, '16 ports need two rules');
    assert.ok(!v4.some((r) => r.includes('icmp')), 'ICMPv6 rule only in ip6tables');
    assert.ok(v6.includes('! -s fd00:9::/32 -j DROP'));
    assert.ok(v6.includes('-p ipv6-icmp -m icmp6 ! --icmpv6-type 128 -j DROP'));
    const setName = /rc4-[0-9a-f]{16}/.exec(v4[5])?.[0] ?? '';
    assert.deepEqual([...(fake.ipsets.get(setName)?.members ?? [])].sort(), ['10.8.0.0/16', '10.9.0.0/16']);
  });

  test('nftables', async () => {
    const fake = new FakeKernel();
    await newDp('nftables', fake).apply(m, { inSync: true });
    const rules = fake.nft.chains.get(chain)?.rules.map((r) => r.text) ?? [];
    assert.equal(rules[0], 'meta l4proto udp log prefix "rc in default.features: "');
    assert.deepEqual(rules.slice(1, 4), ['tcp', 'udp', 'sctp'].map((p) => `meta l4proto ${p} th dport 53 meta mark set meta mark | 0x00010000`));
    assert.ok(rules.includes('meta nfproto ipv4 ip saddr != 10.8.0.0/15 drop'), rules.join('\n'));
    assert.ok(rules.includes('meta nfproto ipv6 ip6 saddr != fd00:9::/32 drop'));
    assert.ok(rules.some((r) => /^meta l4proto tcp th dport \{ 2000, 2010, .*, 2150 \} meta mark set/.test(r)), 'one rule, no multiport limit');
    assert.ok(rules.includes('meta nfproto ipv6 meta l4proto ipv6-icmp icmpv6 type != 128 drop'));
  });

  test('ipv6 disabled: no ip6tables at all', async () => {
    const fake = new FakeKernel();
    await createAclDataplane('iptables', { runner: fake, ipv6: false }).apply(m, { inSync: true });
    assert.ok(!fake.calls.some((c) => c.cmd.startsWith('ip6tables')));
  });

  test('concurrent applies are serialised', async () => {
    const fake = new FakeKernel();
    const dp = newDp('nftables', fake);
    const [a, b] = await Promise.all([dp.apply(m, { inSync: true }), dp.apply(m, { inSync: true })]);
    assert.equal(a.changed, true);
    assert.equal(b.changed, false);
  });
});

describe('nftables backend', () => {
  test('renders one transaction with sets, base chains and verdict maps', async () => {
    const fake = new FakeKernel();
    const stats = await newDp('nftables', fake).apply(model(baseParts()), { inSync: true });
    const writes = fake.writes();
    assert.equal(writes.length, 1);
    assert.deepEqual(writes[0].args, ['-f', '-']);
    const s = writes[0].stdin ?? '';
    assert.match(s, /^add table inet routecat$/m);
    assert.match(s, new RegExp(`^add set inet routecat ${ipSetName(4, tenantA.id)} \\{ type ipv4_addr; flags interval; auto-merge; \\}$`, 'm'));
    assert.match(s, /^add chain inet routecat rc-FORWARD \{ type filter hook forward priority filter; policy accept; \}$/m);
    assert.match(s, /^add chain inet routecat rc-nat-POSTROUTING \{ type nat hook postrouting priority srcnat; policy accept; \}$/m);
    assert.match(s, /^add rule inet routecat rc-from-wl-dispatch iifname vmap \{ "cali1" : goto rc-fw-cali1, "cali2" : goto rc-fw-cali2, "cali3" : goto rc-fw-cali3 \} comment "rc:[0-9a-f]{16}"$/m);
    assert.match(s, /^add rule inet routecat rc-from-wl-dispatch drop comment/m);
    assert.match(s, /^add rule inet routecat rc-FORWARD iifname "cali\*" ct state related,established accept comment/m);
    assert.match(s, /^add rule inet routecat rc-fw-cali1 meta nfproto ipv4 ip saddr != 10\.65\.0\.1 drop comment/m);
    assert.match(s, /^add rule inet routecat rc-nat-POSTROUTING meta nfproto ipv4 ip saddr 10\.65\.0\.0\/16 ip daddr != 10\.65\.0\.0-10\.66\.255\.255 masquerade comment/m);
    // sets are defined before the first rule
    assert.ok(s.indexOf('add set') < s.indexOf('add rule'));
    assert.equal(stats.rulesWritten, stats.rulesTotal);
  });

  test('re-applying an unchanged model writes nothing, also after a fresh read-back', async () => {
    const fake = new FakeKernel();
    const dp = newDp('nftables', fake);
    const m = model(baseParts());
    await dp.apply(m, { inSync: true });
    fake.calls = [];
    const again = await dp.apply(m, { inSync: true });
    assert.deepEqual([again.changed, again.rulesWritten, again.setsWritten], [false, 0, 0]);
    assert.equal(fake.calls.length, 0);
    const fresh = await newDp('nftables', fake).apply(m, { inSync: true });
    assert.deepEqual([fresh.changed, fresh.rulesWritten], [false, 0]);
    assert.equal(fake.writes().length, 0);
  });

  test('changing one policy flushes and refills only its chain', async () => {
    const fake = new FakeKernel();
    const dp = newDp('nftables', fake);
    const parts = baseParts();
    await dp.apply(model(parts), { inSync: true });
    fake.calls = [];
    const web2 = { ...web, ingress: [rule('deny', { protocol: 'udp' })] };
    const stats = await dp.apply(model({ ...parts, policies: parts.policies.map((p) => (p.id === web.id ? web2 : p)) }), { inSync: true });
    const writes = fake.writes();
    assert.equal(writes.length, 1);
    const chain = policyChainName(web, 'ingress');
    assert.equal(writes[0].stdin, `flush chain inet routecat ${chain}\nadd rule inet routecat ${chain} meta l4proto udp drop comment "rc:${(/rc:([0-9a-f]{16})/.exec(writes[0].stdin ?? '') ?? [])[1]}"\n`);
    assert.equal(stats.rulesWritten, 1);
  });

  test('inSync false deletes nothing; inSync true deletes stale chains, then sets, in one transaction', async () => {
    const fake = new FakeKernel();
    const dp = newDp('nftables', fake);
    const parts = baseParts();
    await dp.apply(model(parts), { inSync: true });
    const reduced: ModelParts = { ...parts, endpoints: parts.endpoints.filter((e) => e.name !== 'w3'), policies: parts.policies.filter((p) => p.id !== 'pro/tenant-b'), ipSets: [tenantA] };
    fake.calls = [];
    await dp.apply(model(reduced), { inSync: false });
    assert.doesNotMatch(fake.writes()[0].stdin ?? '', /^delete /m);
    assert.ok(fake.nft.chains.has('rc-tw-cali3'));
    fake.calls = [];
    await dp.apply(model(reduced), { inSync: true });
    const s = fake.writes()[0].stdin ?? '';
    assert.match(s, /^flush chain inet routecat rc-tw-cali3\n/m);
    assert.match(s, /^delete chain inet routecat rc-tw-cali3$/m);
    assert.match(s, new RegExp(`^delete set inet routecat ${ipSetName(4, tenantB.id)}$`, 'm'));
    assert.ok(!fake.nft.chains.has('rc-tw-cali3'));
    assert.ok(!fake.nft.sets.has(ipSetName(6, tenantB.id)));
  });

  test('set member change updates just that set', async () => {
    const fake = new FakeKernel();
    const dp = newDp('nftables', fake);
    const parts = baseParts();
    await dp.apply(model(parts), { inSync: true });
    fake.calls = [];
    const b2 = { ...tenantB, ipv4: ['10.65.0.3/32', '10.65.0.4/32'] };
    const stats = await dp.apply(model({ ...parts, ipSets: [tenantA, b2] }), { inSync: true });
    const name = ipSetName(4, tenantB.id);
    assert.equal(fake.writes()[0].stdin, `flush set inet routecat ${name}\nadd element inet routecat ${name} { 10.65.0.3-10.65.0.4 }\n`);
    assert.deepEqual([stats.rulesWritten, stats.setsWritten], [0, 1]);
  });

  test('cleanup deletes the table', async () => {
    const fake = new FakeKernel();
    const dp = newDp('nftables', fake);
    await dp.apply(model(baseParts()), { inSync: true });
    await dp.cleanup();
    assert.equal(fake.nft.exists, false);
    await dp.cleanup(); // idempotent
  });

  test('endpointToHostAction Accept and Return end rc-wl-to-host accordingly', async () => {
    for (const [action, verdict] of [['Accept', 'accept'], ['Return', 'return']] as const) {
      const fake = new FakeKernel();
      await newDp('nftables', fake, { endpointToHostAction: action }).apply(model(baseParts()), { inSync: true });
      const rules = fake.nft.chains.get('rc-wl-to-host')?.rules.map((r) => r.text) ?? [];
      assert.equal(rules[rules.length - 1], verdict);
      assert.equal(rules[rules.length - 2], 'jump rc-from-wl-dispatch');
    }
  });
});

describe('incremental compile and render', () => {
  const opts = { ifacePrefix: 'cali', endpointToHostAction: 'Drop', ipv6: true } as const;
  const web2 = { ...web, ingress: [rule('deny', { protocol: 'udp' })] };
  const tenantA2: IpSet = { ...tenantA, ipv4: [...tenantA.ipv4, '10.65.0.9/32'] };

  /** A run of models, each one change from the one before, ending where it started plus a bit. */
  function steps(): { what: string; parts: ModelParts }[] {
    const base = baseParts();
    const w4 = workload(4, { profile: 'pro/tenant-b', ingress: { tiers: [{ tier: 'security', policies: [web.id] }], profiles: ['pro/tenant-b'] } });
    const withW4 = { ...base, endpoints: [...base.endpoints, w4] };
    const webChanged = { ...withW4, policies: withW4.policies.map((p) => (p.id === web.id ? web2 : p)) };
    const setChanged = { ...webChanged, ipSets: [tenantA2, tenantB] };
    const webGone = { ...setChanged, policies: setChanged.policies.filter((p) => p.id !== web.id) };
    const setGone = { ...webGone, ipSets: [tenantB] };
    const w1Changed = { ...setGone, endpoints: setGone.endpoints.map((e) => (e.name === 'w1' ? { ...e, ipv4Nets: ['10.65.0.11/32'] } : e)) };
    const hostEp: LocalEndpoint = { ...workload(9, { profile: 'pro/tenant-b' }), id: 'hep/eth9', type: 'host', name: 'eth9', iface: 'eth9' };
    const withHost = { ...w1Changed, endpoints: [...w1Changed.endpoints, hostEp] };
    return [
      { what: 'base', parts: base },
      { what: 'endpoint w4 added', parts: withW4 },
      { what: 'policy web changed', parts: webChanged },
      { what: 'set tenant-a grew', parts: setChanged },
      { what: 'policy web gone, still referenced', parts: webGone },
      { what: 'set tenant-a gone, still referenced', parts: setGone },
      { what: 'endpoint w1 changed', parts: w1Changed },
      { what: 'host endpoint added', parts: withHost },
      { what: 'back to base', parts: base },
    ];
  }

  test('every step equals a from-scratch compile; unchanged chains and sets are the same objects', () => {
    const cache = new AclCompileCache();
    let prev: ReturnType<typeof compileAclModel> | undefined;
    for (const { what, parts } of steps()) {
      // The same endpoint and policy objects as the step before where unchanged (as the calculation keeps them).
      const m = model(parts);
      const got = compileAclModel(m, opts, cache);
      assert.deepEqual(got, compileAclModel(m, opts), what);
      if (prev) {
        const before = new Map(prev.chains.map((c) => [c.name, c]));
        const reused = got.chains.filter((c) => before.get(c.name) === c).length;
        assert.equal(reused, cache.lastStats.policyChainsReused + cache.lastStats.endpointChainsReused, what);
      }
      prev = got;
    }
  });

  test('what a change rebuilds: its own chains only', () => {
    const cache = new AclCompileCache();
    const [base, withW4, webChanged, setChanged, webGone] = steps();
    const r0 = compileAclModel(model(base.parts), opts, cache);
    assert.deepEqual(cache.lastStats, { policyChainsReused: 0, policyChainsBuilt: 6, endpointChainsReused: 0, endpointChainsBuilt: 6 });
    const again = compileAclModel(model(base.parts), opts, cache);
    assert.deepEqual(cache.lastStats, { policyChainsReused: 6, policyChainsBuilt: 0, endpointChainsReused: 6, endpointChainsBuilt: 0 });
    assert.deepEqual(again.sets, r0.sets);
    for (const [i, s] of again.sets.entries()) assert.equal(s, r0.sets[i], 'unchanged set: the same AclSet');

    compileAclModel(model(withW4.parts), opts, cache);
    assert.deepEqual(cache.lastStats, { policyChainsReused: 6, policyChainsBuilt: 0, endpointChainsReused: 6, endpointChainsBuilt: 2 }, 'only the new endpoint');
    compileAclModel(model(webChanged.parts), opts, cache);
    assert.deepEqual(cache.lastStats, { policyChainsReused: 5, policyChainsBuilt: 1, endpointChainsReused: 8, endpointChainsBuilt: 0 }, 'only the policy; endpoints jump to the same chain name');
    const before = compileAclModel(model(webChanged.parts), opts, cache);
    const grown = compileAclModel(model(setChanged.parts), opts, cache);
    assert.deepEqual(cache.lastStats, { policyChainsReused: 6, policyChainsBuilt: 0, endpointChainsReused: 8, endpointChainsBuilt: 0 }, 'set members live in the set');
    const a4 = ipSetName(4, tenantA.id);
    assert.notEqual(grown.sets.find((s) => s.name === a4), before.sets.find((s) => s.name === a4));
    assert.equal(grown.sets.find((s) => s.name !== a4 && s.name.startsWith('rc4')), before.sets.find((s) => s.name !== a4 && s.name.startsWith('rc4')));
    compileAclModel(model(webGone.parts), opts, cache);
    assert.deepEqual(cache.lastStats, { policyChainsReused: 5, policyChainsBuilt: 0, endpointChainsReused: 6, endpointChainsBuilt: 2 }, 'endpoints that jumped to the vanished policy');
  });

  for (const kind of ['iptables', 'nftables'] as const) {
    test(`${kind}: only new chains are rendered; the kernel ends as a from-scratch apply leaves it`, async () => {
      const fake = new FakeKernel();
      const dp = newDp(kind, fake);
      const memos = dp instanceof IptablesDataplane ? [dp.rendered[4], dp.rendered[6]] : [(dp as NftablesDataplane).rendered];
      const cache = dp instanceof IptablesDataplane ? dp.compileCache : (dp as NftablesDataplane).compileCache;
      for (const { what, parts } of steps()) {
        const misses = memos.map((m) => m.misses);
        const m = model(parts);
        await dp.apply(m, { inSync: true });
        const chains = compileAclModel(m, opts).chains;
        const fresh = chains.length - cache.lastStats.policyChainsReused - cache.lastStats.endpointChainsReused;
        for (const [i, memo] of memos.entries()) {
          assert.equal(memo.misses - misses[i], fresh, `${what}: chains rendered`);
        }
        const scratch = new FakeKernel();
        await newDp(kind, scratch).apply(m, { inSync: true });
        assert.deepEqual(fake.ipt, scratch.ipt, what);
        assert.deepEqual(fake.ipsets, scratch.ipsets, what);
        assert.deepEqual(fake.nft, scratch.nft, what);
      }
    });
  }
});
