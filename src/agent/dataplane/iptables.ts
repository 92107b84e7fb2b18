/**
 * The iptables + ipset backend of the ACL dataplane.
 *
 * It owns: chains named `rc-*` in the filter and nat tables of iptables and ip6tables, exactly one
 * jump rule (comment `routecat:<hash>`) at position 1 of each built-in chain it hooks (FORWARD,
 * INPUT, OUTPUT in filter, POSTROUTING in nat), and ipsets named `rc*`. It never touches any other
 * chain, rule or set and never flushes a whole table.
 *
 * How it writes: every rule carries `-m comment --comment "rc:<hash of its text>"`. The kernel state
 * (iptables-save per family and table, `ipset save`) is read back on the first apply and after
 * any error; apply() diffs rule-hash lists per chain and writes only the chains that differ, with
 * one `iptables-restore --noflush` per (family, table) so each table changes atomically. ipsets are
 * created/updated before the restores and stale ones destroyed after them.
 *
 * Whatever `iptables` is on PATH is used (Debian: iptables-nft); the flavour is detected from
 * `iptables -V` and exposed as `flavour`.
 */
import { errorMessage } from '../../errors.ts';
import { logger } from '../../log.ts';
import type { DataplaneModel, PortRange } from '../model.ts';
import {
  AclError,
  AclCompileCache,
  ObjectMemo,
  OneAtATime,
  compileAclModel,
  diffChains,
  elapsedSince,
  formatNet,
  MAX_SET_NAME,
  netListSetName,
  parseNet,
  ruleHash,
  CHAIN_PREFIX,
  SET_PREFIX,
  type AclAction,
  type AclApplyOptions,
  type AclApplyStats,
  type AclChain,
  type AclDataplane,
  type AclHook,
  type AclMatch,
  type AclRule,
  type AclSettings,
  type AclTable,
  type Family,
  type L4Proto,
  type RenderedRule,
} from './acl.ts';

const log = logger('acl-iptables');

export type IptablesFlavour = 'nft' | 'legacy' | 'unknown';

interface TableKey {
  readonly family: Family;
  readonly table: AclTable;
}

const TABLES: readonly TableKey[] = [
  { family: 4, table: 'filter' },
  { family: 4, table: 'nat' },
  { family: 6, table: 'filter' },
  { family: 6, table: 'nat' },
];

const BUILTIN: Record<AclHook, string> = { forward: 'FORWARD', input: 'INPUT', output: 'OUTPUT', postrouting: 'POSTROUTING' };
const BUILTIN_CHAINS = new Set(['INPUT', 'FORWARD', 'OUTPUT', 'PREROUTING', 'POSTROUTING']);

/** What iptables-save showed for one (family, table), restricted to what is ours. */
export interface IptablesTableState {
  /** Our chains -> hashes of their rules (null for a rule without our comment). Never mutated. */
  readonly chains: Map<string, readonly (string | null)[]>;
  /** Built-in chain -> its rules' positions and text for the rules carrying `routecat:`. */
  readonly jumps: Map<string, { index: number; hash: string; spec: string }[]>;
}

export interface IpsetState {
  readonly type: string;
  readonly family: string;
  readonly members: Set<string>;
  /** The desired member list this state was written from (the same array: nothing to compare). */
  readonly source?: readonly string[];
}

interface KernelState {
  readonly tables: Map<string, IptablesTableState>;
  readonly sets: Map<string, IpsetState>;
}

const keyOf = (k: TableKey): string => `${k.family}/${k.table}`;

// ---------------------------------------------------------------------------------------------
// Rendering
// ---------------------------------------------------------------------------------------------

/** Sets the iptables renderer needs besides the model's: one per multi-network match. */
export type DerivedSets = Map<string, { family: Family; members: readonly string[] }>;

const MULTIPORT_MAX = 15;

function protoName(p: L4Proto): string {
  if (p === 'icmpv6') return 'ipv6-icmp';
  return String(p);
}

function hex(n: number): string {
  return `0x${n.toString(16)}`;
}

/** Split port ranges into multiport-sized chunks (a range takes two of the 15 slots). */
export function portChunks(ranges: readonly PortRange[]): string[] {
  const chunks: string[] = [];
  let cur: string[] = [];
  let used = 0;
  for (const r of ranges) {
    const cost = r.first === r.last ? 1 : 2;
    if (used + cost > MULTIPORT_MAX) {
      chunks.push(cur.join(','));
      cur = [];
      used = 0;
    }
    cur.push(r.first === r.last ? String(r.first) : `${r.first}:${r.last}`);
    used += cost;
  }
  if (cur.length > 0) chunks.push(cur.join(','));
  return chunks;
}

/** The match part(s) of a rule for one family; several when positive port lists need splitting. */
function renderMatch(m: AclMatch, family: Family, derived: DerivedSets): string[] | null {
  if (m.family !== undefined && m.family !== family) return null;
  const parts: string[] = [];
  if (m.iif) parts.push(`-i ${m.iif}`);
  if (m.oif) parts.push(`-o ${m.oif}`);
  if (m.protocol !== undefined) parts.push(`-p ${protoName(m.protocol)}`);
  else if (m.notProtocol !== undefined) parts.push(`! -p ${protoName(m.notProtocol)}`);
  const usedFlag = new Set<string>();
  for (const a of m.addrs ?? []) {
    const neg = a.negate ? '! ' : '';
    const flag = a.dir === 'src' ? '-s' : '-d';
    let setName = a.set;
    if (!setName && a.nets) {
      if (a.nets.length === 1 && !usedFlag.has(flag)) {
        usedFlag.add(flag);
        parts.push(`${neg}${flag} ${a.nets[0]}`);
        continue;
      }
      setName = netListSetName(family, a.nets);
      derived.set(setName, { family, members: a.nets });
    }
    if (setName) parts.push(`-m set ${neg}--match-set ${setName} ${a.dir}`);
  }
  let variants: string[][] = [parts];
  for (const p of m.ports ?? []) {
    const opt = p.dir === 'src' ? '--sports' : '--dports';
    const chunks = portChunks(p.ranges);
    if (p.negate) {
      for (const v of variants) for (const c of chunks) v.push(`-m multiport ! ${opt} ${c}`);
    } else {
      variants = variants.flatMap((v) => chunks.map((c) => [...v, `-m multiport ${opt} ${c}`]));
    }
  }
  const icmp = (i: { type: number; code?: number }, neg: boolean): string => {
    const val = i.code === undefined ? `${i.type}` : `${i.type}/${i.code}`;
    return family === 4 ? `-m icmp ${neg ? '! ' : ''}--icmp-type ${val}` : `-m icmp6 ${neg ? '! ' : ''}--icmpv6-type ${val}`;
  };
  const tail: string[] = [];
  if (m.icmp) tail.push(icmp(m.icmp, false));
  if (m.notIcmp) tail.push(icmp(m.notIcmp, true));
  if (m.ctState) tail.push(`-m conntrack --ctstate ${m.ctState.map((s) => s.toUpperCase()).join(',')}`);
  if (m.markAll !== undefined) tail.push(`-m mark --mark ${hex(m.markAll)}/${hex(m.markAll)}`);
  if (m.markNone !== undefined) tail.push(`-m mark --mark 0x0/${hex(m.markNone)}`);
  return variants.map((v) => [...v, ...tail].join(' '));
}

function renderTarget(a: Exclude<AclAction, { kind: 'dispatch' }>): string {
  switch (a.kind) {
    case 'accept':
      return '-j ACCEPT';
    case 'drop':
      return '-j DROP';
    case 'return':
      return '-j RETURN';
    case 'jump':
      return `-j ${a.chain}`;
    case 'goto':
      return `-g ${a.chain}`;
    case 'setMark':
      return `-j MARK --set-xmark ${hex(a.bits)}/${hex(a.bits)}`;
    case 'clearMark':
      return `-j MARK --set-xmark 0x0/${hex(a.bits)}`;
    case 'log':
      return `-j LOG --log-prefix "${a.prefix}"`;
    case 'masquerade':
      return '-j MASQUERADE';
  }
}

/** Rule texts (without `-A chain` and without the comment) of one rule for one family. */
export function renderIptablesRule(rule: AclRule, family: Family, derived: DerivedSets): string[] {
  const matches = renderMatch(rule.match, family, derived);
  if (!matches) return [];
  const a = rule.action;
  const join = (...p: string[]): string => p.filter((x) => x !== '').join(' ');
  if (a.kind === 'dispatch') {
    const flag = a.key === 'iif' ? '-i' : '-o';
    return matches.flatMap((m) => a.targets.map((t) => join(`${flag} ${t.iface}`, m, `-g ${t.chain}`)));
  }
  const target = renderTarget(a);
  return matches.map((m) => join(m, target));
}

/** One chain rendered for one family: its rules, their hashes, the derived sets they use. */
export interface RenderedIptablesChain {
  readonly rules: readonly RenderedRule[];
  readonly hashes: readonly string[];
  readonly derived: DerivedSets;
}

export function renderIptablesChain(chain: AclChain, family: Family): RenderedIptablesChain {
  const rules: RenderedRule[] = [];
  const derived: DerivedSets = new Map();
  for (const rule of chain.rules) {
    for (const text of renderIptablesRule(rule, family, derived)) rules.push({ text, hash: ruleHash(chain.name, text) });
  }
  return { rules, hashes: rules.map((r) => r.hash), derived };
}

function ruleLine(chain: string, r: RenderedRule): string {
  return `-A ${chain} -m comment --comment "rc:${r.hash}" ${r.text}`;
}

function jumpText(chain: string): string {
  return `-j ${chain}`;
}

// ---------------------------------------------------------------------------------------------
// Parsing read-back state
// ---------------------------------------------------------------------------------------------

const RULE_HASH = /--comment "?rc:([0-9a-f]{16})"?/;
const JUMP_HASH = /--comment "?routecat:([0-9a-f]{16})"?/;

/** Parse `iptables-save -t <table>` output, keeping only what is ours. */
export function parseIptablesSave(text: string): IptablesTableState {
  const chains = new Map<string, (string | null)[]>();
  const jumps = new Map<string, { index: number; hash: string; spec: string }[]>();
  const position = new Map<string, number>();
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line.startsWith(':')) {
      const name = line.slice(1).split(/\s+/)[0];
      if (name.startsWith(CHAIN_PREFIX)) chains.set(name, []);
      continue;
    }
    if (!line.startsWith('-A ')) continue;
    const rest = line.slice(3);
    const sp = rest.indexOf(' ');
    const chain = sp < 0 ? rest : rest.slice(0, sp);
    const spec = sp < 0 ? '' : rest.slice(sp + 1);
    const index = position.get(chain) ?? 0;
    position.set(chain, index + 1);
    if (chain.startsWith(CHAIN_PREFIX)) {
      const list = chains.get(chain) ?? [];
      list.push(RULE_HASH.exec(spec)?.[1] ?? null);
      chains.set(chain, list);
    } else if (BUILTIN_CHAINS.has(chain)) {
      const m = JUMP_HASH.exec(spec);
      if (m) {
        const list = jumps.get(chain) ?? [];
        list.push({ index, hash: m[1], spec });
        jumps.set(chain, list);
      }
    }
  }
  return { chains, jumps };
}

/** Parse `ipset save`, keeping sets named `rc*`; members normalised to ipset's own spelling. */
export function parseIpsetSave(text: string): Map<string, IpsetState> {
  const sets = new Map<string, IpsetState>();
  for (const raw of text.split('\n')) {
    const w = raw.trim().split(/\s+/);
    if (w[0] === 'create' && w[1]?.startsWith(SET_PREFIX)) {
      const fi = w.indexOf('family');
      sets.set(w[1], { type: w[2] ?? '', family: fi >= 0 ? (w[fi + 1] ?? '') : '', members: new Set() });
    } else if (w[0] === 'add' && w[1] && sets.has(w[1]) && w[2]) {
      let member = w[2];
      try {
        member = ipsetMember(member);
      } catch {
        // not a network (a set type we don't make); keep the text, it will never equal ours
      }
      sets.get(w[1])?.members.add(member);
    }
  }
  return sets;
}

/** ipset's spelling of a hash:net member: host routes as bare addresses. */
export function ipsetMember(net: string): string {
  const p = parseNet(net);
  const text = formatNet(p);
  return p.len === (p.family === 4 ? 32 : 128) ? text.slice(0, text.indexOf('/')) : text;
}

/** Members for a hash:net set (which cannot hold a /0: it becomes two /1s). */
export function ipsetMembers(nets: readonly string[]): string[] {
  const out = new Set<string>();
  for (const n of nets) {
    const p = parseNet(n);
    if (p.len === 0) {
      const half = 1n << BigInt((p.family === 4 ? 32 : 128) - 1);
      out.add(ipsetMember(formatNet({ family: p.family, base: 0n, len: 1 })));
      out.add(ipsetMember(formatNet({ family: p.family, base: half, len: 1 })));
    } else {
      out.add(ipsetMember(n));
    }
  }
  return [...out].sort();
}

// ---------------------------------------------------------------------------------------------
// The dataplane
// ---------------------------------------------------------------------------------------------

interface DesiredTable {
  readonly key: TableKey;
  readonly chains: Map<string, RenderedIptablesChain>;
  /** Built-in chain -> our chain it must jump to. */
  readonly hooks: Map<string, string>;
}

export class IptablesDataplane implements AclDataplane {
  readonly name = 'iptables' as const;
  /** Which iptables is on PATH; known after the first read-back. */
  flavour: IptablesFlavour = 'unknown';
  private readonly settings: AclSettings;
  private state: KernelState | null = null;
  private lastSkipped = '';
  /** apply/readBack/cleanup never overlap. */
  private readonly serial = new OneAtATime();
  /** Chains and sets of the last compile, reused while their inputs are the same objects. */
  readonly compileCache = new AclCompileCache();
  /** Rendered chains per family and ipset members, per compiled object (unchanged: not redone). */
  readonly rendered: Record<Family, ObjectMemo<AclChain, RenderedIptablesChain>> = { 4: new ObjectMemo(), 6: new ObjectMemo() };
  private readonly members = new ObjectMemo<readonly string[], string[]>();

  constructor(settings: AclSettings) {
    this.settings = settings;
  }

  private get tables(): readonly TableKey[] {
    return this.settings.ipv6 ? TABLES : TABLES.filter((t) => t.family === 4);
  }

  private run(cmd: string, args: string[], stdin?: string): Promise<{ stdout: string; stderr: string }> {
    return this.settings.runner.run(cmd, args, stdin);
  }

  private async detectFlavour(): Promise<void> {
    if (this.flavour !== 'unknown') return;
    try {
      const { stdout } = await this.run('iptables', ['-V']);
      this.flavour = /nf_tables/.test(stdout) ? 'nft' : /legacy/.test(stdout) ? 'legacy' : 'unknown';
      log.info(`using ${stdout.trim()} (${this.flavour})`);
    } catch (err) {
      throw new AclError('E_ACL_READBACK', `cannot run iptables: ${errorMessage(err)}`, { cause: err });
    }
  }

  readBack(): Promise<void> {
    return this.serial.run(() => this.readBackNow());
  }

  apply(model: DataplaneModel, opts: AclApplyOptions): Promise<AclApplyStats> {
    return this.serial.run(() => this.applyNow(model, opts));
  }

  cleanup(): Promise<void> {
    return this.serial.run(() => this.cleanupNow());
  }

  private async readBackNow(): Promise<void> {
    this.state = null;
    await this.detectFlavour();
    const tables = new Map<string, IptablesTableState>();
    try {
      for (const t of this.tables) {
        const cmd = t.family === 4 ? 'iptables-save' : 'ip6tables-save';
        const { stdout } = await this.run(cmd, ['-t', t.table]);
        tables.set(keyOf(t), parseIptablesSave(stdout));
      }
      const { stdout } = await this.run('ipset', ['save']);
      this.state = { tables, sets: parseIpsetSave(stdout) };
    } catch (err) {
      throw new AclError('E_ACL_READBACK', `iptables read-back failed: ${errorMessage(err)}`, { cause: err });
    }
  }

  private async applyNow(model: DataplaneModel, opts: AclApplyOptions): Promise<AclApplyStats> {
    const start = performance.now();
    const ruleset = compileAclModel(model, this.settings, this.compileCache);
    const skipped = ruleset.skipped.join('; ');
    if (skipped !== this.lastSkipped && skipped) log.warn(`not programmed: ${skipped}`);
    this.lastSkipped = skipped;

    // Render every table; multi-network matches add derived sets.
    const derived: DerivedSets = new Map();
    const desired: DesiredTable[] = [];
    let rulesTotal = 0;
    for (const key of this.tables) {
      const chains = new Map<string, RenderedIptablesChain>();
      const hooks = new Map<string, string>();
      const memo = this.rendered[key.family];
      for (const chain of ruleset.chains) {
        if (chain.table !== key.table) continue;
        const rendered = memo.get(chain, (c) => renderIptablesChain(c, key.family));
        for (const [name, set] of rendered.derived) derived.set(name, set);
        chains.set(chain.name, rendered);
        rulesTotal += rendered.rules.length;
        if (chain.hook) {
          hooks.set(BUILTIN[chain.hook], chain.name);
          rulesTotal += 1;
        }
      }
      desired.push({ key, chains, hooks });
    }
    const desiredSets = new Map<string, { family: Family; members: readonly string[] }>();
    for (const s of ruleset.sets) {
      if (s.family === 6 && !this.settings.ipv6) continue;
      desiredSets.set(s.name, { family: s.family, members: this.members.get(s.members, ipsetMembers) });
    }
    for (const [name, s] of derived) desiredSets.set(name, { family: s.family, members: this.members.get(s.members, ipsetMembers) });
    for (const name of desiredSets.keys()) {
      if (name.length > MAX_SET_NAME) throw new AclError('E_ACL_MODEL', `ipset name '${name}' is too long`);
    }

    try {
      if (!this.state) await this.readBackNow();
      const state = this.state as unknown as KernelState;
      let rulesWritten = 0;
      let setsWritten = 0;
      let wrote = false;

      // 1. Sets that rules are about to use: create or update.
      const setScript: string[] = [];
      for (const [name, want] of desiredSets) {
        const have = state.sets.get(name);
        const family = want.family === 4 ? 'inet' : 'inet6';
        const lines: string[] = [];
        if (have && have.source === want.members && have.type === 'hash:net' && have.family === family) continue;
        if (!have || have.type !== 'hash:net' || have.family !== family) {
          if (have) lines.push(`destroy ${name}`);
          lines.push(`create ${name} hash:net family ${family} maxelem 1048576`);
          for (const m of want.members) lines.push(`add ${name} ${m}`);
        } else {
          const wantSet = new Set(want.members);
          for (const m of want.members) if (!have.members.has(m)) lines.push(`add ${name} ${m}`);
          for (const m of have.members) if (!wantSet.has(m)) lines.push(`del ${name} ${m}`);
        }
        if (lines.length > 0) {
          setScript.push(...lines);
          setsWritten++;
        }
      }
      if (setScript.length > 0) {
        await this.run('ipset', ['restore', '-exist'], `${setScript.join('\n')}\n`);
        wrote = true;
      }
      for (const [name, want] of desiredSets) {
        if (state.sets.get(name)?.source === want.members) continue;
        state.sets.set(name, { type: 'hash:net', family: want.family === 4 ? 'inet' : 'inet6', members: new Set(want.members), source: want.members });
      }

      // 2. One atomic restore per (family, table).
      for (const d of desired) {
        const have = state.tables.get(keyOf(d.key)) ?? { chains: new Map(), jumps: new Map() };
        const wantHashes = new Map<string, readonly string[]>();
        for (const [name, c] of d.chains) wantHashes.set(name, c.hashes);
        const diff = diffChains(wantHashes, have.chains);
        const del = opts.inSync ? diff.stale : [];
        const declare = [...diff.create, ...diff.rewrite, ...del];
        const body: string[] = [];
        for (const name of [...diff.create, ...diff.rewrite]) {
          const rules = d.chains.get(name)!.rules;
          for (const r of rules) body.push(ruleLine(name, r));
          rulesWritten += rules.length;
        }
        // Equal chains now share the desired hash arrays: the next diff of them is one comparison.
        for (const [name, hashes] of wantHashes) have.chains.set(name, hashes);
        // Jump rules: exactly one of ours, first in each hooked built-in chain.
        const jumpLines: string[] = [];
        const newJumps = new Map<string, { index: number; hash: string; spec: string }[]>();
        for (const [builtin, ours] of have.jumps) {
          const target = d.hooks.get(builtin);
          if (target === undefined && !opts.inSync) {
            newJumps.set(builtin, ours);
            continue;
          }
          const hash = target ? ruleHash(builtin, jumpText(target)) : '';
          const good = target !== undefined && ours.length === 1 && ours[0].index === 0 && ours[0].hash === hash;
          if (good) {
            newJumps.set(builtin, ours);
            continue;
          }
          for (const j of ours) jumpLines.push(`-D ${builtin} ${j.spec}`);
        }
        for (const [builtin, target] of d.hooks) {
          if (newJumps.has(builtin)) continue;
          const text = jumpText(target);
          const hash = ruleHash(builtin, text);
          jumpLines.push(`-I ${builtin} 1 -m comment --comment "routecat:${hash}" ${text}`);
          newJumps.set(builtin, [{ index: 0, hash, spec: `-m comment --comment "routecat:${hash}" ${text}` }]);
          rulesWritten += 1;
        }
        if (declare.length === 0 && body.length === 0 && jumpLines.length === 0) {
          state.tables.set(keyOf(d.key), have);
          continue;
        }
        const script = [
          `*${d.key.table}`,
          ...declare.map((c) => `:${c} - [0:0]`),
          ...body,
          ...jumpLines,
          ...del.map((c) => `-X ${c}`),
          'COMMIT',
          '',
        ].join('\n');
        const cmd = d.key.family === 4 ? 'iptables-restore' : 'ip6tables-restore';
        await this.run(cmd, ['--noflush', '-w', '10'], script);
        wrote = true;
        for (const c of del) have.chains.delete(c);
        state.tables.set(keyOf(d.key), { chains: have.chains, jumps: newJumps });
      }

      // 3. Sets nothing refers to any more.
      if (opts.inSync) {
        const stale = [...state.sets.keys()].filter((n) => !desiredSets.has(n));
        if (stale.length > 0) {
          await this.run('ipset', ['restore', '-exist'], stale.map((n) => `destroy ${n}`).join('\n') + '\n');
          for (const n of stale) state.sets.delete(n);
          wrote = true;
          setsWritten += stale.length;
        }
      }

      const changed = wrote;
      const stats = { changed, rulesWritten, rulesTotal, setsWritten, durationMs: elapsedSince(start) };
      if (changed) log.debug(`applied: ${rulesWritten}/${rulesTotal} rules, ${setsWritten} sets written`);
      return stats;
    } catch (err) {
      this.state = null;
      if (err instanceof AclError) throw err;
      throw new AclError('E_ACL_APPLY', `iptables apply failed: ${errorMessage(err)}`, { cause: err });
    }
  }

  private async cleanupNow(): Promise<void> {
    try {
      await this.readBackNow();
      const state = this.state as unknown as KernelState;
      for (const key of this.tables) {
        const have = state.tables.get(keyOf(key));
        if (!have || (have.chains.size === 0 && have.jumps.size === 0)) continue;
        const lines = [`*${key.table}`];
        for (const c of have.chains.keys()) lines.push(`:${c} - [0:0]`);
        for (const [builtin, ours] of have.jumps) for (const j of ours) lines.push(`-D ${builtin} ${j.spec}`);
        for (const c of have.chains.keys()) lines.push(`-X ${c}`);
        lines.push('COMMIT', '');
        await this.run(key.family === 4 ? 'iptables-restore' : 'ip6tables-restore', ['--noflush', '-w', '10'], lines.join('\n'));
      }
      if (state.sets.size > 0) {
        await this.run('ipset', ['restore', '-exist'], [...state.sets.keys()].map((n) => `destroy ${n}`).join('\n') + '\n');
      }
    } catch (err) {
      if (err instanceof AclError) throw err;
      throw new AclError('E_ACL_APPLY', `iptables cleanup failed: ${errorMessage(err)}`, { cause: err });
    } finally {
      this.state = null;
    }
  }
}
