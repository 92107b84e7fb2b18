/** Maps a role's resolved configuration to the etcd client options. */
import type { ResolvedConfig } from '../config/resolve.ts';
import type { EtcdOptions } from '../datastore/etcd.ts';

export function etcdOptionsFromConfig(config: ResolvedConfig): EtcdOptions {
  const v = config.values;
  const str = (x: unknown) => (typeof x === 'string' && x !== '' ? x : undefined);
  return {
    endpoints: (v.etcdEndpoints as string[] | undefined) ?? ['http://127.0.0.1:2379'],
    caFile: str(v.etcdCaCertFile),
    certFile: str(v.etcdCertFile),
    keyFile: str(v.etcdKeyFile),
    username: str(v.etcdUsername),
    password: str(v.etcdPassword),
  };
}
