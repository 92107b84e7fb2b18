/** The node agent's and the BGP speaker's Prometheus metrics (prefix routecat_), served on the metrics port. */
import { createServer, type Server } from 'node:http';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { PeerState, SpeakerStatus } from '../../bgp/speaker-api.ts';
import { listen, sendMetrics } from './health.ts';

const PEER_STATES: readonly PeerState[] = ['Idle', 'Connect', 'Active', 'OpenSent', 'OpenConfirm', 'Established'];

/**
 * BGP gauges read from the speaker's status at scrape time: routecat_bgp_peers{state} (every state,
 * 0 included) and routecat_bgp_routes{afi} (Loc-RIB routes per address family).
 */
export class BgpMetrics {
  #source: () => SpeakerStatus | undefined;

  constructor(registry: Registry, source: () => SpeakerStatus | undefined = () => undefined) {
    this.#source = source;
    const self = this;
    new Gauge({
      name: 'routecat_bgp_peers',
      help: 'Configured BGP peers by session state',
      labelNames: ['state'],
      registers: [registry],
      collect() {
        const peers = self.#source()?.peers ?? [];
        for (const st of PEER_STATES) this.set({ state: st }, peers.filter((p) => p.state === st).length);
      },
    });
    new Gauge({
      name: 'routecat_bgp_routes',
      help: 'Routes in the BGP Loc-RIB by address family',
      labelNames: ['afi'],
      registers: [registry],
      collect() {
        const rib = self.#source()?.locRib;
        for (const afi of ['ipv4-unicast', 'ipv6-unicast'] as const) this.set({ afi }, rib?.[afi] ?? 0);
      },
    });
    new Gauge({
      name: 'routecat_bgp_local_routes',
      help: 'Locally originated routes announced by the BGP speaker',
      registers: [registry],
      collect() {
        this.set(self.#source()?.localRoutes ?? 0);
      },
    });
  }

  /** Where the speaker's status comes from (undefined: no speaker running, every gauge 0). */
  setSource(source: () => SpeakerStatus | undefined): void {
    this.#source = source;
  }
}

/** Serves `registry` at /metrics. */
export async function serveMetrics(registry: Registry, host: string, port: number): Promise<Server> {
  const server = createServer((req, res) => {
    if ((req.url ?? '/').split('?')[0] !== '/metrics') {
      res.writeHead(404).end('try /metrics\n');
      return;
    }
    sendMetrics(registry, res);
  });
  await listen(server, { host, port });
  return server;
}

export class AgentMetrics {
  readonly registry = new Registry();
  readonly applySeconds = new Histogram({
    name: 'routecat_apply_seconds',
    help: 'Time to program one batch of changes into the kernel, by stage',
    labelNames: ['stage'],
    buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [this.registry],
  });
  readonly routes = new Gauge({ name: 'routecat_routes_programmed', help: 'Workload routes in the kernel owned by routecat', registers: [this.registry] });
  readonly rules = new Gauge({ name: 'routecat_rules_programmed', help: 'ACL rules in the kernel owned by routecat', labelNames: ['dataplane'], registers: [this.registry] });
  readonly endpoints = new Gauge({ name: 'routecat_local_endpoints', help: 'Local workload and host endpoints', registers: [this.registry] });
  readonly ipSets = new Gauge({ name: 'routecat_ipsets', help: 'IP sets referenced by local policy', registers: [this.registry] });
  readonly inSync = new Gauge({ name: 'routecat_datastore_in_sync', help: '1 when the datastore syncer is InSync', registers: [this.registry] });
  readonly resyncs = new Counter({ name: 'routecat_datastore_resyncs_total', help: 'Full re-lists of the datastore', registers: [this.registry] });
  readonly errors = new Counter({ name: 'routecat_errors_total', help: 'Errors by where they happened', labelNames: ['where'], registers: [this.registry] });
  readonly badData = new Gauge({ name: 'routecat_datastore_bad_resources', help: 'Resources in the datastore skipped as invalid', registers: [this.registry] });
  readonly applies = new Counter({ name: 'routecat_applies_total', help: 'Kernel apply rounds', registers: [this.registry] });
  readonly bgp = new BgpMetrics(this.registry);

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: 'routecat_process_' });
  }

  serve(host: string, port: number): Promise<Server> {
    return serveMetrics(this.registry, host, port);
  }
}
