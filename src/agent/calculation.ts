/**
 * The calculation: from the datastore view (etcd keys and JSON values, as the syncer delivers
 * them) to the DataplaneModel this host needs. Pure — no I/O, no clock. onUpdate() only records
 * the change; model() recomputes what the changes invalidated:
 *  - a changed endpoint re-matches that endpoint against the policies, and re-tests only that
 *    endpoint against each cached IP-set selector;
 *  - a changed policy, profile or tier re-matches the local endpoints;
 *  - a changed profile (labelsToApply) or network set invalidates the IP-set caches.
 * Everything is sorted, so the output depends only on the current state, never on update order.
 *
 * Semantics are Calico's: tiers by order (no order = last; the implicit `default` tier has order
 * 1,000,000), policies by order then name, a policy applies in a direction when its types say so,
 * profiles after the tiers. Rule selectors become IP sets of every matching endpoint's addresses
 * in the cluster plus matching network sets' nets; a namespaced policy's rule selector looks in
 * its own namespace unless it has a namespaceSelector. Namespaces carry no labels here (routecat
 * has no Namespace objects), so a namespaceSelector is evaluated against the label
 * `projectcalico.org/name: <namespace>`.
 */
import { createHash } from 'node:crypto';
import ipaddr from 'ipaddr.js';
import { parseSelector, type Selector } from '../policy/selector.ts';
import { validateResource } from '../model/validate.ts';
import { errorMessage } from '../errors.ts';
import { parseResourceKey } from '../datastore/keys.ts';
import type { Resource } from '../model/resource.ts';
import type { EntityRule, Rule, ServiceAccountMatch } from '../model/types.ts';
import type {
  CompiledPolicy,
  CompiledRule,
  DataplaneModel,
  Direction,
  EndpointPolicies,
  IpSet,
  LocalEndpoint,
  PoolInfo,
  PortRange,
  ProtocolMatch,
  RuleMatch,
  TierRef,
} from './model.ts';

export const DEFAULT_TIER_ORDER = 1_000_000;
const NAMESPACE_LABEL = 'projectcalico.org/namespace';
const ORCHESTRATOR_LABEL = 'projectcalico.org/orchestrator';
const NAMESPACE_NAME_LABEL = 'projectcalico.org/name';

const DEFAULT_FAILSAFE_IN: ReadonlyArray<{ protocol: 'tcp' | 'udp'; port: number }> = [
  { protocol: 'tcp', port: 22 }, { protocol: 'udp', port: 68 }, { protocol: 'tcp', port: 179 }, { protocol: 'tcp', port: 2379 },
  { protocol: 'tcp', port: 2380 }, { protocol: 'tcp', port: 5473 }, { protocol: 'tcp', port: 6443 }, { protocol: 'tcp', port: 6666 },
  { protocol: 'tcp', port: 6667 },
];
const DEFAULT_FAILSAFE_OUT: ReadonlyArray<{ protocol: 'tcp' | 'udp'; port: number }> = [
  { protocol: 'udp', port: 53 }, { protocol: 'udp', port: 67 }, { protocol: 'tcp', port: 179 }, { protocol: 'tcp', port: 2379 },
  { protocol: 'tcp', port: 2380 }, { protocol: 'tcp', port: 5473 }, { protocol: 'tcp', port: 6443 }, { protocol: 'tcp', port: 6666 },
  { protocol: 'tcp', port: 6667 },
];

/** Canonical CIDR text for an address or CIDR; throws on garbage. */
export function canonicalNet(text: string): { family: 4 | 6; cidr: string } {
  if (text.includes('/')) {
    const [addr, len] = ipaddr.parseCIDR(text);
    return { family: addr.kind() === 'ipv4' ? 4 : 6, cidr: `${addr.toString()}/${len}` };
  }
  const addr = ipaddr.parse(text);
  return addr.kind() === 'ipv4' ? { family: 4, cidr: `${addr.toString()}/32` } : { family: 6, cidr: `${addr.toString()}/128` };
}

const byText = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);
const uniqSorted = (xs: Iterable<string>) => [...new Set(xs)].sort(byText);

/** An entity IP sets select from: endpoints (anywhere in the cluster) and network sets. */
interface Member {
  readonly key: string;
  readonly labels: Record<string, string>;
  readonly namespaced: boolean;
  readonly namespace?: string;
  readonly nets: readonly string[];
  /** A workload's service account: its name and the labels a serviceAccounts selector sees. */
  readonly serviceAccount?: { readonly name: string; readonly labels: Record<string, string> };
}

interface EndpointRec {
  readonly key: string;
  readonly resource: Resource;
  readonly type: 'workload' | 'host';
  readonly node: string;
}

interface PolicyRec {
  readonly key: string;
  readonly id: string;
  readonly kind: 'GlobalNetworkPolicy' | 'NetworkPolicy';
  readonly name: string;
  readonly namespace?: string;
  readonly tier: string;
  readonly order: number;
  readonly selector: Selector;
  readonly namespaceSelector?: Selector;
  /** Only workloads whose service account this selects (Calico's policy-level serviceAccountSelector). */
  readonly serviceAccountSelector?: Selector;
  readonly types: ReadonlySet<Direction>;
  readonly ingress: readonly Rule[];
  readonly egress: readonly Rule[];
}

/** A rule selector's scope: where its members may live. */
interface SetDef {
  readonly id: string;
  readonly source: string;
  readonly selector: Selector;
  /** Only entities in this namespace (namespaced policy without namespaceSelector). */
  readonly namespace?: string;
  readonly namespaceSelector?: Selector;
  /** Only workloads whose service account is one of `names` (when given) and matches `selector`. */
  readonly serviceAccounts?: { readonly names?: ReadonlySet<string>; readonly selector?: Selector };
}

interface CompiledOut {
  /** What it was compiled from (a PolicyRec or a Profile resource); the same object: still valid. */
  readonly from: object;
  readonly policy: CompiledPolicy;
  readonly sets: readonly SetDef[];
  readonly problems: readonly string[];
}

export interface CalculatorOptions {
  readonly hostname: string;
}

export class Calculator {
  readonly #hostname: string;
  /** Valid resources by key, per kind plural. */
  readonly #byKind = new Map<string, Map<string, Resource>>();
  readonly #problems = new Map<string, string>();
  readonly #endpoints = new Map<string, EndpointRec>();
  readonly #policies = new Map<string, PolicyRec>();
  /** What changed since the last model(). */
  #dirtyEndpoints = new Set<string>();
  #policiesDirty = true;
  #labelsDirty = true;
  #setsDirty = true;
  #otherDirty = true;
  /** Cached per-local-endpoint results. */
  readonly #localCache = new Map<string, LocalEndpoint>();
  /** Compiled policies and profiles by id, with the sets they use. */
  #compiled = new Map<string, CompiledOut>();
  /** IP set members: set id -> member key -> nets. */
  readonly #setMembers = new Map<string, Map<string, readonly string[]>>();
  readonly #setDefs = new Map<string, SetDef>();
  /** All members (endpoints everywhere + network sets) with effective labels. */
  #members = new Map<string, Member>();
  #last: DataplaneModel | undefined;

  constructor(opts: CalculatorOptions) {
    this.#hostname = opts.hostname;
  }

  onUpdate(u: { key: string; value: string | null }): void {
    const parsed = parseResourceKey(u.key);
    if (!parsed) return; // not a v3 resource key: not ours to judge
    const plural = parsed.kind.plural;
    let kindMap = this.#byKind.get(plural);
    if (!kindMap) this.#byKind.set(plural, (kindMap = new Map()));
    const had = kindMap.has(u.key);
    const hadProblem = this.#problems.delete(u.key);
    let resource: Resource | undefined;
    if (u.value !== null) {
      try {
        const doc = JSON.parse(u.value) as unknown;
        resource = validateResource(doc);
        if (resource.kind !== parsed.kind.kind) throw new Error(`kind '${resource.kind}' stored under the ${parsed.kind.plural} prefix`);
        if (resource.metadata.name !== parsed.name) throw new Error(`metadata.name '${resource.metadata.name}' does not match the key`);
        if (parsed.kind.namespaced && (resource.metadata.namespace ?? 'default') !== parsed.namespace) {
          throw new Error(`metadata.namespace '${resource.metadata.namespace ?? ''}' does not match the key`);
        }
      } catch (err) {
        this.#problems.set(u.key, errorMessage(err));
        resource = undefined;
      }
    }
    if (resource) kindMap.set(u.key, resource);
    else if (had) kindMap.delete(u.key);
    this.#last = undefined;
    if (!had && !resource && u.value === null) return; // deleting what we never held (a problem at most)
    if (hadProblem && !had && !resource) return;
    switch (plural) {
      case 'workloadendpoints':
      case 'hostendpoints':
        if (resource) {
          const spec = resource.spec as { node?: string };
          this.#endpoints.set(u.key, { key: u.key, resource, type: plural === 'hostendpoints' ? 'host' : 'workload', node: spec.node ?? '' });
        } else this.#endpoints.delete(u.key);
        this.#dirtyEndpoints.add(u.key);
        break;
      case 'globalnetworkpolicies':
      case 'networkpolicies':
        if (resource) {
          try {
            this.#policies.set(u.key, policyRec(u.key, resource));
          } catch (err) {
            this.#problems.set(u.key, errorMessage(err));
            this.#policies.delete(u.key);
            kindMap.delete(u.key);
          }
        } else this.#policies.delete(u.key);
        this.#policiesDirty = true;
        break;
      case 'profiles':
        this.#policiesDirty = true;
        this.#labelsDirty = true;
        break;
      case 'tiers':
        this.#policiesDirty = true;
        break;
      case 'networksets':
      case 'globalnetworksets':
        this.#setsDirty = true;
        this.#labelsDirty = true;
        break;
      default:
        this.#otherDirty = true;
    }
  }

  model(): DataplaneModel {
    if (this.#last) return this.#last;
    const problems = new Map(this.#problems);
    const profiles = this.#byKind.get('profiles') ?? new Map<string, Resource>();
    const profileByName = new Map([...profiles.values()].map((p) => [p.metadata.name, p]));

    // 1. Members for IP sets: every endpoint in the cluster and every network set.
    if (this.#labelsDirty || this.#setsDirty) {
      this.#members = new Map();
      for (const ep of this.#endpoints.values()) this.#members.set(ep.key, memberOfEndpoint(ep, profileByName));
      for (const plural of ['networksets', 'globalnetworksets']) {
        for (const [key, r] of this.#byKind.get(plural) ?? []) this.#members.set(key, memberOfNetset(key, r, plural === 'networksets'));
      }
      this.#setMembers.clear(); // recomputed lazily below
    } else {
      for (const key of this.#dirtyEndpoints) {
        const ep = this.#endpoints.get(key);
        if (ep) this.#members.set(key, memberOfEndpoint(ep, profileByName));
        else this.#members.delete(key);
        for (const [setId, members] of this.#setMembers) {
          const def = this.#setDefs.get(setId)!;
          const m = this.#members.get(key);
          if (m && setMatches(def, m)) members.set(key, m.nets);
          else members.delete(key);
        }
      }
    }

    // 2. Compile policies and profiles (only when they changed).
    const tierOrder = new Map<string, number>([['default', DEFAULT_TIER_ORDER]]);
    const passingTiers = new Set<string>();
    for (const t of (this.#byKind.get('tiers') ?? new Map<string, Resource>()).values()) {
      const spec = t.spec as { order?: number; defaultAction?: string } | undefined;
      tierOrder.set(t.metadata.name, spec?.order ?? Number.POSITIVE_INFINITY);
      if (spec?.defaultAction === 'Pass') passingTiers.add(t.metadata.name);
    }
    if (this.#policiesDirty) {
      // Recompile only what changed: an unchanged policy keeps its CompiledPolicy object, which
      // lets the dataplane keep what it rendered from it.
      const prev = this.#compiled;
      this.#compiled = new Map();
      for (const p of this.#policies.values()) {
        const old = prev.get(p.id);
        this.#compiled.set(p.id, old?.from === p ? old : compilePolicy(p));
      }
      for (const [, pr] of profiles) {
        const old = prev.get(`pro/${pr.metadata.name}`);
        const out = old?.from === pr ? old : compileProfile(pr);
        this.#compiled.set(out.policy.id, out);
      }
    }
    for (const [id, c] of this.#compiled) for (const reason of c.problems) problems.set(keyOfCompiled(id, this.#policies, profiles) ?? id, reason);

    // 3. Local endpoints: match policies (per endpoint; cached while neither changed).
    const sortedPolicies = [...this.#policies.values()].sort((a, b) => {
      const ta = tierOrder.get(a.tier) ?? Number.POSITIVE_INFINITY;
      const tb = tierOrder.get(b.tier) ?? Number.POSITIVE_INFINITY;
      if (ta !== tb) return ta - tb;
      if (a.tier !== b.tier) return byText(a.tier, b.tier);
      if (a.order !== b.order) return a.order - b.order;
      return byText(a.name, b.name) || byText(a.namespace ?? '', b.namespace ?? '');
    });
    const recomputeAll = this.#policiesDirty || this.#labelsDirty;
    for (const key of [...this.#localCache.keys()]) {
      const ep = this.#endpoints.get(key);
      if (!ep || ep.node !== this.#hostname) this.#localCache.delete(key);
    }
    for (const ep of this.#endpoints.values()) {
      if (ep.node !== this.#hostname) continue;
      if (!recomputeAll && !this.#dirtyEndpoints.has(ep.key) && this.#localCache.has(ep.key)) continue;
      const local = localEndpoint(ep, profileByName, sortedPolicies, passingTiers, (reason) => problems.set(ep.key, reason));
      // An endpoint whose result did not change keeps its object (the dataplane's caches key on it).
      const old = this.#localCache.get(ep.key);
      if (local) this.#localCache.set(ep.key, old && sameData(old, local) ? old : local);
      else this.#localCache.delete(ep.key);
    }

    // 4. Collect what local endpoints reference; compute IP sets they need.
    const endpoints = new Map<string, LocalEndpoint>();
    const interfaces = new Map<string, string>();
    for (const ep of [...this.#localCache.values()].sort((a, b) => byText(a.id, b.id))) {
      const other = ep.iface ? interfaces.get(ep.iface) : undefined;
      if (other) {
        problems.set(ep.id, `interface ${ep.iface} is already used by ${other}; endpoint skipped`);
        continue;
      }
      if (ep.iface) interfaces.set(ep.iface, ep.id);
      endpoints.set(ep.id, ep);
    }
    const policyIds = new Set<string>();
    for (const ep of endpoints.values()) {
      for (const dir of [ep.ingress, ep.egress]) {
        for (const t of dir.tiers) for (const p of t.policies) policyIds.add(p);
        for (const p of dir.profiles) policyIds.add(p);
      }
    }
    const policies = new Map<string, CompiledPolicy>();
    const neededSets = new Map<string, SetDef>();
    for (const id of [...policyIds].sort(byText)) {
      const c = this.#compiled.get(id);
      if (!c) continue;
      policies.set(id, c.policy);
      for (const s of c.sets) neededSets.set(s.id, s);
    }
    const ipSets = new Map<string, IpSet>();
    for (const def of [...neededSets.values()].sort((a, b) => byText(a.id, b.id))) {
      let members = this.#setMembers.get(def.id);
      if (!members) {
        members = new Map();
        for (const m of this.#members.values()) if (setMatches(def, m)) members.set(m.key, m.nets);
        this.#setMembers.set(def.id, members);
        this.#setDefs.set(def.id, def);
      }
      const v4: string[] = [];
      const v6: string[] = [];
      for (const nets of members.values()) for (const n of nets) (n.includes(':') ? v6 : v4).push(n);
      ipSets.set(def.id, { id: def.id, source: def.source, ipv4: uniqSorted(v4), ipv6: uniqSorted(v6) });
    }
    // Drop caches of sets nobody references any more.
    for (const id of [...this.#setMembers.keys()]) {
      if (!neededSets.has(id)) {
        this.#setMembers.delete(id);
        this.#setDefs.delete(id);
      }
    }

    // 5. Pools and Felix configuration.
    const pools: PoolInfo[] = [...(this.#byKind.get('ippools') ?? new Map<string, Resource>()).values()]
      .map((p) => {
        const s = p.spec as { cidr: string; natOutgoing?: boolean; disabled?: boolean; disableBGPExport?: boolean };
        const info: PoolInfo = { name: p.metadata.name, cidr: canonicalNet(s.cidr).cidr, natOutgoing: s.natOutgoing === true, disabled: s.disabled === true };
        return s.disableBGPExport === true ? { ...info, disableBGPExport: true as const } : info;
      })
      .sort((a, b) => byText(a.name, b.name));
    const felix = this.#felixConfig();
    const model: DataplaneModel = {
      hostname: this.#hostname,
      endpoints,
      policies,
      ipSets,
      pools,
      failsafeInbound: felix.inbound,
      failsafeOutbound: felix.outbound,
      problems: [...problems].map(([key, reason]) => ({ key, reason })).sort((a, b) => byText(a.key, b.key) || byText(a.reason, b.reason)),
    };
    this.#dirtyEndpoints = new Set();
    this.#policiesDirty = false;
    this.#labelsDirty = false;
    this.#setsDirty = false;
    this.#otherDirty = false;
    this.#last = model;
    return model;
  }

  #felixConfig(): { inbound: Array<{ protocol: 'tcp' | 'udp'; port: number }>; outbound: Array<{ protocol: 'tcp' | 'udp'; port: number }> } {
    const all = this.#byKind.get('felixconfigurations') ?? new Map<string, Resource>();
    const pick = (field: string) => {
      for (const name of [`node.${this.#hostname}`, 'default']) {
        const r = [...all.values()].find((x) => x.metadata.name === name);
        const v = (r?.spec as Record<string, unknown> | undefined)?.[field];
        if (Array.isArray(v)) {
          return (v as Array<{ protocol?: string; port?: number }>)
            .filter((p) => typeof p.port === 'number' && (p.protocol ?? 'TCP').toUpperCase() !== 'SCTP')
            .map((p) => ({ protocol: ((p.protocol ?? 'TCP').toLowerCase() === 'udp' ? 'udp' : 'tcp') as 'tcp' | 'udp', port: p.port! }));
        }
      }
      return undefined;
    };
    return { inbound: pick('failsafeInboundHostPorts') ?? [...DEFAULT_FAILSAFE_IN], outbound: pick('failsafeOutboundHostPorts') ?? [...DEFAULT_FAILSAFE_OUT] };
  }
}

function keyOfCompiled(id: string, policies: Map<string, PolicyRec>, profiles: Map<string, Resource>): string | undefined {
  for (const p of policies.values()) if (p.id === id) return p.key;
  for (const [key, r] of profiles) if (`pro/${r.metadata.name}` === id) return key;
  return undefined;
}

function policyRec(key: string, r: Resource): PolicyRec {
  const spec = (r.spec ?? {}) as {
    tier?: string;
    order?: number;
    selector?: string;
    namespaceSelector?: string;
    serviceAccountSelector?: string;
    types?: string[];
    ingress?: Rule[];
    egress?: Rule[];
  };
  const kind = r.kind as 'GlobalNetworkPolicy' | 'NetworkPolicy';
  const namespace = kind === 'NetworkPolicy' ? (r.metadata.namespace ?? 'default') : undefined;
  const types = new Set<Direction>();
  for (const t of spec.types ?? []) types.add(t === 'Egress' ? 'egress' : 'ingress');
  return {
    key,
    id: kind === 'NetworkPolicy' ? `np/${namespace}/${r.metadata.name}` : `gnp/${r.metadata.name}`,
    kind,
    name: r.metadata.name,
    namespace,
    tier: spec.tier ?? 'default',
    order: spec.order ?? Number.POSITIVE_INFINITY,
    selector: parseSelector(spec.selector ?? ''),
    namespaceSelector: spec.namespaceSelector ? parseSelector(spec.namespaceSelector) : undefined,
    serviceAccountSelector: spec.serviceAccountSelector ? parseSelector(spec.serviceAccountSelector) : undefined,
    types,
    ingress: spec.ingress ?? [],
    egress: spec.egress ?? [],
  };
}

/**
 * What a serviceAccountSelector sees of a workload's service account: its name as
 * `projectcalico.org/name`, and the labels of Calico's `ksa.<namespace>.<name>` profile (whose
 * labelsToApply carry them prefixed `pcsa.`).
 */
function serviceAccountLabels(namespace: string, name: string, profileByName: Map<string, Resource>): Record<string, string> {
  const labels: Record<string, string> = {};
  const apply = (profileByName.get(`ksa.${namespace}.${name}`)?.spec as { labelsToApply?: Record<string, string> } | undefined)?.labelsToApply ?? {};
  for (const [k, v] of Object.entries(apply)) if (k.startsWith('pcsa.')) labels[k.slice('pcsa.'.length)] = v;
  labels[NAMESPACE_NAME_LABEL] = name;
  return labels;
}

function effectiveLabels(r: Resource, type: 'workload' | 'host', profileByName: Map<string, Resource>): Record<string, string> {
  const labels: Record<string, string> = {};
  const spec = (r.spec ?? {}) as { profiles?: string[]; orchestrator?: string };
  for (const name of spec.profiles ?? []) {
    const apply = (profileByName.get(name)?.spec as { labelsToApply?: Record<string, string> } | undefined)?.labelsToApply;
    if (apply) Object.assign(labels, apply);
  }
  Object.assign(labels, r.metadata.labels ?? {});
  if (type === 'workload') {
    labels[NAMESPACE_LABEL] = r.metadata.namespace ?? 'default';
    if (spec.orchestrator) labels[ORCHESTRATOR_LABEL] = spec.orchestrator;
  }
  return labels;
}

function endpointNets(ep: EndpointRec): string[] {
  const spec = (ep.resource.spec ?? {}) as { ipNetworks?: string[]; expectedIPs?: string[] };
  const raw = ep.type === 'workload' ? (spec.ipNetworks ?? []) : (spec.expectedIPs ?? []);
  const out: string[] = [];
  for (const n of raw) {
    try {
      out.push(canonicalNet(n).cidr);
    } catch {
      // validation already rejected bad addresses; nothing to add
    }
  }
  return uniqSorted(out);
}

function memberOfEndpoint(ep: EndpointRec, profileByName: Map<string, Resource>): Member {
  const namespace = ep.type === 'workload' ? (ep.resource.metadata.namespace ?? 'default') : undefined;
  const sa = ep.type === 'workload' ? (ep.resource.spec as { serviceAccountName?: string } | undefined)?.serviceAccountName : undefined;
  return {
    key: ep.key,
    labels: effectiveLabels(ep.resource, ep.type, profileByName),
    namespaced: ep.type === 'workload',
    namespace,
    nets: endpointNets(ep),
    ...(sa ? { serviceAccount: { name: sa, labels: serviceAccountLabels(namespace!, sa, profileByName) } } : {}),
  };
}

function memberOfNetset(key: string, r: Resource, namespaced: boolean): Member {
  const nets: string[] = [];
  for (const n of ((r.spec ?? {}) as { nets?: string[] }).nets ?? []) {
    try {
      nets.push(canonicalNet(n).cidr);
    } catch {
      // rejected by validation
    }
  }
  const labels: Record<string, string> = { ...(r.metadata.labels ?? {}) };
  if (namespaced) labels[NAMESPACE_LABEL] = r.metadata.namespace ?? 'default';
  return { key, labels, namespaced, namespace: namespaced ? (r.metadata.namespace ?? 'default') : undefined, nets: uniqSorted(nets) };
}

function setMatches(def: SetDef, m: Member): boolean {
  if (def.namespace !== undefined && m.namespace !== def.namespace) return false;
  if (def.namespaceSelector) {
    if (m.namespace === undefined) return false;
    if (!def.namespaceSelector.evaluate({ [NAMESPACE_NAME_LABEL]: m.namespace }, { namespaced: false })) return false;
  }
  if (def.serviceAccounts) {
    const sa = m.serviceAccount;
    if (!sa) return false;
    if (def.serviceAccounts.names && !def.serviceAccounts.names.has(sa.name)) return false;
    if (def.serviceAccounts.selector && !def.serviceAccounts.selector.evaluate(sa.labels, { namespaced: false })) return false;
  }
  return def.selector.evaluate(m.labels, { namespaced: m.namespaced });
}

function setId(canonical: string): string {
  const h = createHash('sha256').update(canonical).digest();
  // 12 characters of lower-case base32: short enough for kernel set names, collision-safe here.
  const alphabet = 'abcdefghijklmnopqrstuvwxyz234567';
  let out = '';
  let bits = 0;
  let value = 0;
  for (const byte of h) {
    value = (value << 8) | byte;
    bits += 8;
    while (bits >= 5 && out.length < 12) {
      out += alphabet[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
    if (out.length >= 12) break;
  }
  return `s:${out}`;
}

function makeSetDef(selectorText: string, policyNamespace: string | undefined, namespaceSelectorText: string | undefined, serviceAccounts?: ServiceAccountMatch): SetDef {
  const selector = parseSelector(selectorText);
  const nsSel = namespaceSelectorText !== undefined && namespaceSelectorText !== '' ? parseSelector(namespaceSelectorText) : undefined;
  // A namespaced policy's selector stays in its namespace unless it says global() or gives a
  // namespaceSelector (Calico's rule).
  const namespace = policyNamespace !== undefined && !nsSel && !selector.usesGlobal ? policyNamespace : undefined;
  const scope = nsSel ? `nsSel:${nsSel.text}` : namespace !== undefined ? `ns:${namespace}` : 'global';
  const names = serviceAccounts?.names && serviceAccounts.names.length > 0 ? uniqSorted(serviceAccounts.names) : undefined;
  const saSelector = serviceAccounts?.selector ? parseSelector(serviceAccounts.selector) : undefined;
  const saText = serviceAccounts ? ` service accounts${names ? ` ${names.join(',')}` : ''}${saSelector ? ` matching ${saSelector.text}` : ''}` : '';
  const canonical = `${scope}|${selector.text}${serviceAccounts ? `|sa:${names?.join(',') ?? '*'}|${saSelector?.text ?? ''}` : ''}`;
  const source = `${selector.text}${saText}${nsSel ? ` (namespaces: ${nsSel.text})` : namespace !== undefined ? ` (namespace ${namespace})` : ''}`;
  return {
    id: setId(canonical),
    source,
    selector,
    namespace,
    namespaceSelector: nsSel,
    ...(serviceAccounts ? { serviceAccounts: { ...(names ? { names: new Set(names) } : {}), ...(saSelector ? { selector: saSelector } : {}) } } : {}),
  };
}

const PROTOCOLS: Record<string, ProtocolMatch> = { TCP: 'tcp', UDP: 'udp', ICMP: 'icmp', ICMPV6: 'icmpv6', SCTP: 'sctp', UDPLITE: 'udplite' };

function protocolOf(p: string | number | undefined): ProtocolMatch | undefined {
  if (p === undefined) return undefined;
  if (typeof p === 'number') return p;
  if (/^\d+$/.test(p)) return Number(p);
  const named = PROTOCOLS[p.toUpperCase()];
  if (named === undefined) throw new Error(`unknown protocol '${p}'`);
  return named;
}

function portsOf(ports: ReadonlyArray<number | string> | undefined, problem: (why: string) => void): PortRange[] | undefined {
  if (!ports || ports.length === 0) return undefined;
  const out: PortRange[] = [];
  for (const p of ports) {
    if (typeof p === 'number') out.push({ first: p, last: p });
    else if (/^\d+$/.test(p)) out.push({ first: Number(p), last: Number(p) });
    else if (/^\d+:\d+$/.test(p)) {
      const [a, b] = p.split(':').map(Number) as [number, number];
      out.push({ first: a, last: b });
    } else problem(`named port '${p}' is not supported; the rule never matches`);
  }
  return out.sort((a, b) => a.first - b.first || a.last - b.last);
}

function compileRules(rules: readonly Rule[], policyNamespace: string | undefined, sets: Map<string, SetDef>, problems: string[], where: string): CompiledRule[] {
  return rules.map((rule, index) => {
    let never = false;
    const problem = (why: string) => {
      never = true;
      problems.push(`${where} rule ${index}: ${why}`);
    };
    const match: Record<string, unknown> = {};
    if (rule.ipVersion) match.ipVersion = rule.ipVersion;
    try {
      const proto = protocolOf(rule.protocol);
      if (proto !== undefined) match.protocol = proto;
      const notProto = protocolOf(rule.notProtocol);
      if (notProto !== undefined) match.notProtocol = notProto;
    } catch (err) {
      problem(errorMessage(err));
    }
    if (match.ipVersion === undefined && match.protocol === 'icmp') match.ipVersion = 4;
    if (match.ipVersion === undefined && match.protocol === 'icmpv6') match.ipVersion = 6;
    if (rule.icmp && (rule.icmp.type !== undefined || rule.icmp.code !== undefined)) match.icmp = { ...rule.icmp };
    if (rule.notICMP && (rule.notICMP.type !== undefined || rule.notICMP.code !== undefined)) match.notIcmp = { ...rule.notICMP };
    const side = (e: EntityRule | undefined, pfx: 'src' | 'dst') => {
      if (!e) return;
      const nets = (xs: string[] | undefined) => (xs && xs.length > 0 ? uniqSorted(xs.map((n) => canonicalNet(n).cidr)) : undefined);
      const n = nets(e.nets);
      if (n) match[`${pfx}Nets`] = n;
      const nn = nets(e.notNets);
      if (nn) match[`not${pfx === 'src' ? 'Src' : 'Dst'}Nets`] = nn;
      // serviceAccounts narrows the entity's selector: one set of the endpoints both select.
      if (e.selector || e.namespaceSelector || e.serviceAccounts) {
        const def = makeSetDef(e.selector ?? 'all()', policyNamespace, e.namespaceSelector, e.serviceAccounts);
        sets.set(def.id, def);
        match[`${pfx}IpSets`] = [def.id];
      }
      if (e.notSelector) {
        const def = makeSetDef(e.notSelector, policyNamespace, e.namespaceSelector);
        sets.set(def.id, def);
        match[`not${pfx === 'src' ? 'Src' : 'Dst'}IpSets`] = [def.id];
      }
      const ports = portsOf(e.ports, problem);
      if (ports) match[`${pfx}Ports`] = ports;
      const notPorts = portsOf(e.notPorts, problem);
      if (notPorts) match[`not${pfx === 'src' ? 'Src' : 'Dst'}Ports`] = notPorts;
      if (e.services) problem('services matches are not supported; the rule never matches');
    };
    side(rule.source, 'src');
    side(rule.destination, 'dst');
    if (rule.http) problem('http matches need an L7 proxy, which routecat does not have; the rule never matches');
    const compiled: CompiledRule = { action: rule.action.toLowerCase() as CompiledRule['action'], match: match as RuleMatch, index };
    return never ? { ...compiled, never: true } : compiled;
  });
}

function compilePolicy(p: PolicyRec): CompiledOut {
  const sets = new Map<string, SetDef>();
  const problems: string[] = [];
  const where = p.kind === 'NetworkPolicy' ? `NetworkPolicy ${p.namespace}/${p.name}` : `GlobalNetworkPolicy ${p.name}`;
  const policy: CompiledPolicy = {
    id: p.id,
    kind: p.kind,
    name: p.name,
    ...(p.namespace !== undefined ? { namespace: p.namespace } : {}),
    tier: p.tier,
    ingress: compileRules(p.ingress, p.namespace, sets, problems, `${where} ingress`),
    egress: compileRules(p.egress, p.namespace, sets, problems, `${where} egress`),
  };
  return { from: p, policy, sets: [...sets.values()], problems };
}

function compileProfile(r: Resource): CompiledOut {
  const sets = new Map<string, SetDef>();
  const problems: string[] = [];
  const spec = (r.spec ?? {}) as { ingress?: Rule[]; egress?: Rule[] };
  const policy: CompiledPolicy = {
    id: `pro/${r.metadata.name}`,
    kind: 'Profile',
    name: r.metadata.name,
    ingress: compileRules(spec.ingress ?? [], undefined, sets, problems, `Profile ${r.metadata.name} ingress`),
    egress: compileRules(spec.egress ?? [], undefined, sets, problems, `Profile ${r.metadata.name} egress`),
  };
  return { from: r, policy, sets: [...sets.values()], problems };
}

/** Deep equality of plain data (objects, arrays, primitives), as the model is made of. */
export function sameData(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
  if (Array.isArray(a)) {
    if (!Array.isArray(b) || a.length !== b.length) return false;
    for (let i = 0; i < a.length; i++) if (!sameData(a[i], b[i])) return false;
    return true;
  }
  if (Array.isArray(b)) return false;
  const ka = Object.keys(a);
  if (ka.length !== Object.keys(b).length) return false;
  for (const k of ka) {
    if (!Object.prototype.hasOwnProperty.call(b, k)) return false;
    if (!sameData((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k])) return false;
  }
  return true;
}

function localEndpoint(
  ep: EndpointRec,
  profileByName: Map<string, Resource>,
  sortedPolicies: readonly PolicyRec[],
  passingTiers: ReadonlySet<string>,
  problem: (why: string) => void,
): LocalEndpoint | undefined {
  const r = ep.resource;
  const spec = (r.spec ?? {}) as { interfaceName?: string; mac?: string; profiles?: string[]; allowSpoofedSourcePrefixes?: string[] };
  const labels = effectiveLabels(r, ep.type, profileByName);
  const nets = endpointNets(ep);
  const namespace = ep.type === 'workload' ? (r.metadata.namespace ?? 'default') : undefined;
  const iface = spec.interfaceName ?? '';
  if (ep.type === 'workload' && !iface) {
    problem('WorkloadEndpoint has no interfaceName; skipped');
    return undefined;
  }
  const serviceAccount = ep.type === 'workload' ? (r.spec as { serviceAccountName?: string } | undefined)?.serviceAccountName : undefined;
  const saLabels = serviceAccount ? serviceAccountLabels(namespace!, serviceAccount, profileByName) : undefined;
  const selected = (p: PolicyRec): boolean => {
    if (p.kind === 'NetworkPolicy') return ep.type === 'workload' && p.namespace === namespace && p.selector.evaluate(labels, { namespaced: true });
    if (p.namespaceSelector) {
      if (ep.type !== 'workload') return false;
      if (!p.namespaceSelector.evaluate({ [NAMESPACE_NAME_LABEL]: namespace! }, { namespaced: false })) return false;
    }
    return p.selector.evaluate(labels, { namespaced: ep.type === 'workload' });
  };
  // A serviceAccountSelector narrows the policy to workloads with a service account it selects.
  const applies = (p: PolicyRec): boolean => selected(p) && (!p.serviceAccountSelector || (saLabels !== undefined && p.serviceAccountSelector.evaluate(saLabels, { namespaced: false })));
  const tiersFor = (dir: Direction): TierRef[] => {
    const out: TierRef[] = [];
    for (const p of sortedPolicies) {
      if (!p.types.has(dir) || !applies(p)) continue;
      const last = out[out.length - 1];
      if (last && last.tier === p.tier) (last.policies as string[]).push(p.id);
      else out.push(passingTiers.has(p.tier) ? { tier: p.tier, policies: [p.id], passAtEnd: true } : { tier: p.tier, policies: [p.id] });
    }
    return out;
  };
  const profiles = (spec.profiles ?? []).filter((n) => profileByName.has(n)).map((n) => `pro/${n}`);
  const ingress: EndpointPolicies = { tiers: tiersFor('ingress'), profiles };
  const egress: EndpointPolicies = { tiers: tiersFor('egress'), profiles };
  const allowed: string[] = [];
  for (const n of spec.allowSpoofedSourcePrefixes ?? []) {
    try {
      allowed.push(canonicalNet(n).cidr);
    } catch {
      // rejected by validation
    }
  }
  return {
    id: ep.type === 'workload' ? `wep/${namespace}/${r.metadata.name}` : `hep/${r.metadata.name}`,
    type: ep.type,
    name: r.metadata.name,
    ...(namespace !== undefined ? { namespace } : {}),
    iface,
    ...(spec.mac ? { mac: spec.mac.toLowerCase() } : {}),
    ipv4Nets: nets.filter((n) => !n.includes(':')),
    ipv6Nets: nets.filter((n) => n.includes(':')),
    allowSpoofedSourcePrefixes: uniqSorted(allowed),
    labels,
    ingress,
    egress,
  };
}
