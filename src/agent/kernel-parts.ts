/**
 * The node agent's kernel side assembled: one LinuxKernel shared by the interface and route
 * reconcilers, and the `ip monitor` that marks them dirty when links or our routes change.
 */
import { LinuxKernel } from './kernel/linux-kernel.ts';
import { KernelMonitor, eventNeedsResync } from './kernel/monitor.ts';
import { ROUTE_PROTO } from './kernel/kernel.ts';
import { RouteReconciler } from './route-reconciler.ts';
import { IfaceReconciler } from './iface-reconciler.ts';
import type { ReconcilerPart } from './agent.ts';
import { logger } from '../log.ts';

export interface KernelParts {
  readonly ifaces: ReconcilerPart;
  readonly routes: ReconcilerPart;
  linkUp(iface: string): boolean | undefined;
  startMonitor(onChange: () => void): void;
  stop(): void;
}

export function createKernelParts(opts: { ifacePrefix: string }): KernelParts {
  const kernel = new LinuxKernel();
  const ifaces = new IfaceReconciler({ kernel, prefix: opts.ifacePrefix, log: logger('ifaces') });
  const routes = new RouteReconciler({ kernel, protocol: ROUTE_PROTO, log: logger('routes') });
  const monitor = new KernelMonitor({ log: logger('monitor') });
  return {
    ifaces,
    routes,
    linkUp: (iface) => ifaces.linkUp(iface),
    startMonitor(onChange) {
      monitor.onEvent((e) => {
        if (!eventNeedsResync(e, ROUTE_PROTO)) return;
        // A removed route of ours that we did not delete ourselves is drift; our own deletes echo
        // back here too and need nothing.
        if (e.type === 'route') {
          if (routes.routeRemoved(e.dst, e.dev)) onChange();
          return;
        }
        onChange();
      });
      monitor.start();
    },
    stop() {
      monitor.stop();
      void kernel.close();
    },
  };
}
