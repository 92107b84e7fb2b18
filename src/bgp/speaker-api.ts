/**
 * The contract between the BGP speaker (src/bgp/speaker/, sessions + RIB + update groups + the
 * listener), the kernel FIB writer (src/agent/kernel/fib.ts) and the roles that configure them
 * from the datastore (src/agent/bgp-config.ts, node-role.ts, src/reflector/). Types only.
 */
import type { AfiSafi } from './types.ts';

/** How a peer came to be configured; shown in `routecat status` like `calicoctl node status`. */
export type PeerKind = 'mesh' | 'global' | 'node-specific' | 'rr-client' | 'reflector';

export interface SpeakerPeerConfig {
  /** Stable key: `<address>` or `<address>:<port>` when the port is not 179. */
  readonly id: string;
  readonly address: string;
  /** Default 179. */
  readonly port?: number;
  readonly asn: number;
  readonly kind: PeerKind;
  /** Only accept this peer's connection, never connect (mesh: the node whose IP sorts lower). */
  readonly passive?: boolean;
  /** Source address for our outgoing connection (our BGP address of the peer's family). */
  readonly localAddress?: string;
  /** We reflect routes to this peer as an RFC 4456 client (needs SpeakerConfig.clusterId). */
  readonly routeReflectorClient?: boolean;
  /** Send routes with their received next hop (route-server style), not next-hop-self. */
  readonly keepOriginalNextHop?: boolean;
  /** Graceful restart: longest we keep this peer's routes after it goes down (default 120). */
  readonly maxRestartTimeSec?: number;
  /** Default 90 (keepalive a third of it). */
  readonly holdTimeSec?: number;
  /** For status output: the resource that configured it (e.g. `BGPPeer/rack1-tor`, `Node/host2`). */
  readonly source?: string;
}

export interface SpeakerConfig {
  readonly asn: number;
  /** BGP identifier, a dotted quad (the node's IPv4 address). */
  readonly routerId: string;
  /** Set: we are a route reflector with this CLUSTER_ID (Node spec.bgp.routeReflectorClusterID). */
  readonly clusterId?: string;
  /** Listen for incoming sessions on these addresses and port; false: never listen. */
  readonly listen: false | { readonly addresses: readonly string[]; readonly port: number };
  /** Our next hop for routes we send (next-hop-self), per family. */
  readonly nextHop: { readonly ipv4?: string; readonly ipv6?: string };
  /** Graceful restart time we announce, seconds (default 120). */
  readonly restartTimeSec?: number;
  /**
   * We restarted with forwarding state kept (routes still in the kernel): announce the R bit and
   * forwarding-preserved, and send End-of-RIB only after initialSyncDone().
   */
  readonly restarting?: boolean;
  /** ECMP: how many equal paths become one multipath route (default 8; 1 disables). */
  readonly maxPaths?: number;
  /** Communities added to every locally originated route (BGPConfiguration communities). */
  readonly localCommunities?: readonly number[];
  readonly localLargeCommunities?: ReadonlyArray<readonly [number, number, number]>;
  /** Seconds between outgoing connection attempts (default 5). */
  readonly connectRetrySec?: number;
}

/** One Loc-RIB outcome for the kernel: the next hops of the best path(s); none = remove. */
export interface FibChange {
  readonly prefix: string;
  readonly family: 4 | 6;
  /** Next-hop addresses of the ECMP set (deduplicated, sorted); empty: remove the route. */
  readonly nextHops: readonly string[];
}

export type PeerState = 'Idle' | 'Connect' | 'Active' | 'OpenSent' | 'OpenConfirm' | 'Established';

export interface PeerStatus {
  readonly id: string;
  readonly address: string;
  readonly port: number;
  readonly asn: number;
  readonly kind: PeerKind;
  readonly source?: string;
  readonly state: PeerState;
  /** ISO time of the last state change. */
  readonly since: string;
  /** Last error / notification / GR note, '' when none. */
  readonly info: string;
  /** Routes currently in this peer's Adj-RIB-In (both families). */
  readonly prefixesReceived: number;
  /** Routes currently advertised to it. */
  readonly prefixesAdvertised: number;
  /** Its routes are being kept stale during its graceful restart. */
  readonly gracefulRestart?: boolean;
  /** Times the session reached Established (cumulative, this peer configuration). */
  readonly establishedTransitions?: number;
  /** UPDATE messages received / sent (cumulative; sent includes End-of-RIB and refresh markers). */
  readonly updatesReceived?: number;
  readonly updatesSent?: number;
  /** Families whose End-of-RIB the peer sent / we sent in the current session. */
  readonly endOfRibReceived?: readonly AfiSafi[];
  readonly endOfRibSent?: readonly AfiSafi[];
}

export interface SpeakerStatus {
  readonly asn: number;
  readonly routerId: string;
  readonly clusterId?: string;
  readonly peers: readonly PeerStatus[];
  readonly locRib: Readonly<Record<AfiSafi, number>>;
  readonly localRoutes: number;
}

/**
 * What the roles use. Implemented by BgpSpeaker (src/bgp/speaker/speaker.ts).
 *
 *   const s = new BgpSpeaker(config); s.onFib(changes => fib.apply(changes));
 *   await s.start(); s.setPeers(peers); s.setLocalRoutes(prefixes); s.initialSyncDone();
 */
export interface Speaker {
  start(): Promise<void>;
  /** Reconcile the peer set: new peers start, gone peers stop (Cease/3), changed peers reset; others untouched. */
  setPeers(peers: readonly SpeakerPeerConfig[]): void;
  /** Replace the locally originated routes (workload /32 and /128, blocks) with exactly this set. */
  setLocalRoutes(prefixes: Iterable<string>): void;
  /** Local routes are loaded: send End-of-RIB to peers that wait for it (GR restarting side). */
  initialSyncDone(): void;
  /** Loc-RIB changes for routes learned from peers (never local ones), batched. */
  onFib(listener: (changes: readonly FibChange[]) => void): () => void;
  /** Every learned route now in the Loc-RIB, as FibChanges (for a full kernel resync). */
  fibSnapshot(): FibChange[];
  status(): SpeakerStatus;
  /** Reconfigure AS / router id / cluster / listen: sessions reset only where required. */
  reconfigure(config: SpeakerConfig): Promise<void>;
  /**
   * Cease/2 with the text to every peer; close the listener. `restarting`: peers that negotiated
   * graceful restart get no NOTIFICATION (the connection just closes), so they keep our routes.
   */
  stop(shutdownText?: string, opts?: { readonly restarting?: boolean }): Promise<void>;
}
