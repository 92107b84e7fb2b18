/**
 * The proxy's one gRPC channel to the etcd cluster, speaking raw protobuf bytes: a forwarded call
 * goes out and comes back unchanged. Owns the channel and its credentials; knows nothing of the
 * cache or of the proxy's clients.
 */
import { readFileSync } from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import { UsageError, errorMessage } from '../errors.ts';
import type { EtcdOptions } from '../datastore/etcd.ts';
import type { EtcdMethod } from './etcd-proto.ts';

const identity = (b: Buffer): Buffer => b;

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

/** grpc-js target for etcd endpoints given as URLs or host:port; several IPv4 literals share one channel. */
export function grpcTarget(endpoints: readonly string[]): string {
  if (endpoints.length === 0) throw new UsageError('no etcd endpoints given (--etcd-endpoints or ETCD_ENDPOINTS)');
  const hostPorts = endpoints.map((e) => e.trim());
  if (hostPorts[0]!.startsWith('unix:')) return hostPorts[0]!;
  const bare = hostPorts.map((e) => e.replace(/^[a-z]+:\/\//, '').replace(/\/$/, ''));
  if (bare.length > 1 && bare.every((b) => /^\d+\.\d+\.\d+\.\d+:\d+$/.test(b))) return `ipv4:${bare.join(',')}`;
  return bare[0]!;
}

function readPem(file: string, what: string): Buffer {
  try {
    return readFileSync(file);
  } catch (err) {
    throw new UsageError(`cannot read etcd ${what} ${file}: ${errorMessage(err)}`);
  }
}

export class Upstream {
  readonly target: string;
  private readonly client: grpc.Client;

  constructor(opts: EtcdOptions) {
    this.target = grpcTarget(opts.endpoints);
    const tls = Boolean(opts.caFile || opts.certFile || opts.keyFile) || opts.endpoints.some((e) => e.startsWith('https://'));
    const creds = tls
      ? grpc.credentials.createSsl(
          opts.caFile ? readPem(opts.caFile, 'CA certificate') : null,
          opts.keyFile ? readPem(opts.keyFile, 'key') : null,
          opts.certFile ? readPem(opts.certFile, 'certificate') : null,
        )
      : grpc.credentials.createInsecure();
    this.client = new grpc.Client(this.target, creds, { 'grpc.max_receive_message_length': -1, 'grpc.max_send_message_length': -1 });
  }

  unary(method: EtcdMethod, request: Buffer, metadata: grpc.Metadata, deadline: grpc.Deadline | undefined, done: (err: grpc.ServiceError | null, res?: Buffer) => void): grpc.ClientUnaryCall {
    const options: grpc.CallOptions = deadline !== undefined && deadline !== Infinity ? { deadline } : {};
    return this.client.makeUnaryRequest(method.path, identity, identity, request, metadata, options, (err, res) => done(err, res));
  }

  /** A unary call whose request and response the caller encodes/decodes (used by the cache feed). */
  call<T>(method: EtcdMethod, request: object, timeoutMs = 30_000): Promise<T> {
    return new Promise((resolve, reject) => {
      this.unary(method, method.encodeRequest(request), new grpc.Metadata(), new Date(Date.now() + timeoutMs), (err, res) => {
        if (err) reject(err);
        else resolve(method.decodeResponse(res!) as T);
      });
    });
  }

  serverStream(method: EtcdMethod, request: Buffer, metadata: grpc.Metadata): grpc.ClientReadableStream<Buffer> {
    return this.client.makeServerStreamRequest(method.path, identity, identity, request, metadata, {});
  }

  duplex(method: EtcdMethod, metadata: grpc.Metadata): grpc.ClientDuplexStream<Buffer, Buffer> {
    return this.client.makeBidiStreamRequest(method.path, identity, identity, metadata, {});
  }

  close(): void {
    this.client.close();
  }
}
