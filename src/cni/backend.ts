/**
 * What the plugin talks to besides the kernel: block IPAM and the endpoint store, both over one
 * etcd connection built from the network configuration's etcd_* fields. The factory is a parameter
 * of runCni so unit tests pass fakes.
 */
import { connectEtcd } from '../datastore/etcd.ts';
import type { Ipam } from '../ipam/api.ts';
import type { NetConf } from './config.ts';
import { EtcdEndpointStore, type EndpointStore } from './endpoint.ts';

export interface Backend {
  readonly ipam: Ipam;
  readonly endpoints: EndpointStore;
  /** Resolves when the datastore answers; rejects when it cannot be reached. */
  ping(): Promise<void>;
  close(): Promise<void>;
}

export type BackendFactory = (conf: NetConf) => Promise<Backend>;

/** Deadline per etcd call: a runtime waits on us, so fail fast and let it retry (code 11). */
const ETCD_TIMEOUT_MS = 5_000;

export const etcdBackend: BackendFactory = async (conf) => {
  const client = connectEtcd({ ...conf.etcd, timeoutMs: ETCD_TIMEOUT_MS });
  const { createIpam } = await import('../ipam/ipam.ts');
  return {
    ipam: createIpam(client),
    endpoints: new EtcdEndpointStore(client),
    async ping() {
      await client.get('/calico/').exec();
    },
    async close() {
      client.close();
    },
  };
};
