/**
 * `routecat ctl explain`: the verdict for a flow and the tiers, policies and rules that decide
 * it, at both ends (egress at the sender's host, ingress at the receiver's), computed by the same
 * calculation the agents run, from the datastore's current resources.
 */
import ipaddr from 'ipaddr.js';
import { Calculator } from '../agent/calculation.ts';
import type { DataplaneModel, LocalEndpoint, PacketSpec, ProtocolMatch } from '../agent/model.ts';
import { parseResourceKey } from '../datastore/keys.ts';
import { UsageError } from '../errors.ts';
import { evaluateEndpoint, type EvalStep } from './evaluate.ts';

export interface ExplainRequest {
  readonly src: string;
  readonly dst: string;
  readonly protocol: ProtocolMatch;
  readonly dstPort?: number;
  readonly srcPort?: number;
}

export interface SideResult {
  readonly endpoint: string;
  readonly node: string;
  readonly verdict: 'allow' | 'deny';
  readonly steps: readonly EvalStep[];
}

export interface Explanation {
  readonly verdict: 'allow' | 'deny';
  readonly packet: PacketSpec;
  readonly egress?: SideResult;
  readonly ingress?: SideResult;
  /** Bad resources that were skipped while computing this (key and reason). */
  readonly problems: ReadonlyArray<{ key: string; reason: string }>;
}

interface Located {
  readonly node: string;
  readonly endpoint: LocalEndpoint;
}

function isIp(s: string): boolean {
  return ipaddr.isValid(s);
}

export function explainFlow(resources: ReadonlyArray<{ key: string; value: string }>, req: ExplainRequest): Explanation {
  // Which nodes have endpoints, so each side is computed as that node's agent computes it.
  const nodes = new Set<string>();
  for (const { key, value } of resources) {
    const k = parseResourceKey(key);
    if (!k || (k.kind.kind !== 'WorkloadEndpoint' && k.kind.kind !== 'HostEndpoint')) continue;
    try {
      const node = (JSON.parse(value) as { spec?: { node?: string } }).spec?.node;
      if (node) nodes.add(node);
    } catch {
      // reported by the calculation
    }
  }
  const models = new Map<string, DataplaneModel>();
  for (const node of [...nodes].sort()) {
    const calc = new Calculator({ hostname: node });
    for (const r of resources) calc.onUpdate(r);
    models.set(node, calc.model());
  }
  const all = [...models.values()].flatMap((m) => [...m.endpoints.values()].map((e) => ({ node: m.hostname, endpoint: e })));
  const locate = (ref: string): Located | undefined => {
    if (isIp(ref)) {
      const ip = ipaddr.parse(ref);
      return all.find((x) =>
        [...x.endpoint.ipv4Nets, ...x.endpoint.ipv6Nets].some((n) => {
          const [net, len] = ipaddr.parseCIDR(n);
          return net.kind() === ip.kind() && ip.match(net, len);
        }),
      );
    }
    const [ns, name] = ref.includes('/') ? (ref.split('/', 2) as [string, string]) : ['default', ref];
    return all.find((x) => x.endpoint.type === 'workload' && x.endpoint.namespace === ns && x.endpoint.name === name) ?? (ref.includes('/') ? undefined : all.find((x) => x.endpoint.type === 'host' && x.endpoint.name === ref));
  };
  const src = locate(req.src);
  const dst = locate(req.dst);
  if (!src && !isIp(req.src)) throw new UsageError(`source '${req.src}' is neither an IP address nor a known endpoint (NAMESPACE/NAME or host endpoint name)`);
  if (!dst && !isIp(req.dst)) throw new UsageError(`destination '${req.dst}' is neither an IP address nor a known endpoint (NAMESPACE/NAME or host endpoint name)`);
  // Pick addresses of one family for both ends.
  const addrOf = (ref: string, at: Located | undefined, family: 4 | 6 | undefined): string | undefined => {
    if (isIp(ref)) return ipaddr.parse(ref).toString();
    const nets = family === 6 ? at!.endpoint.ipv6Nets : family === 4 ? at!.endpoint.ipv4Nets : [...at!.endpoint.ipv4Nets, ...at!.endpoint.ipv6Nets];
    return nets[0]?.split('/')[0];
  };
  const famOf = (ip: string | undefined): 4 | 6 | undefined => (ip === undefined ? undefined : ip.includes(':') ? 6 : 4);
  const fixed = isIp(req.src) ? famOf(req.src) : isIp(req.dst) ? famOf(req.dst) : src!.endpoint.ipv4Nets.length > 0 && dst!.endpoint.ipv4Nets.length > 0 ? 4 : 6;
  const srcIp = addrOf(req.src, src, fixed);
  const dstIp = addrOf(req.dst, dst, fixed);
  if (!srcIp || !dstIp) throw new UsageError(`'${req.src}' and '${req.dst}' have no addresses of the same IP version`);
  const packet: PacketSpec = { src: srcIp, dst: dstIp, protocol: req.protocol, ...(req.dstPort !== undefined ? { dstPort: req.dstPort } : {}), ...(req.srcPort !== undefined ? { srcPort: req.srcPort } : {}) };
  const side = (at: Located | undefined, dir: 'egress' | 'ingress'): SideResult | undefined => {
    if (!at) return undefined;
    const r = evaluateEndpoint(models.get(at.node)!, at.endpoint.id, dir, packet);
    return { endpoint: at.endpoint.id, node: at.node, verdict: r.verdict, steps: r.steps };
  };
  const egress = side(src, 'egress');
  const ingress = side(dst, 'ingress');
  const verdict = (egress?.verdict ?? 'allow') === 'allow' && (ingress?.verdict ?? 'allow') === 'allow' ? 'allow' : 'deny';
  const problems = new Map<string, string>();
  for (const m of models.values()) for (const p of m.problems) problems.set(p.key, p.reason);
  return { verdict, packet, egress, ingress, problems: [...problems].map(([key, reason]) => ({ key, reason })) };
}

function formatSide(label: string, s: SideResult | undefined, other: string): string[] {
  if (!s) return [`  ${label}: ${other} is not a routecat endpoint: no policy there`];
  const lines = [`  ${label} at node ${s.node}, endpoint ${s.endpoint}: ${s.verdict.toUpperCase()}`];
  for (const st of s.steps) {
    const where = [st.tier ? `tier ${st.tier}` : st.policy?.startsWith('pro/') ? 'profile' : undefined, st.policy, st.ruleIndex !== undefined ? `rule ${st.ruleIndex}` : undefined].filter(Boolean).join(' / ');
    lines.push(`    ${where ? `${where}: ` : ''}${st.action}${st.reason && !st.reason.startsWith('rule ') ? ` (${st.reason})` : ''}`);
  }
  return lines;
}

export function formatExplanation(e: Explanation): string {
  const p = e.packet;
  const ports = (ip: string, port?: number) => (port === undefined ? ip : ip.includes(':') ? `[${ip}]:${port}` : `${ip}:${port}`);
  const lines = [`${e.verdict.toUpperCase()}  ${String(p.protocol)} ${ports(p.src, p.srcPort)} -> ${ports(p.dst, p.dstPort)}`];
  lines.push(...formatSide('egress', e.egress, p.src));
  lines.push(...formatSide('ingress', e.ingress, p.dst));
  if (e.problems.length > 0) {
    lines.push(`  (skipped ${e.problems.length} bad resource(s) in the datastore:`);
    for (const pr of e.problems.slice(0, 10)) lines.push(`    ${pr.key}: ${pr.reason}`);
    lines.push('  )');
  }
  return lines.join('\n');
}
