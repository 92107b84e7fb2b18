/**
 * The proxy's channels to the etcd cluster, speaking raw protobuf bytes: a forwarded call goes out
 * and comes back unchanged. One gRPC channel per member endpoint and one of them current: when a
 * call to the current member fails as unavailable, the next call goes to the next member (so a
 * stopped member costs one failed call, not a stall). Owns the channels, their credentials and
 * the proxy's own auth token; knows nothing of the cache or of the proxy's clients.
 */
import * as grpc from '@grpc/grpc-js';
import { UsageError, errorMessage } from '../errors.ts';
import { readPem, type EtcdOptions } from '../datastore/etcd.ts';
import { etcdMethod, type EtcdMethod } from './etcd-proto.ts';

const identity = (b: Buffer): Buffer => b;
const AUTHENTICATE = etcdMethod('Auth', 'Authenticate');

/** Headers a client's call carries that belong to its own HTTP/2 hop, not to the forwarded call. */
const HOP_HEADERS = new Set(['user-agent', 'content-type', 'te', 'host', 'grpc-accept-encoding', 'grpc-encoding', 'grpc-timeout']);

/** The metadata of a client's call minus its hop-by-hop headers (keeps etcd's `token`, `hasleader`). */
export function forwardedMetadata(incoming: grpc.Metadata): grpc.Metadata {
  const out = new grpc.Metadata();
  for (const [key, value] of Object.entries(incoming.getMap())) {
    if (key.startsWith(':') || HOP_HEADERS.has(key)) continue;
    out.set(key, value);
  }
  return out;
}

/** grpc-js targets, one per etcd member, from endpoints given as URLs, host:port or unix: paths. */
export function memberTargets(endpoints: readonly string[]): string[] {
  const list = endpoints.map((e) => e.trim()).filter((e) => e !== '');
  if (list.length === 0) throw new UsageError('no etcd endpoints given (--etcd-endpoints or ETCD_ENDPOINTS)');
  return list.map((e) => (e.startsWith('unix:') ? e : e.replace(/^[a-z]+:\/\//, '').replace(/\/$/, '')));
}

/** Errors after which the member is presumed gone and the next one is tried. */
export function memberUnavailable(err: { code?: number } | null | undefined): boolean {
  return err?.code === grpc.status.UNAVAILABLE;
}

/** A call's handle on the member it went to: report failure through it. */
export interface MemberLease {
  readonly index: number;
  readonly target: string;
}

export class Upstream {
  readonly targets: readonly string[];
  /** How many times the current member changed because one failed. */
  failovers = 0;
  private readonly creds: grpc.ChannelCredentials;
  private readonly clients: Array<grpc.Client | undefined>;
  private current = 0;
  private readonly auth: { name: string; password: string } | undefined;
  private token: Promise<string> | undefined;
  private readonly onFailover: Array<(from: string, to: string, reason: string) => void> = [];

  constructor(opts: EtcdOptions) {
    this.targets = memberTargets(opts.endpoints);
    if (Boolean(opts.certFile) !== Boolean(opts.keyFile)) throw new UsageError('etcd client certificate and key must be given together');
    const tls = Boolean(opts.caFile || opts.certFile || opts.keyFile) || opts.endpoints.some((e) => e.trim().startsWith('https://'));
    this.creds = tls
      ? grpc.credentials.createSsl(
          opts.caFile ? readPem(opts.caFile, 'CA certificate') : null,
          opts.keyFile ? readPem(opts.keyFile, 'key') : null,
          opts.certFile ? readPem(opts.certFile, 'certificate') : null,
        )
      : grpc.credentials.createInsecure();
    this.clients = this.targets.map(() => undefined);
    this.auth = opts.username ? { name: opts.username, password: opts.password ?? '' } : undefined;
  }

  /** The member calls go to now. */
  get target(): string {
    return this.targets[this.current]!;
  }

  /** Calls `listener` whenever a failed member is left for another. */
  onMemberChange(listener: (from: string, to: string, reason: string) => void): void {
    this.onFailover.push(listener);
  }

  private lease(): { client: grpc.Client; member: MemberLease } {
    const index = this.current;
    let client = this.clients[index];
    if (!client) {
      client = new grpc.Client(this.targets[index]!, this.creds, { 'grpc.max_receive_message_length': -1, 'grpc.max_send_message_length': -1, 'grpc.enable_channelz': 0 });
      this.clients[index] = client;
    }
    return { client, member: { index, target: this.targets[index]! } };
  }

  /**
   * A call to `member` failed with `err`: if the member is unavailable and still current, move on
   * to the next one. Several calls failing on one member move only once.
   */
  failed(member: MemberLease, err: { code?: number; details?: string } | null | undefined): void {
    if (!memberUnavailable(err) || member.index !== this.current || this.targets.length < 2) return;
    this.current = (this.current + 1) % this.targets.length;
    this.failovers++;
    const reason = err?.details || 'unavailable';
    for (const l of this.onFailover) l(member.target, this.target, reason);
  }

  unary(method: EtcdMethod, request: Buffer, metadata: grpc.Metadata, deadline: grpc.Deadline | undefined, done: (err: grpc.ServiceError | null, res?: Buffer) => void): grpc.ClientUnaryCall {
    const options: grpc.CallOptions = deadline !== undefined && deadline !== Infinity ? { deadline } : {};
    const { client, member } = this.lease();
    return client.makeUnaryRequest(method.path, identity, identity, request, metadata, options, (err, res) => {
      if (err) this.failed(member, err);
      done(err, res);
    });
  }

  /**
   * A unary call of the proxy's own (the cache feed, read-index): the caller's object is encoded
   * and the answer decoded; the proxy's credentials go with it.
   */
  async call<T>(method: EtcdMethod, request: object, timeoutMs = 30_000): Promise<T> {
    const metadata = await this.ownMetadata();
    return new Promise((resolve, reject) => {
      this.unary(method, method.encodeRequest(request), metadata, new Date(Date.now() + timeoutMs), (err, res) => {
        if (err) {
          if (err.code === grpc.status.UNAUTHENTICATED) this.token = undefined; // expired: log in again next time
          reject(err);
        } else resolve(method.decodeResponse(res!) as T);
      });
    });
  }

  /** Metadata for the proxy's own calls: etcd's `token` when a user name is configured. */
  async ownMetadata(): Promise<grpc.Metadata> {
    const md = new grpc.Metadata();
    if (!this.auth) return md;
    this.token ??= this.authenticate();
    try {
      md.set('token', await this.token);
    } catch (err) {
      this.token = undefined;
      throw err;
    }
    return md;
  }

  private authenticate(): Promise<string> {
    const auth = this.auth!;
    return new Promise((resolve, reject) => {
      this.unary(AUTHENTICATE, AUTHENTICATE.encodeRequest(auth), new grpc.Metadata(), new Date(Date.now() + 10_000), (err, res) => {
        if (err) reject(new Error(`etcd login as ${auth.name} failed: ${errorMessage(err)}`));
        else resolve((AUTHENTICATE.decodeResponse(res!) as { token: string }).token);
      });
    });
  }

  serverStream(method: EtcdMethod, request: Buffer, metadata: grpc.Metadata): { stream: grpc.ClientReadableStream<Buffer>; member: MemberLease } {
    const { client, member } = this.lease();
    return { stream: client.makeServerStreamRequest(method.path, identity, identity, request, metadata, {}), member };
  }

  duplex(method: EtcdMethod, metadata: grpc.Metadata): { stream: grpc.ClientDuplexStream<Buffer, Buffer>; member: MemberLease } {
    const { client, member } = this.lease();
    return { stream: client.makeBidiStreamRequest(method.path, identity, identity, metadata, {}), member };
  }

  close(): void {
    for (const c of this.clients) c?.close();
  }
}
