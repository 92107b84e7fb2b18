/**
 * The local control socket under --run-dir: a small HTTP API over a Unix socket that
 * `routecat status` reads. Only root (the socket's owner) can connect.
 */
import { createServer, type Server } from 'node:http';
import { chmodSync, mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { listen } from './health.ts';

export const CONTROL_SOCKET = 'routecat.sock';

export function controlSocketPath(runDir: string): string {
  return join(runDir, CONTROL_SOCKET);
}

export type StatusProvider = () => Record<string, unknown>;

export async function startControlServer(runDir: string, providers: Record<string, StatusProvider>): Promise<Server> {
  mkdirSync(runDir, { recursive: true });
  const path = controlSocketPath(runDir);
  rmSync(path, { force: true });
  const server = createServer((req, res) => {
    const name = (req.url ?? '/').split('?')[0]!.replace(/^\/+/, '') || 'status';
    const provider = providers[name];
    if (req.method !== 'GET' || !provider) {
      res.writeHead(404, { 'content-type': 'application/json' }).end(JSON.stringify({ error: `no such endpoint '/${name}'`, endpoints: Object.keys(providers) }));
      return;
    }
    try {
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(provider()));
    } catch (err) {
      res.writeHead(500, { 'content-type': 'application/json' }).end(JSON.stringify({ error: String(err) }));
    }
  });
  await listen(server, { path });
  chmodSync(path, 0o600);
  return server;
}
