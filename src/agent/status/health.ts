/**
 * /liveness and /readiness, as Felix serves them: 200 when good, 503 with the reasons when not.
 * Readiness = the datastore is InSync and the first complete apply has finished.
 */
import { createServer, type Server, type ServerResponse } from 'node:http';
import type { Registry } from 'prom-client';

export interface HealthState {
  live(): { ok: boolean; detail: Record<string, unknown> };
  ready(): { ok: boolean; detail: Record<string, unknown> };
}

/** Serves /liveness and /readiness, and /metrics too when given a registry. */
export async function startHealthServer(host: string, port: number, state: HealthState, metrics?: Registry): Promise<Server> {
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (metrics && path === '/metrics') {
      sendMetrics(metrics, res);
      return;
    }
    const check = path === '/liveness' ? state.live() : path === '/readiness' ? state.ready() : undefined;
    if (!check) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: try /liveness or /readiness\n');
      return;
    }
    res.writeHead(check.ok ? 200 : 503, { 'content-type': 'application/json' }).end(`${JSON.stringify(check.detail)}\n`);
  });
  await listen(server, { host, port });
  return server;
}

/** Answers a /metrics request with the registry's exposition (500 with the error if it fails). */
export function sendMetrics(registry: Registry, res: ServerResponse): void {
  registry.metrics().then(
    (text) => res.writeHead(200, { 'content-type': registry.contentType }).end(text),
    (err: unknown) => res.writeHead(500).end(String(err)),
  );
}

export function listen(server: Server, where: { host: string; port: number } | { path: string }): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    const done = () => {
      server.off('error', reject);
      resolve();
    };
    if ('path' in where) server.listen(where.path, done);
    else server.listen(where.port, where.host, done);
  });
}

export function closeServer(server: Server | undefined): Promise<void> {
  if (!server) return Promise.resolve();
  return new Promise((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections?.();
  });
}
