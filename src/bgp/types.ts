/**
 * BGP-4 messages and path attributes as plain data: the contract between the codec
 * (src/bgp/codec/), the session (src/bgp/session/), and the RIB (src/bgp/rib/). Imports nothing.
 * Prefixes are canonical CIDR strings ("10.65.1.2/32", "fd00::/64"); addresses are strings.
 */

export type Afi = 1 | 2; // IPv4, IPv6
export type Safi = 1; // unicast
export type AfiSafi = 'ipv4-unicast' | 'ipv6-unicast';

export const MessageType = { OPEN: 1, UPDATE: 2, NOTIFICATION: 3, KEEPALIVE: 4, ROUTE_REFRESH: 5 } as const;
export type MessageType = (typeof MessageType)[keyof typeof MessageType];

export interface Capabilities {
  /** Multiprotocol (RFC 4760) address families announced. */
  readonly multiprotocol: readonly AfiSafi[];
  /** 4-octet AS (RFC 6793): our real AS number. */
  readonly as4?: number;
  readonly routeRefresh?: boolean;
  readonly enhancedRouteRefresh?: boolean;
  /** Graceful restart (RFC 4724). */
  readonly gracefulRestart?: {
    readonly restartTimeSec: number;
    /** R bit: the sender has restarted. */
    readonly restarting: boolean;
    readonly families: ReadonlyArray<{ readonly afiSafi: AfiSafi; readonly forwardingPreserved: boolean }>;
  };
  /** ADD-PATH (RFC 7911) per family: what the sender can do. */
  readonly addPath?: ReadonlyArray<{ readonly afiSafi: AfiSafi; readonly send: boolean; readonly receive: boolean }>;
  /** Capabilities we do not understand, kept verbatim. */
  readonly unknown?: ReadonlyArray<{ readonly code: number; readonly value: Uint8Array }>;
}

export interface OpenMessage {
  readonly type: 'open';
  readonly version: number; // 4
  /** The 2-octet My AS field (AS_TRANS 23456 when the real AS is > 65535). */
  readonly myAs: number;
  readonly holdTime: number;
  readonly bgpId: string; // dotted quad
  readonly capabilities: Capabilities;
}

export interface KeepaliveMessage {
  readonly type: 'keepalive';
}

export interface NotificationMessage {
  readonly type: 'notification';
  readonly code: number;
  readonly subcode: number;
  readonly data: Uint8Array;
  /** RFC 9003 shutdown communication (Cease/2 and Cease/4), decoded from data. */
  readonly shutdownText?: string;
}

export interface RouteRefreshMessage {
  readonly type: 'route-refresh';
  readonly afiSafi: AfiSafi;
  /** RFC 7313 subtype: 0 normal request, 1 BoRR, 2 EoRR. */
  readonly subtype: number;
  /**
   * Set by the decoder when the request names an AFI/SAFI routecat does not support: `afiSafi`
   * is then meaningless and the message MUST be ignored (RFC 2918 section 4).
   */
  readonly unsupportedFamily?: { readonly afi: number; readonly safi: number };
}

export type Origin = 0 | 1 | 2; // IGP, EGP, INCOMPLETE

export interface AsPathSegment {
  readonly type: 'set' | 'sequence' | 'confed-sequence' | 'confed-set';
  readonly asns: readonly number[];
}

/** Path attributes, decoded. Every field optional; the codec fills what the UPDATE carried. */
export interface PathAttributes {
  readonly origin?: Origin;
  /** With 4-octet ASNs (AS4_PATH already merged in when the session is 2-octet). */
  readonly asPath?: readonly AsPathSegment[];
  readonly nextHop?: string; // IPv4 NEXT_HOP
  readonly med?: number;
  readonly localPref?: number;
  readonly atomicAggregate?: boolean;
  readonly aggregator?: { readonly asn: number; readonly address: string };
  /** RFC 1997, as 32-bit numbers. */
  readonly communities?: readonly number[];
  /** RFC 8092, as [global admin, local data 1, local data 2]. */
  readonly largeCommunities?: ReadonlyArray<readonly [number, number, number]>;
  readonly originatorId?: string;
  readonly clusterList?: readonly string[];
  /** Unknown optional transitive attributes, passed on with the partial bit set. */
  readonly unknown?: ReadonlyArray<{ readonly flags: number; readonly code: number; readonly value: Uint8Array }>;
}

export interface Nlri {
  readonly prefix: string;
  /** ADD-PATH path identifier when negotiated for this family. */
  readonly pathId?: number;
}

export interface UpdateMessage {
  readonly type: 'update';
  /** IPv4 withdrawn routes (classic field). */
  readonly withdrawn: readonly Nlri[];
  readonly attributes: PathAttributes;
  /** IPv4 NLRI (classic field). */
  readonly nlri: readonly Nlri[];
  /** MP_REACH_NLRI (RFC 4760): IPv6 with its next hop(s) per RFC 2545. */
  readonly mpReach?: { readonly afiSafi: AfiSafi; readonly nextHop: string; readonly linkLocalNextHop?: string; readonly nlri: readonly Nlri[] };
  readonly mpUnreach?: { readonly afiSafi: AfiSafi; readonly withdrawn: readonly Nlri[] };
  /**
   * RFC 7606 outcome when decoding found a problem that does not reset the session:
   * 'treat-as-withdraw' (every NLRI in the message is to be withdrawn) or 'attribute-discard'
   * (the named attribute was dropped). The session logs `errors`.
   */
  readonly handling?: 'treat-as-withdraw' | 'attribute-discard';
  readonly errors?: readonly string[];
}

export type BgpMessage = OpenMessage | UpdateMessage | NotificationMessage | KeepaliveMessage | RouteRefreshMessage;

/** What the codec needs to know about the session (negotiated capabilities). */
export interface CodecOptions {
  /** Both sides announced 4-octet AS: AS_PATH carries 4-octet ASNs. */
  readonly as4: boolean;
  /** Families for which ADD-PATH path ids are present in received (decode) / sent (encode) NLRI. */
  readonly addPath?: ReadonlySet<AfiSafi>;
  /** Whether this is an iBGP session (affects which RFC 7606 handling applies to some attributes). */
  readonly ibgp?: boolean;
  /** RFC 8654 extended messages (not negotiated by routecat: 4096 max). */
  readonly maxMessageSize?: number;
}
