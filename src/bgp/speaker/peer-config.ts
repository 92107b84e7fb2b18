/**
 * Pure helpers that turn SpeakerConfig / SpeakerPeerConfig into what the session, RIB and update
 * groups need: the capabilities we announce, the RIB's view of a peer, the update-group policy,
 * and the "did this peer's configuration change" test used by setPeers(). No I/O.
 */
import type { SpeakerConfig, SpeakerPeerConfig } from '../speaker-api.ts';
import type { AfiSafi, Capabilities, PathAttributes } from '../types.ts';
import type { PeerInfo } from '../rib/decision.ts';
import type { GroupKind, GroupPolicy } from '../rib/update-groups.ts';

export const FAMILIES: readonly AfiSafi[] = ['ipv4-unicast', 'ipv6-unicast'];
export const DEFAULT_RESTART_TIME_SEC = 120;
export const DEFAULT_MAX_RESTART_TIME_SEC = 120;
/** The GR capability's restart time is 12 bits. */
const MAX_GR_TIME = 4095;

export function capabilitiesOf(c: SpeakerConfig): Capabilities {
  const restartTimeSec = Math.max(0, Math.min(MAX_GR_TIME, Math.round(c.restartTimeSec ?? DEFAULT_RESTART_TIME_SEC)));
  const restarting = c.restarting === true;
  return {
    multiprotocol: [...FAMILIES],
    as4: c.asn,
    routeRefresh: true,
    enhancedRouteRefresh: true,
    gracefulRestart: { restartTimeSec, restarting, families: FAMILIES.map((afiSafi) => ({ afiSafi, forwardingPreserved: restarting })) },
  };
}

/** We reflect to this peer as a client only when we are a reflector (clusterId set) and it is iBGP. */
export function isReflectorClient(c: SpeakerConfig, p: SpeakerPeerConfig): boolean {
  return c.clusterId !== undefined && p.asn === c.asn && p.routeReflectorClient === true;
}

export function ribPeerInfo(c: SpeakerConfig, p: SpeakerPeerConfig, routerId: string): PeerInfo {
  return {
    peerId: p.id,
    address: p.address,
    asn: p.asn,
    ibgp: p.asn === c.asn,
    routerId,
    isReflectorClient: isReflectorClient(c, p),
  };
}

export function groupPolicyOf(c: SpeakerConfig, p: SpeakerPeerConfig): GroupPolicy {
  const kind: GroupKind = p.asn !== c.asn ? 'ebgp' : isReflectorClient(c, p) ? 'ibgp-client' : 'ibgp-nonclient';
  return {
    kind,
    nextHopSelf: { ...(c.nextHop.ipv4 ? { ipv4: c.nextHop.ipv4 } : {}), ...(c.nextHop.ipv6 ? { ipv6: c.nextHop.ipv6 } : {}) },
    ...(p.keepOriginalNextHop ? { keepOriginalNextHop: true } : {}),
  };
}

/** Attributes of every locally originated route: ORIGIN IGP, empty AS_PATH, our communities. */
export function localAttributes(c: SpeakerConfig): PathAttributes {
  return {
    origin: 0,
    asPath: [],
    ...(c.localCommunities && c.localCommunities.length > 0 ? { communities: [...c.localCommunities] } : {}),
    ...(c.localLargeCommunities && c.localLargeCommunities.length > 0 ? { largeCommunities: c.localLargeCommunities.map((l) => [l[0], l[1], l[2]] as const) } : {}),
  };
}

const PEER_FIELDS = [
  'address',
  'port',
  'asn',
  'kind',
  'passive',
  'localAddress',
  'routeReflectorClient',
  'keepOriginalNextHop',
  'maxRestartTimeSec',
  'holdTimeSec',
  'source',
] as const satisfies ReadonlyArray<keyof SpeakerPeerConfig>;

/** Field by field (property order does not matter). */
export function samePeerConfig(a: SpeakerPeerConfig, b: SpeakerPeerConfig): boolean {
  for (const k of PEER_FIELDS) if (a[k] !== b[k]) return false;
  return a.id === b.id;
}

/** The parts of SpeakerConfig whose change means every session is reset and the RIB rebuilt. */
export function identityChanged(a: SpeakerConfig, b: SpeakerConfig): boolean {
  return a.asn !== b.asn || a.routerId !== b.routerId || a.clusterId !== b.clusterId || (a.maxPaths ?? 8) !== (b.maxPaths ?? 8);
}

export function listenChanged(a: SpeakerConfig, b: SpeakerConfig): boolean {
  if (a.listen === false || b.listen === false) return a.listen !== b.listen;
  return a.listen.port !== b.listen.port || [...a.listen.addresses].sort().join() !== [...b.listen.addresses].sort().join();
}

export function nextHopChanged(a: SpeakerConfig, b: SpeakerConfig): boolean {
  return a.nextHop.ipv4 !== b.nextHop.ipv4 || a.nextHop.ipv6 !== b.nextHop.ipv6;
}

export function localAttributesChanged(a: SpeakerConfig, b: SpeakerConfig): boolean {
  return JSON.stringify(localAttributes(a)) !== JSON.stringify(localAttributes(b));
}
