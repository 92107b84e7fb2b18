/**
 * Felix's status reports in etcd, under a lease so they vanish when the host does:
 *   /calico/felix/v2/no-region/host/<name>/status                 {time, uptime, first_update}
 *   /calico/felix/v2/no-region/host/<name>/last_reported_status   same, refreshed every interval
 *   /calico/felix/v2/no-region/host/<name>/workload/<ns>/<name>/endpoint   {status: up|down}
 * Writes only what changed; a failed write is retried on the next round.
 */
import type { Etcd3, Lease } from 'etcd3';

export const FELIX_STATUS_PREFIX = '/calico/felix/v2/no-region/host/';

export function hostStatusPrefix(host: string): string {
  return `${FELIX_STATUS_PREFIX}${host}/`;
}

export function endpointStatusKey(host: string, endpointId: string): string {
  // endpointId is `wep/<ns>/<name>` or `hep/<name>`
  const [type, ...rest] = endpointId.split('/');
  return type === 'wep' ? `${hostStatusPrefix(host)}workload/${rest.join('/')}/endpoint` : `${hostStatusPrefix(host)}endpoint/${rest.join('/')}`;
}

export class StatusReporter {
  readonly #client: Etcd3;
  readonly #host: string;
  readonly #ttlSeconds: number;
  readonly #started = Date.now();
  #lease: Lease | undefined;
  #firstUpdate = true;
  readonly #written = new Map<string, string>();

  constructor(client: Etcd3, host: string, intervalMs: number) {
    this.#client = client;
    this.#host = host;
    this.#ttlSeconds = Math.max(10, Math.ceil((intervalMs * 3) / 1000));
  }

  #ensureLease(): Lease {
    if (!this.#lease || this.#lease.revoked()) {
      const lease = this.#client.lease(this.#ttlSeconds, { autoKeepAlive: true });
      lease.on('lost', () => {
        // etcd forgot the lease (it was down too long): write everything again under a new one.
        this.#written.clear();
        if (this.#lease === lease) this.#lease = undefined;
      });
      this.#lease = lease;
    }
    return this.#lease;
  }

  /** Writes the host status and the endpoint statuses that changed; deletes those that went. */
  async report(endpoints: ReadonlyMap<string, 'up' | 'down'>): Promise<void> {
    const lease = this.#ensureLease();
    const prefix = hostStatusPrefix(this.#host);
    const now = new Date();
    const status = JSON.stringify({ time: now.toISOString(), uptime: (Date.now() - this.#started) / 1000, first_update: this.#firstUpdate });
    await lease.put(`${prefix}status`).value(status).exec();
    await lease.put(`${prefix}last_reported_status`).value(status).exec();
    this.#firstUpdate = false;
    const want = new Map<string, string>();
    for (const [id, s] of endpoints) want.set(endpointStatusKey(this.#host, id), JSON.stringify({ status: s }));
    for (const [key, value] of want) {
      if (this.#written.get(key) === value) continue;
      await lease.put(key).value(value).exec();
      this.#written.set(key, value);
    }
    for (const key of [...this.#written.keys()]) {
      if (want.has(key)) continue;
      await this.#client.delete().key(key).exec();
      this.#written.delete(key);
    }
  }

  /** On a clean stop: revoke the lease so the status keys go at once. */
  async close(): Promise<void> {
    const lease = this.#lease;
    this.#lease = undefined;
    if (lease) await lease.revoke().catch(() => {});
  }
}
