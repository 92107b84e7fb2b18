/**
 * etcd's gRPC API as data: the services of build/etcd-rpc.json (made by
 * `node scripts/build.mjs --proto-only`) with encode/decode per method, and raw (Buffer in, Buffer
 * out) service definitions so the proxy can pass a call through byte for byte and decode only the
 * calls it answers itself. int64 fields decode as decimal strings, bytes as Buffers, enums as names.
 * Owns no sockets and no state.
 */
import { fromJSON, type MethodDefinition } from '@grpc/proto-loader';
import type { ServiceDefinition } from '@grpc/grpc-js';
import descriptor from '../../build/etcd-rpc.json' with { type: 'json' };

const packageDefinition = fromJSON(descriptor as Parameters<typeof fromJSON>[0], {
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
});

/** The services the proxy serves; every method of each is either answered here or passed through. */
export const PROXIED_SERVICES = ['KV', 'Watch', 'Lease', 'Maintenance', 'Cluster', 'Auth'] as const;
export type ProxiedService = (typeof PROXIED_SERVICES)[number];

export interface EtcdMethod {
  readonly service: ProxiedService;
  readonly name: string;
  readonly path: string;
  readonly requestStream: boolean;
  readonly responseStream: boolean;
  encodeRequest(msg: object): Buffer;
  decodeRequest(buf: Buffer): any;
  encodeResponse(msg: object): Buffer;
  decodeResponse(buf: Buffer): any;
}

function methodsOf(service: ProxiedService): EtcdMethod[] {
  const def = packageDefinition[`etcdserverpb.${service}`] as Record<string, MethodDefinition<object, object>> | undefined;
  if (!def) throw new Error(`build/etcd-rpc.json has no service etcdserverpb.${service}: regenerate it with 'node scripts/build.mjs --proto-only'`);
  return Object.entries(def).map(([name, m]) => ({
    service,
    name,
    path: m.path,
    requestStream: m.requestStream,
    responseStream: m.responseStream,
    encodeRequest: (msg) => m.requestSerialize(msg),
    decodeRequest: (buf) => m.requestDeserialize(buf),
    encodeResponse: (msg) => m.responseSerialize(msg),
    decodeResponse: (buf) => m.responseDeserialize(buf),
  }));
}

export const ETCD_METHODS: ReadonlyMap<string, EtcdMethod> = new Map(
  PROXIED_SERVICES.flatMap((s) => methodsOf(s)).map((m) => [`${m.service}.${m.name}`, m] as const),
);

export function etcdMethod(service: ProxiedService, name: string): EtcdMethod {
  const m = ETCD_METHODS.get(`${service}.${name}`);
  if (!m) throw new Error(`etcd service ${service} has no method ${name}`);
  return m;
}

const identity = (b: Buffer): Buffer => b;

/** A grpc-js service definition whose handlers see and return raw protobuf bytes. */
export function rawServiceDefinition(service: ProxiedService): ServiceDefinition {
  const def: Record<string, ServiceDefinition[string]> = {};
  for (const m of ETCD_METHODS.values()) {
    if (m.service !== service) continue;
    def[m.name] = {
      path: m.path,
      requestStream: m.requestStream,
      responseStream: m.responseStream,
      requestSerialize: identity,
      requestDeserialize: identity,
      responseSerialize: identity,
      responseDeserialize: identity,
    };
  }
  return def as ServiceDefinition;
}
