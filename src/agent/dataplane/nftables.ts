/**
 * The nftables backend of the ACL dataplane.
 *
 * It owns one table, `inet routecat`: its base chains (hooks forward/input/output at priority
 * filter, postrouting at srcnat), its regular chains and its named sets. It never touches any
 * other table.
 *
 * How it writes: every rule carries `comment "rc:<hash of its text>"`. `nft -j list table inet
 * routecat` is read back on the first apply and after any error; apply() diffs rule-hash lists per
 * chain and set contents (as merged address intervals, which is what auto-merge stores), then
 * sends ONE `nft -f -` transaction that updates changed sets, flushes and refills changed chains,
 * creates new ones and (when in sync) deletes stale chains and sets. Nothing is sent when nothing
 * differs.
 */
import { logger } from '../../log.ts';
import { errorMessage } from '../../errors.ts';
import { CommandError } from './exec.ts';
import type { DataplaneModel, PortRange } from '../model.ts';
import {
  AclError,
  AclCompileCache,
  ObjectMemo,
  OneAtATime,
  compileAclModel,
  diffChains,
  elapsedSince,
  formatRange,
  mergeRanges,
  netToRange,
  netsToRanges,
  parseNet,
  rangesEqual,
  ruleHash,
  type AclAction,
  type AclApplyOptions,
  type AclApplyStats,
  type AclChain,
  type AclDataplane,
  type AclSet,
  type AclHook,
  type AclMatch,
  type AclRule,
  type AclSettings,
  type AddrRange,
  type Family,
  type L4Proto,
  type RenderedRule,
} from './acl.ts';

const log = logger('acl-nftables');

export const NFT_FAMILY = 'inet';
export const NFT_TABLE = 'routecat';
const T = `${NFT_FAMILY} ${NFT_TABLE}`;

const BASE_CHAIN_SPEC: Record<AclHook, string> = {
  forward: 'type filter hook forward priority filter; policy accept;',
  input: 'type filter hook input priority filter; policy accept;',
  output: 'type filter hook output priority filter; policy accept;',
  postrouting: 'type nat hook postrouting priority srcnat; policy accept;',
};

// ---------------------------------------------------------------------------------------------
// Rendering
// ---------------------------------------------------------------------------------------------

function protoName(p: L4Proto): string {
  if (p === 'icmpv6') return 'ipv6-icmp';
  return String(p);
}

function hex32(n: number): string {
  return `0x${(n >>> 0).toString(16).padStart(8, '0')}`;
}

function ifname(name: string): string {
  return `"${name.endsWith('+') ? `${name.slice(0, -1)}*` : name}"`;
}

function addrList(family: Family, nets: readonly string[]): string {
  const ranges = netsToRanges(nets).map((r) => formatRange(family, r));
  return ranges.length === 1 ? ranges[0] : `{ ${ranges.join(', ')} }`;
}

/** Ports as nft writes them; overlapping ranges merged (anonymous interval sets reject overlaps). */
function portList(ranges: readonly PortRange[]): string {
  const merged: PortRange[] = [];
  for (const r of [...ranges].sort((a, b) => a.first - b.first || a.last - b.last)) {
    const last = merged[merged.length - 1];
    if (last && r.first <= last.last + 1) merged[merged.length - 1] = { first: last.first, last: Math.max(last.last, r.last) };
    else merged.push(r);
  }
  const items = merged.map((r) => (r.first === r.last ? `${r.first}` : `${r.first}-${r.last}`));
  return items.length === 1 ? items[0] : `{ ${items.join(', ')} }`;
}

function renderMatch(m: AclMatch): string {
  const parts: string[] = [];
  if (m.family !== undefined) parts.push(`meta nfproto ${m.family === 4 ? 'ipv4' : 'ipv6'}`);
  if (m.iif) parts.push(`iifname ${ifname(m.iif)}`);
  if (m.oif) parts.push(`oifname ${ifname(m.oif)}`);
  if (m.protocol !== undefined) parts.push(`meta l4proto ${protoName(m.protocol)}`);
  if (m.notProtocol !== undefined) parts.push(`meta l4proto != ${protoName(m.notProtocol)}`);
  for (const a of m.addrs ?? []) {
    if (m.family === undefined) throw new AclError('E_ACL_MODEL', 'address match without an IP family');
    const sel = `${m.family === 4 ? 'ip' : 'ip6'} ${a.dir === 'src' ? 'saddr' : 'daddr'}`;
    const op = a.negate ? '!= ' : '';
    if (a.set) parts.push(`${sel} ${op}@${a.set}`);
    else if (a.nets && a.nets.length > 0) parts.push(`${sel} ${op}${addrList(m.family, a.nets)}`);
  }
  for (const p of m.ports ?? []) {
    parts.push(`th ${p.dir === 'src' ? 'sport' : 'dport'} ${p.negate ? '!= ' : ''}${portList(p.ranges)}`);
  }
  const icmpKw = m.family === 6 ? 'icmpv6' : 'icmp';
  if (m.icmp) {
    parts.push(`${icmpKw} type ${m.icmp.type}`);
    if (m.icmp.code !== undefined) parts.push(`${icmpKw} code ${m.icmp.code}`);
  }
  if (m.notIcmp) {
    if (m.notIcmp.code === undefined) parts.push(`${icmpKw} type != ${m.notIcmp.type}`);
    else parts.push(`${icmpKw} type . ${icmpKw} code != { ${m.notIcmp.type} . ${m.notIcmp.code} }`);
  }
  if (m.ctState) parts.push(`ct state ${m.ctState.join(',')}`);
  if (m.markAll !== undefined) parts.push(`meta mark & ${hex32(m.markAll)} == ${hex32(m.markAll)}`);
  if (m.markNone !== undefined) parts.push(`meta mark & ${hex32(m.markNone)} == 0`);
  return parts.join(' ');
}

function renderAction(a: AclAction): string {
  switch (a.kind) {
    case 'accept':
      return 'accept';
    case 'drop':
      return 'drop';
    case 'return':
      return 'return';
    case 'jump':
      return `jump ${a.chain}`;
    case 'goto':
      return `goto ${a.chain}`;
    case 'setMark':
      return `meta mark set meta mark | ${hex32(a.bits)}`;
    case 'clearMark':
      return `meta mark set meta mark & ${hex32(~a.bits)}`;
    case 'log':
      return `log prefix "${a.prefix}"`;
    case 'masquerade':
      return 'masquerade';
    case 'dispatch': {
      const entries = a.targets.map((t) => `${ifname(t.iface)} : goto ${t.chain}`);
      return `${a.key === 'iif' ? 'iifname' : 'oifname'} vmap { ${entries.join(', ')} }`;
    }
  }
}

/** Rule text (without `add rule ... chain` and without the comment). */
export function renderNftRule(rule: AclRule): string {
  return [renderMatch(rule.match), renderAction(rule.action)].filter((s) => s !== '').join(' ');
}

/** One chain rendered: its rules and their hashes. */
export interface RenderedNftChain {
  readonly rules: readonly RenderedRule[];
  readonly hashes: readonly string[];
}

export function renderNftChain(chain: AclChain): RenderedNftChain {
  const rules = chain.rules.map((rule) => {
    const text = renderNftRule(rule);
    return { text, hash: ruleHash(chain.name, text) };
  });
  return { rules, hashes: rules.map((r) => r.hash) };
}

// ---------------------------------------------------------------------------------------------
// Read-back
// ---------------------------------------------------------------------------------------------

export interface NftChainState {
  readonly hook?: string;
  readonly hashes: readonly (string | null)[];
}

export interface NftSetState {
  readonly type: string;
  readonly ranges: readonly AddrRange[];
}

export interface NftTableState {
  readonly exists: boolean;
  readonly chains: Map<string, NftChainState>;
  readonly sets: Map<string, NftSetState>;
}

const RULE_HASH = /^rc:([0-9a-f]{16})/;

function elemRanges(elem: unknown): AddrRange[] {
  const out: AddrRange[] = [];
  const one = (e: unknown): void => {
    if (typeof e === 'string') {
      out.push(netToRange(parseNet(e)));
    } else if (e && typeof e === 'object') {
      const o = e as Record<string, unknown>;
      if (o.prefix && typeof o.prefix === 'object') {
        const p = o.prefix as { addr: string; len: number };
        out.push(netToRange(parseNet(`${p.addr}/${p.len}`)));
      } else if (Array.isArray(o.range)) {
        const [lo, hi] = o.range as [string, string];
        out.push({ lo: parseNet(lo).base, hi: parseNet(hi).base });
      } else if (o.elem && typeof o.elem === 'object') {
        one((o.elem as { val: unknown }).val);
      }
    }
  };
  if (Array.isArray(elem)) for (const e of elem) one(e);
  return mergeRanges(out);
}

/** Parse `nft -j list table inet routecat`. */
export function parseNftJson(text: string): NftTableState {
  let doc: { nftables?: Record<string, unknown>[] };
  try {
    doc = JSON.parse(text) as { nftables?: Record<string, unknown>[] };
  } catch (err) {
    throw new AclError('E_ACL_READBACK', `nft printed invalid JSON: ${errorMessage(err)}`);
  }
  const chains = new Map<string, NftChainState>();
  const sets = new Map<string, NftSetState>();
  let exists = false;
  for (const item of doc.nftables ?? []) {
    const pick = (k: string): Record<string, unknown> | null => {
      const v = item[k] as Record<string, unknown> | undefined;
      return v && v.family === NFT_FAMILY && (k === 'table' ? v.name : v.table) === NFT_TABLE ? v : null;
    };
    if (pick('table')) exists = true;
    const chain = pick('chain');
    if (chain) chains.set(String(chain.name), { hook: chain.hook as string | undefined, hashes: chains.get(String(chain.name))?.hashes ?? [] });
    const set = pick('set');
    if (set) {
      const type = String(set.type);
      sets.set(String(set.name), { type, ranges: elemRanges(set.elem) });
    }
    const rule = pick('rule');
    if (rule) {
      const name = String(rule.chain);
      let c = chains.get(name);
      if (!c) chains.set(name, (c = { hashes: [] }));
      (c.hashes as (string | null)[]).push(typeof rule.comment === 'string' ? (RULE_HASH.exec(rule.comment)?.[1] ?? null) : null);
    }
  }
  return { exists, chains, sets };
}

// ---------------------------------------------------------------------------------------------
// The dataplane
// ---------------------------------------------------------------------------------------------

export class NftablesDataplane implements AclDataplane {
  readonly name = 'nftables' as const;
  private readonly settings: AclSettings;
  private state: NftTableState | null = null;
  private lastSkipped = '';
  /** apply/readBack/cleanup never overlap. */
  private readonly serial = new OneAtATime();
  /** Chains and sets of the last compile, reused while their inputs are the same objects. */
  readonly compileCache = new AclCompileCache();
  /** Rendered chains and set intervals per compiled object (unchanged: not redone). */
  readonly rendered = new ObjectMemo<AclChain, RenderedNftChain>();
  private readonly ranges = new ObjectMemo<AclSet, AddrRange[]>();

  constructor(settings: AclSettings) {
    this.settings = settings;
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
    try {
      const { stdout } = await this.settings.runner.run('nft', ['-j', 'list', 'table', NFT_FAMILY, NFT_TABLE]);
      this.state = parseNftJson(stdout);
    } catch (err) {
      if (err instanceof CommandError && /No such file or directory/.test(err.stderr)) {
        this.state = { exists: false, chains: new Map(), sets: new Map() };
        return;
      }
      if (err instanceof AclError) throw err;
      throw new AclError('E_ACL_READBACK', `nftables read-back failed: ${errorMessage(err)}`, { cause: err });
    }
  }

  private async applyNow(model: DataplaneModel, opts: AclApplyOptions): Promise<AclApplyStats> {
    const start = performance.now();
    const ruleset = compileAclModel(model, this.settings, this.compileCache);
    const skipped = ruleset.skipped.join('; ');
    if (skipped !== this.lastSkipped && skipped) log.warn(`not programmed: ${skipped}`);
    this.lastSkipped = skipped;

    const desired = new Map<string, RenderedNftChain>();
    const hooks = new Map<string, AclHook | undefined>();
    let rulesTotal = 0;
    for (const chain of ruleset.chains) {
      const rendered = this.rendered.get(chain, renderNftChain);
      desired.set(chain.name, rendered);
      hooks.set(chain.name, chain.hook);
      rulesTotal += rendered.rules.length;
    }

    try {
      if (!this.state) await this.readBackNow();
      const state = this.state as unknown as NftTableState;
      const lines: string[] = [];
      let setsWritten = 0;
      let rulesWritten = 0;

      // Sets first: rules below may refer to them.
      const setLines: string[] = [];
      for (const s of ruleset.sets) {
        const ranges = this.ranges.get(s, (x) => netsToRanges(x.members));
        const have = state.sets.get(s.name);
        const type = s.family === 4 ? 'ipv4_addr' : 'ipv6_addr';
        if (have && have.type === type && (have.ranges === ranges || rangesEqual(have.ranges, ranges))) continue;
        if (have && have.type !== type) {
          throw new AclError('E_ACL_APPLY', `nft set '${s.name}' has type ${have.type}, expected ${type}`);
        }
        if (!have) setLines.push(`add set ${T} ${s.name} { type ${type}; flags interval; auto-merge; }`);
        else setLines.push(`flush set ${T} ${s.name}`);
        // Elements in batches so that one line never grows without bound.
        for (let i = 0; i < ranges.length; i += 1000) {
          const chunk = ranges.slice(i, i + 1000).map((r) => formatRange(s.family, r));
          setLines.push(`add element ${T} ${s.name} { ${chunk.join(', ')} }`);
        }
        setsWritten++;
      }

      // Chains: a chain whose base-chain-ness differs from what we want is recreated.
      const actual = new Map<string, readonly (string | null)[]>();
      const recreate: string[] = [];
      for (const [name, c] of state.chains) {
        if (desired.has(name) && (c.hook ?? undefined) !== hooks.get(name)) {
          recreate.push(name);
          continue;
        }
        actual.set(name, c.hashes);
      }
      const wantHashes = new Map<string, readonly string[]>();
      for (const [name, c] of desired) wantHashes.set(name, c.hashes);
      const diff = diffChains(wantHashes, actual);
      const recreateSet = new Set(recreate);
      const create = diff.create.filter((n) => !recreateSet.has(n));
      // Equal chains now share the desired hash arrays: the next diff of them is one comparison.
      const rewriteSet = new Set(diff.rewrite);
      for (const [name, hashes] of wantHashes) {
        const c = state.chains.get(name);
        if (c && c.hashes !== hashes && !rewriteSet.has(name) && !recreateSet.has(name)) state.chains.set(name, { hook: c.hook, hashes });
      }
      const stale = opts.inSync ? diff.stale : [];
      const chainLines: string[] = [];
      for (const name of [...diff.rewrite, ...recreate, ...stale]) chainLines.push(`flush chain ${T} ${name}`);
      for (const name of [...recreate, ...stale]) chainLines.push(`delete chain ${T} ${name}`);
      for (const name of [...recreate, ...create]) {
        const hook = hooks.get(name);
        chainLines.push(hook ? `add chain ${T} ${name} { ${BASE_CHAIN_SPEC[hook]} }` : `add chain ${T} ${name}`);
      }
      for (const name of [...diff.rewrite, ...create, ...recreate]) {
        const rules = desired.get(name)!.rules;
        for (const r of rules) chainLines.push(`add rule ${T} ${name} ${r.text} comment "rc:${r.hash}"`);
        rulesWritten += rules.length;
      }
      const wantSets = new Set(ruleset.sets.map((s) => s.name));
      const staleSets = opts.inSync ? [...state.sets.keys()].filter((n) => !wantSets.has(n)) : [];
      const setDeletes = staleSets.map((n) => `delete set ${T} ${n}`);
      setsWritten += staleSets.length;

      if (setLines.length + chainLines.length + setDeletes.length > 0) {
        if (!state.exists) lines.push(`add table ${T}`);
        lines.push(...setLines, ...chainLines, ...setDeletes);
        await this.settings.runner.run('nft', ['-f', '-'], `${lines.join('\n')}\n`);
        // Record what the kernel now holds.
        const chains = new Map(state.chains);
        for (const name of stale) chains.delete(name);
        for (const [name, c] of desired) chains.set(name, { hook: hooks.get(name), hashes: c.hashes });
        const sets = new Map(state.sets);
        for (const n of staleSets) sets.delete(n);
        for (const s of ruleset.sets) sets.set(s.name, { type: s.family === 4 ? 'ipv4_addr' : 'ipv6_addr', ranges: this.ranges.get(s, (x) => netsToRanges(x.members)) });
        this.state = { exists: true, chains, sets };
        log.debug(`applied: ${rulesWritten}/${rulesTotal} rules, ${setsWritten} sets written`);
        return { changed: true, rulesWritten, rulesTotal, setsWritten, durationMs: elapsedSince(start) };
      }
      return { changed: false, rulesWritten: 0, rulesTotal, setsWritten: 0, durationMs: elapsedSince(start) };
    } catch (err) {
      this.state = null;
      if (err instanceof AclError) throw err;
      throw new AclError('E_ACL_APPLY', `nftables apply failed: ${errorMessage(err)}`, { cause: err });
    }
  }

  private async cleanupNow(): Promise<void> {
    try {
      await this.readBackNow();
      if (this.state?.exists) await this.settings.runner.run('nft', ['delete', 'table', NFT_FAMILY, NFT_TABLE]);
    } catch (err) {
      if (err instanceof AclError) throw err;
      throw new AclError('E_ACL_APPLY', `nftables cleanup failed: ${errorMessage(err)}`, { cause: err });
    } finally {
      this.state = null;
    }
  }
}
