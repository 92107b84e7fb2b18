/**
 * A raw etcd v3 gRPC client for tests that compare answers byte for byte: requests encoded and
 * responses decoded with the proto compiled into the binary (src/proxy/etcd-proto.ts), so a test
 * sees exactly what etcd (or the proxy) sent, errors included. Owns one channel; no retries, no
 * interpretation.
 */
import * as grpc from '@grpc/grpc-js';
import { etcdMethod, type ProxiedService } from '../../src/proxy/etcd-proto.ts';

/** A unary answer: the decoded response, or the gRPC status etcd gave instead. */
export type Answer = { readonly ok: true; readonly res: any } | { readonly ok: false; readonly code: number; readonly details: string };

const identity = (b: Buffer): Buffer => b;
const WATCH = etcdMethod('Watch', 'Watch');

/** One bidirectional Watch stream: every decoded response in arrival order. */
export interface RawWatchStream {
  readonly responses: any[];
  create(req: object): void;
  cancel(watchId: string): void;
  /** Resolves with the first response at index >= from matching `pred`; rejects after timeoutMs. */
  next(from: number, pred: (r: any) => boolean, timeoutMs: number): Promise<{ index: number; res: any }>;
  /** Resolves once `cond()` holds (checked on every response), false after timeoutMs. */
  until(cond: () => boolean, timeoutMs: number): Promise<boolean>;
  close(): void;
}

export class RawEtcd {
  readonly target: string;
  private readonly client: grpc.Client;

  /** `endpoint`: host:port or an http:// URL. */
  constructor(endpoint: string) {
    this.target = endpoint.replace(/^[a-z]+:\/\//, '').replace(/\/$/, '');
    this.client = new grpc.Client(this.target, grpc.credentials.createInsecure());
  }

  call(service: ProxiedService, name: string, req: object, timeoutMs = 10_000): Promise<Answer> {
    const m = etcdMethod(service, name);
    return new Promise((resolve) => {
      this.client.makeUnaryRequest(m.path, identity, identity, m.encodeRequest(req), new grpc.Metadata(), { deadline: Date.now() + timeoutMs }, (err, res) => {
        if (err) resolve({ ok: false, code: err.code, details: err.details });
        else resolve({ ok: true, res: m.decodeResponse(res!) });
      });
    });
  }

  /** Like call(), but throws on an error status. */
  async must(service: ProxiedService, name: string, req: object): Promise<any> {
    const a = await this.call(service, name, req);
    if (!a.ok) throw new Error(`${service}.${name} at ${this.target} failed: ${a.code} ${a.details}`);
    return a.res;
  }

  watch(): RawWatchStream {
    const stream = this.client.makeBidiStreamRequest(WATCH.path, identity, identity, new grpc.Metadata(), {});
    const target = this.target;
    const responses: any[] = [];
    const waiters = new Set<() => void>();
    stream.on('data', (b: Buffer) => {
      responses.push(WATCH.decodeResponse(b));
      for (const w of [...waiters]) w();
    });
    stream.on('error', () => undefined); // cancelled by close(), or the server went away
    const until = (cond: () => boolean, timeoutMs: number): Promise<boolean> =>
      new Promise((resolve) => {
        const check = (): void => {
          if (!cond()) return;
          finish(true);
        };
        const timer = setTimeout(() => finish(false), timeoutMs);
        const finish = (v: boolean): void => {
          clearTimeout(timer);
          waiters.delete(check);
          resolve(v);
        };
        waiters.add(check);
        check();
      });
    return {
      responses,
      create: (req) => stream.write(WATCH.encodeRequest({ create_request: req })),
      cancel: (watchId) => stream.write(WATCH.encodeRequest({ cancel_request: { watch_id: watchId } })),
      async next(from, pred, timeoutMs) {
        let index = -1;
        const found = await until(() => {
          index = responses.findIndex((r, i) => i >= from && pred(r));
          return index >= 0;
        }, timeoutMs);
        if (!found) throw new Error(`no matching watch response from ${target} within ${timeoutMs} ms`);
        return { index, res: responses[index] };
      },
      until,
      close: () => stream.cancel(),
    };
  }

  close(): void {
    this.client.close();
  }
}
