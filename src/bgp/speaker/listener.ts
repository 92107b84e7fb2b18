/**
 * The BGP listener: one net.Server per configured address on the configured port. Each incoming
 * connection is handed to `route(remoteAddress)`'s acceptor (the speaker matches it to a configured
 * peer by remote address); connections from addresses nobody configured are closed at once.
 * Owns only its servers; never touches sessions or routes.
 */
import { createServer, type Server, type Socket } from 'node:net';
import type { Logger } from '../../log.ts';

export type Acceptor = (socket: Socket) => void;

/** `::ffff:10.0.0.1` -> `10.0.0.1` (a v4 peer reaching a dual-stack socket). */
export function plainAddress(a: string | undefined): string {
  if (a === undefined) return '';
  return a.startsWith('::ffff:') && a.includes('.') ? a.slice(7) : a;
}

export class Listener {
  readonly #servers: Server[] = [];
  readonly #route: (remoteAddress: string) => Acceptor | undefined;
  readonly #log: Logger;

  constructor(route: (remoteAddress: string) => Acceptor | undefined, log: Logger) {
    this.#route = route;
    this.#log = log;
  }

  /** Bind every address; rejects (after closing what was bound) if one fails. */
  async listen(addresses: readonly string[], port: number): Promise<void> {
    try {
      for (const address of addresses) {
        const server = createServer((socket) => this.#accept(socket));
        await new Promise<void>((resolve, reject) => {
          const onError = (err: Error): void => reject(new Error(`BGP listener on [${address}]:${port}: ${err.message}`));
          server.once('error', onError);
          server.listen({ host: address, port }, () => {
            server.off('error', onError);
            server.on('error', (err) => this.#log.error(`listener [${address}]:${port}: ${err.message}`));
            resolve();
          });
        });
        this.#servers.push(server);
        this.#log.info(`listening on [${address}]:${this.#portOf(server)}`);
      }
    } catch (err) {
      await this.close();
      throw err;
    }
  }

  /** The bound addresses and ports (the real port when 0 was configured). */
  get bound(): Array<{ address: string; port: number }> {
    const out: Array<{ address: string; port: number }> = [];
    for (const s of this.#servers) {
      const a = s.address();
      if (a && typeof a === 'object') out.push({ address: a.address, port: a.port });
    }
    return out;
  }

  async close(): Promise<void> {
    const servers = this.#servers.splice(0);
    await Promise.all(servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
  }

  #portOf(s: Server): number {
    const a = s.address();
    return a && typeof a === 'object' ? a.port : 0;
  }

  #accept(socket: Socket): void {
    const remote = plainAddress(socket.remoteAddress);
    socket.on('error', () => undefined);
    let acceptor: Acceptor | undefined;
    try {
      acceptor = this.#route(remote);
    } catch (err) {
      this.#log.error(`matching connection from ${remote}: ${err instanceof Error ? err.message : String(err)}`);
    }
    if (acceptor === undefined) {
      this.#log.warn(`closing BGP connection from ${remote}:${socket.remotePort}: no peer configured with that address`);
      socket.destroy();
      return;
    }
    acceptor(socket);
  }
}
