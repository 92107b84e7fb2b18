/**
 * A reference evaluator of the compiled model: what verdict Calico's semantics give one packet
 * at one endpoint in one direction, and why. Written for clarity, not speed, and independent of
 * any kernel backend — `routecat ctl explain` uses it, and tests compare it with real packets.
 */
import ipaddr from 'ipaddr.js';
import type { CompiledPolicy, CompiledRule, DataplaneModel, Direction, PacketSpec, PortRange, ProtocolMatch } from '../agent/model.ts';

export interface EvalStep {
  readonly tier?: string;
  readonly policy?: string;
  readonly ruleIndex?: number;
  /** allow | deny | pass | log | next (no rule matched, on to the next policy) | end-of-tier | default-deny */
  readonly action: string;
  readonly reason: string;
}

export interface EvalResult {
  readonly verdict: 'allow' | 'deny';
  readonly steps: readonly EvalStep[];
}

const PROTO_NUMBERS: Record<string, number> = { icmp: 1, tcp: 6, udp: 17, icmpv6: 58, sctp: 132, udplite: 136 };
const protoNumber = (p: ProtocolMatch): number => (typeof p === 'number' ? p : (PROTO_NUMBERS[p] ?? -1));
const hasPorts = (p: ProtocolMatch) => ['tcp', 'udp', 'sctp', 'udplite'].includes(typeof p === 'number' ? Object.keys(PROTO_NUMBERS).find((k) => PROTO_NUMBERS[k] === p) ?? '' : p);

function inNet(ip: string, cidr: string): boolean {
  try {
    const addr = ipaddr.parse(ip);
    const [net, len] = ipaddr.parseCIDR(cidr);
    if (addr.kind() !== net.kind()) return false;
    return addr.match(net, len);
  } catch {
    return false;
  }
}

const inAny = (ip: string, nets: readonly string[]) => nets.some((n) => inNet(ip, n));
const portIn = (port: number | undefined, ranges: readonly PortRange[]) => port !== undefined && ranges.some((r) => port >= r.first && port <= r.last);

export function ruleMatches(model: DataplaneModel, rule: CompiledRule, pkt: PacketSpec): boolean {
  if (rule.never) return false;
  const m = rule.match;
  const family = pkt.src.includes(':') ? 6 : 4;
  if (m.ipVersion !== undefined && m.ipVersion !== family) return false;
  if (m.protocol !== undefined && protoNumber(m.protocol) !== protoNumber(pkt.protocol)) return false;
  if (m.notProtocol !== undefined && protoNumber(m.notProtocol) === protoNumber(pkt.protocol)) return false;
  const setHas = (id: string, ip: string) => {
    const s = model.ipSets.get(id);
    return s !== undefined && inAny(ip, family === 4 ? s.ipv4 : s.ipv6);
  };
  if (m.srcNets && !inAny(pkt.src, m.srcNets)) return false;
  if (m.notSrcNets && inAny(pkt.src, m.notSrcNets)) return false;
  if (m.dstNets && !inAny(pkt.dst, m.dstNets)) return false;
  if (m.notDstNets && inAny(pkt.dst, m.notDstNets)) return false;
  if (m.srcIpSets && !m.srcIpSets.every((id) => setHas(id, pkt.src))) return false;
  if (m.notSrcIpSets && m.notSrcIpSets.some((id) => setHas(id, pkt.src))) return false;
  if (m.dstIpSets && !m.dstIpSets.every((id) => setHas(id, pkt.dst))) return false;
  if (m.notDstIpSets && m.notDstIpSets.some((id) => setHas(id, pkt.dst))) return false;
  const ported = hasPorts(pkt.protocol);
  if (m.srcPorts && !(ported && portIn(pkt.srcPort, m.srcPorts))) return false;
  if (m.notSrcPorts && ported && portIn(pkt.srcPort, m.notSrcPorts)) return false;
  if (m.dstPorts && !(ported && portIn(pkt.dstPort, m.dstPorts))) return false;
  if (m.notDstPorts && ported && portIn(pkt.dstPort, m.notDstPorts)) return false;
  if (m.icmp) {
    if (m.icmp.type !== undefined && m.icmp.type !== pkt.icmpType) return false;
    if (m.icmp.code !== undefined && m.icmp.code !== pkt.icmpCode) return false;
  }
  if (m.notIcmp) {
    const typeHit = m.notIcmp.type === undefined || m.notIcmp.type === pkt.icmpType;
    const codeHit = m.notIcmp.code === undefined || m.notIcmp.code === pkt.icmpCode;
    if (typeHit && codeHit) return false;
  }
  return true;
}

/** Runs one policy's rules: the first allow/deny/pass decides; log carries on. */
function runPolicy(model: DataplaneModel, p: CompiledPolicy, dir: Direction, pkt: PacketSpec, steps: EvalStep[], tier?: string): 'allow' | 'deny' | 'pass' | undefined {
  const rules = dir === 'ingress' ? p.ingress : p.egress;
  for (const r of rules) {
    if (!ruleMatches(model, r, pkt)) continue;
    steps.push({ tier, policy: p.id, ruleIndex: r.index, action: r.action, reason: `rule ${r.index} matched` });
    if (r.action !== 'log') return r.action;
  }
  steps.push({ tier, policy: p.id, action: 'next', reason: rules.length === 0 ? `no ${dir} rules` : 'no rule matched' });
  return undefined;
}

export function evaluateEndpoint(model: DataplaneModel, endpointId: string, dir: Direction, pkt: PacketSpec): EvalResult {
  const ep = model.endpoints.get(endpointId);
  if (!ep) return { verdict: 'deny', steps: [{ action: 'deny', reason: `endpoint ${endpointId} is not known on host ${model.hostname}` }] };
  const steps: EvalStep[] = [];
  const pols = dir === 'ingress' ? ep.ingress : ep.egress;
  for (const t of pols.tiers) {
    let decided: 'allow' | 'deny' | 'pass' | undefined;
    for (const id of t.policies) {
      const p = model.policies.get(id);
      if (!p) continue;
      decided = runPolicy(model, p, dir, pkt, steps, t.tier);
      if (decided) break;
    }
    if (decided === 'allow' || decided === 'deny') return { verdict: decided, steps };
    if (decided === 'pass') continue;
    if (t.passAtEnd) {
      steps.push({ tier: t.tier, action: 'end-of-tier', reason: `no policy in tier '${t.tier}' decided: the tier's defaultAction Pass sends the packet on` });
      continue;
    }
    steps.push({ tier: t.tier, action: 'end-of-tier', reason: `no policy in tier '${t.tier}' allowed or passed the packet: denied at the end of the tier` });
    return { verdict: 'deny', steps };
  }
  for (const id of pols.profiles) {
    const p = model.policies.get(id);
    if (!p) continue;
    const decided = runPolicy(model, p, dir, pkt, steps);
    if (decided === 'allow' || decided === 'deny') return { verdict: decided, steps };
  }
  steps.push({
    action: 'default-deny',
    reason: pols.tiers.length === 0 && pols.profiles.length === 0 ? 'no policy or profile applies: denied' : 'no profile allowed the packet: denied',
  });
  return { verdict: 'deny', steps };
}
