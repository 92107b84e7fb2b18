/** The node agent's Prometheus metrics (prefix routecat_), served on the metrics port. */
import { createServer, type Server } from 'node:http';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { listen } from './health.ts';

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

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: 'routecat_process_' });
  }

  async serve(host: string, port: number): Promise<Server> {
    const server = createServer((req, res) => {
      if ((req.url ?? '/').split('?')[0] !== '/metrics') {
        res.writeHead(404).end('try /metrics\n');
        return;
      }
      this.registry.metrics().then(
        (text) => res.writeHead(200, { 'content-type': this.registry.contentType }).end(text),
        (err: unknown) => res.writeHead(500).end(String(err)),
      );
    });
    await listen(server, { host, port });
    return server;
  }
}
