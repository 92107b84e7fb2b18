/**
 * The etcd connection: endpoints, TLS and user/password, as calico/node configures them.
 * A real etcd is the only datastore routecat has.
 */
import { readFileSync } from 'node:fs';
import { Etcd3, isRecoverableError, type IOptions } from 'etcd3';
import { ConsecutiveBreaker, ExponentialBackoff, circuitBreaker, handleWhen, retry } from 'cockatiel';
import { UsageError, errorMessage } from '../errors.ts';

export interface EtcdOptions {
  readonly endpoints: readonly string[];
  readonly caFile?: string;
  readonly certFile?: string;
  readonly keyFile?: string;
  readonly username?: string;
  readonly password?: string;
  /** Per-call deadline in milliseconds (default 10 s). */
  readonly timeoutMs?: number;
}

export function readPem(file: string, what: string): Buffer {
  try {
    return readFileSync(file);
  } catch (err) {
    throw new UsageError(`cannot read etcd ${what} ${file}: ${errorMessage(err)}`);
  }
}

/** etcd3 wants host:port for plaintext and https URLs for TLS; accept either spelling. */
function normaliseEndpoint(e: string, tls: boolean): string {
  const trimmed = e.trim();
  if (/^[a-z]+:\/\//.test(trimmed)) return trimmed;
  return `${tls ? 'https' : 'http'}://${trimmed}`;
}

export function etcdClientOptions(opts: EtcdOptions): IOptions {
  const tls = Boolean(opts.caFile || opts.certFile || opts.keyFile) || opts.endpoints.some((e) => e.startsWith('https://'));
  if (opts.endpoints.length === 0) throw new UsageError('no etcd endpoints given (--etcd-endpoints or ETCD_ENDPOINTS)');
  if (Boolean(opts.certFile) !== Boolean(opts.keyFile)) throw new UsageError('etcd client certificate and key must be given together');
  const options: IOptions = {
    hosts: opts.endpoints.map((e) => normaliseEndpoint(e, tls)),
    // Unary calls get a deadline; watch streams must not (they live as long as the syncer).
    // An agent outlives etcd restarts: retry briefly, and keep a host's breaker open for only
    // one second so a restarted etcd is used again at once (etcd3's default is five).
    faultHandling: {
      host: () => circuitBreaker(handleWhen(isRecoverableError), { halfOpenAfter: 1_000, breaker: new ConsecutiveBreaker(3) }),
      global: retry(handleWhen(isRecoverableError), { maxAttempts: 3, backoff: new ExponentialBackoff({ initialDelay: 100, maxDelay: 1_000 }) }),
    },
    defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: new Date(Date.now() + (opts.timeoutMs ?? 10_000)) }),
  };
  if (tls) {
    options.credentials = {
      rootCertificate: opts.caFile ? readPem(opts.caFile, 'CA certificate') : Buffer.alloc(0),
      ...(opts.certFile ? { certChain: readPem(opts.certFile, 'certificate'), privateKey: readPem(opts.keyFile!, 'key') } : {}),
    };
  }
  if (opts.username) options.auth = { username: opts.username, password: opts.password ?? '' };
  return options;
}

export function connectEtcd(opts: EtcdOptions): Etcd3 {
  return new Etcd3(etcdClientOptions(opts));
}

export type { Etcd3 };
