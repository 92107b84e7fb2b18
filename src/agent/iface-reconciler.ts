/**
 * Configures the host side of workload interfaces for pure layer-3 routing, Calico style, by
 * writing /proc/sys directly (no process) and reading back to detect drift:
 *
 *   global:     net.ipv4.ip_forward=1, net.ipv6.conf.all.forwarding=1
 *   per <if>:   net.ipv4.conf.<if>.proxy_arp=1      the host answers the workload's ARP for its
 *               net.ipv4.neigh.<if>.proxy_delay=0   gateway (169.254.1.1) at once with its own MAC
 *               net.ipv4.conf.<if>.forwarding=1
 *               net.ipv6.conf.<if>.proxy_ndp=1
 *               net.ipv6.conf.<if>.forwarding=1
 *
 * for every link whose name starts with the prefix (default `cali`) and belongs to a local endpoint.
 * It never brings a link up or down (as Calico): it reports each interface's state via status().
 *
 * IPv6 between workloads — choice: no proxy-NDP entries. proxy_ndp=1 alone answers nothing (the
 * kernel proxies only addresses listed in its proxy neighbour table), and listing every workload /128
 * on every interface would be O(workloads x interfaces). Instead, as Calico's CNI plugin does, the
 * workload's default route points at the host-side veth's own link-local address
 * (`default via fe80::... dev eth0`; with Calico's fixed host-side MAC ee:ee:ee:ee:ee:ee that is
 * always fe80::ecee:eeff:feee:eeee). The host answers neighbour solicitations for that address
 * because it owns it, routes the packet by the workload's /128 route (route-reconciler), and resolves
 * the destination workload's address on its veth by ordinary NDP, which the workload answers
 * because it owns that address. proxy_ndp=1 is still set (harmless) to match Calico.
 *
 * IPv6 sysctls are skipped when IPv6 is disabled in the kernel (the files do not exist).
 */
import { logger, type Logger } from '../log.ts';
import { errorMessage } from '../errors.ts';
import { counterDelta, isValidIfaceName, linkIsUp, type Kernel, type LinkInfo } from './kernel/kernel.ts';
import { endpointsOf, type ApplyOptions, type EndpointsInput } from './route-reconciler.ts';

export const DEFAULT_IFACE_PREFIX = 'cali';

export const GLOBAL_SYSCTLS: readonly (readonly [path: string, value: string])[] = [
  ['net/ipv4/ip_forward', '1'],
  ['net/ipv6/conf/all/forwarding', '1'],
];

/** The sysctls routecat sets on a workload interface, as [path under /proc/sys, value]. */
export function ifaceSysctls(iface: string): [path: string, value: string][] {
  return [
    [`net/ipv4/conf/${iface}/proxy_arp`, '1'],
    [`net/ipv4/neigh/${iface}/proxy_delay`, '0'],
    [`net/ipv4/conf/${iface}/forwarding`, '1'],
    [`net/ipv6/conf/${iface}/proxy_ndp`, '1'],
    [`net/ipv6/conf/${iface}/forwarding`, '1'],
  ];
}

export interface IfaceReconcilerOptions {
  readonly kernel: Kernel;
  /** Only interfaces whose name starts with this are configured; default `cali`. */
  readonly prefix?: string;
  readonly log?: Logger;
}

export interface IfaceStatus {
  readonly iface: string;
  readonly present: boolean;
  readonly adminUp: boolean;
  readonly operState: string;
  readonly up: boolean;
  /** All sysctls verified since the last markDirty(). */
  readonly configured: boolean;
}

export interface IfaceApplyStats {
  /** Endpoint interfaces present (== ifaces) and sysctls written (== sysctlWrites). */
  readonly total: number;
  readonly changed: number;
  readonly readLinks: boolean;
  /** Endpoint interfaces (with the prefix) present / absent in the kernel. */
  readonly ifaces: number;
  readonly missing: number;
  /** Present but not up (reported, never changed). */
  readonly down: number;
  /** Interfaces whose sysctls were read this apply. */
  readonly checked: number;
  readonly sysctlReads: number;
  readonly sysctlWrites: number;
  /** Values found wrong on an interface (or globally) that had already been configured. */
  readonly drift: number;
  /** Sysctls that do not exist (IPv6 disabled), skipped. */
  readonly absent: number;
  readonly failed: number;
  readonly errors: readonly string[];
  /** Always 0: sysctls need no process. */
  readonly processesSpawned: number;
  readonly durationsMs: { readonly read: number; readonly write: number; readonly total: number };
}

const MAX_ERRORS = 20;

export class IfaceReconciler {
  readonly #kernel: Kernel;
  readonly #prefix: string;
  readonly #log: Logger;
  /** Interfaces of local endpoints that carry the prefix. */
  #wanted = new Set<string>();
  #links: Map<string, LinkInfo> | undefined;
  /** iface -> ifindex whose sysctls were verified since the last dirty. */
  #verified = new Map<string, number>();
  /** iface -> ifindex configured at least once (to tell drift from a fresh interface). */
  #configured = new Map<string, number>();
  #globalsVerified = false;
  #globalsConfigured = false;
  #dirty = true;
  #serial: Promise<unknown> = Promise.resolve();

  constructor(opts: IfaceReconcilerOptions) {
    this.#kernel = opts.kernel;
    this.#prefix = opts.prefix ?? DEFAULT_IFACE_PREFIX;
    this.#log = opts.log ?? logger('ifaces');
  }

  get dirty(): boolean {
    return this.#dirty;
  }

  /** The local endpoints (the model, its endpoint map, or a list). Cheap: no I/O. */
  setDesired(input: EndpointsInput): void {
    const list = endpointsOf(input);
    const wanted = new Set<string>();
    for (const ep of list) {
      if (ep.iface.startsWith(this.#prefix) && isValidIfaceName(ep.iface)) wanted.add(ep.iface);
    }
    this.#wanted = wanted;
  }

  /** Re-read links and re-verify every sysctl on the next apply (monitor event, periodic resync). */
  markDirty(reason?: string): void {
    if (!this.#dirty && reason) this.#log.debug(`dirty: ${reason}`);
    this.#dirty = true;
  }

  /** Interface state of every wanted interface, as of the last apply. */
  status(): IfaceStatus[] {
    return [...this.#wanted].sort().map((iface) => {
      const l = this.#links?.get(iface);
      return {
        iface,
        present: l !== undefined,
        adminUp: l?.adminUp ?? false,
        operState: l?.operState ?? 'ABSENT',
        up: l !== undefined && linkIsUp(l),
        configured: l !== undefined && this.#verified.get(iface) === l.index,
      };
    });
  }

  /** Whether the interface was up at the last apply; undefined when absent (or not read yet). */
  linkUp(iface: string): boolean | undefined {
    const l = this.#links?.get(iface);
    return l === undefined ? undefined : linkIsUp(l);
  }

  /** `inSync` is accepted for symmetry; sysctls are never "removed", so it changes nothing. */
  apply(opts: ApplyOptions): Promise<IfaceApplyStats> {
    void opts;
    const run = this.#serial.then(() => this.#apply());
    this.#serial = run.catch(() => undefined);
    return run;
  }

  async #apply(): Promise<IfaceApplyStats> {
    const t0 = performance.now();
    const c0 = this.#kernel.counters();
    const errors: string[] = [];
    let readLinks = false;
    const dirty = this.#dirty;
    if (dirty || !this.#links || [...this.#wanted].some((w) => !this.#links!.has(w))) {
      this.#dirty = false;
      try {
        this.#links = new Map((await this.#kernel.listLinks()).map((l) => [l.name, l]));
      } catch (err) {
        this.#dirty = true;
        throw err;
      }
      readLinks = true;
    }
    if (dirty) {
      this.#verified.clear();
      this.#globalsVerified = false;
    }
    const links = this.#links!;
    const t1 = performance.now();

    let drift = 0;
    let absent = 0;
    let failed = 0;
    let checked = 0;
    let missing = 0;
    let down = 0;
    let present = 0;
    /** Ensures each [path, value]; returns false if something failed. */
    const ensure = (pairs: readonly (readonly [string, string])[], wasConfigured: boolean, what: string): boolean => {
      let ok = true;
      for (const [path, want] of pairs) {
        try {
          const have = this.#kernel.readSysctl(path);
          if (have === undefined) {
            absent++;
            continue;
          }
          if (have === want) continue;
          if (wasConfigured) {
            drift++;
            this.#log.warn(`drift on ${what}: ${path} was ${have}, setting ${want}`);
          }
          this.#kernel.writeSysctl(path, want);
          const after = this.#kernel.readSysctl(path);
          if (after !== want) throw new Error(`read back ${after ?? '(absent)'} after writing ${want}`);
        } catch (err) {
          ok = false;
          failed++;
          if (errors.length < MAX_ERRORS) errors.push(`${path}: ${errorMessage(err)}`);
        }
      }
      return ok;
    };

    if (!this.#globalsVerified) {
      this.#globalsVerified = ensure(GLOBAL_SYSCTLS, this.#globalsConfigured, 'global sysctls');
      if (this.#globalsVerified) this.#globalsConfigured = true;
    }
    for (const iface of this.#wanted) {
      const link = links.get(iface);
      if (!link) {
        missing++;
        continue;
      }
      present++;
      if (!linkIsUp(link)) down++;
      if (this.#verified.get(iface) === link.index) continue;
      checked++;
      const wasConfigured = this.#configured.get(iface) === link.index;
      if (ensure(ifaceSysctls(iface), wasConfigured, iface)) {
        this.#verified.set(iface, link.index);
        this.#configured.set(iface, link.index);
      } else {
        this.#verified.delete(iface);
      }
    }
    for (const name of [...this.#configured.keys()]) {
      if (!this.#wanted.has(name) || links.get(name)?.index !== this.#configured.get(name)) {
        this.#configured.delete(name);
        this.#verified.delete(name);
      }
    }
    const t2 = performance.now();
    const c = counterDelta(this.#kernel.counters(), c0);
    if (failed > 0) this.#log.warn(`${failed} sysctl writes failed, e.g. ${errors[0]}`);
    return {
      total: present,
      changed: c.sysctlWrites,
      readLinks,
      ifaces: present,
      missing,
      down,
      checked,
      sysctlReads: c.sysctlReads,
      sysctlWrites: c.sysctlWrites,
      drift,
      absent,
      failed,
      errors,
      processesSpawned: c.processesSpawned,
      durationsMs: { read: t1 - t0, write: t2 - t1, total: t2 - t0 },
    };
  }
}
