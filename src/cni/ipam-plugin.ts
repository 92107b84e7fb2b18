/**
 * `routecat-ipam`: block IPAM as a CNI IPAM plugin, for main plugins such as `bridge` or `ptp`
 * (`"ipam": {"type": "routecat-ipam"}`). ADD returns addresses only (and `ipam.routes`), DEL
 * releases by handle `<network>.<CNI_CONTAINERID>`, CHECK verifies the handle still holds them,
 * GC and STATUS as the main plugin. Never touches an interface.
 */
import { CNI_CODES, CniError } from './errors.ts';
import { identify } from './naming.ts';
import { encodeResult, ipamResult } from './result.ts';
import { invoke, toCniError, type Handlers, type InvokeOptions } from './invoke.ts';
import { assignRequest, gcHandles, status } from './plugin.ts';

export function runIpamPlugin(env: Readonly<Record<string, string | undefined>>, stdin: string, stdout: (text: string) => void, deps: InvokeOptions = {}): Promise<number> {
  const handlers: Handlers = {
    async ADD({ env, conf, backend }) {
      const id = identify(env, conf);
      const existing = await backend.ipam.ipsByHandle(id.handleId);
      if (existing.length > 0) throw new CniError(CNI_CODES.interfaceExists, `handle ${id.handleId} already holds ${existing.join(', ')} (ADD of an existing attachment; DEL it first)`);
      let r;
      try {
        r = await backend.ipam.autoAssign(
          assignRequest(id, conf, { namespace: id.namespace, ...(id.pod ? { pod: id.pod } : {}), node: id.node, containerID: id.containerId }),
        );
      } catch (err) {
        throw toCniError(err, `IPAM assignment for ${id.handleId}`);
      }
      if ((conf.ipam.assignIpv4 && r.ipv4.length === 0) || (conf.ipam.assignIpv6 && r.ipv6.length === 0)) {
        await backend.ipam.releaseByHandle(id.handleId).catch(() => undefined);
        throw new CniError(CNI_CODES.ipamFailed, `IPAM assigned [${[...r.ipv4, ...r.ipv6].join(', ')}] for ${id.handleId}, not what ipam.assign_ipv4/assign_ipv6 ask for`);
      }
      return encodeResult(ipamResult(conf.cniVersion, [...r.ipv4, ...r.ipv6], conf.ipam.routes, conf.dns));
    },
    async DEL({ env, conf, backend }) {
      await backend.ipam.releaseByHandle(identify(env, conf).handleId);
      return undefined;
    },
    async CHECK({ env, conf, backend }) {
      const id = identify(env, conf);
      const have = await backend.ipam.ipsByHandle(id.handleId);
      if (have.length === 0) throw new CniError(CNI_CODES.checkFailed, `CHECK: no addresses allocated under handle ${id.handleId}`);
      return undefined;
    },
    async GC({ conf, backend }) {
      await gcHandles(conf, backend);
      return undefined;
    },
    STATUS: (ctx) => status(ctx),
  };
  return invoke(env, stdin, stdout, handlers, deps);
}
