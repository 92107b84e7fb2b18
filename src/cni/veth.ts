/**
 * The kernel side of one attachment, done with `ip` (as src/agent/kernel does): a veth pair whose
 * container end is moved into the sandbox at CNI_NETNS and configured there (`nsenter --net=<path>
 * ip ...`), and whose host end gets Calico's MAC, the sysctls, and host routes to the workload.
 * Every command goes through a CommandRunner so tests record them with a fake. This module never
 * touches an interface it did not name: only the host veth of this attachment and CNI_IFNAME
 * inside the sandbox.
 */
import { access } from 'node:fs/promises';
import { writeFile } from 'node:fs/promises';
import type { CommandRunner } from '../agent/dataplane/exec.ts';
import { CommandError } from '../agent/dataplane/exec.ts';
import { ROUTE_PROTO } from '../agent/kernel/kernel.ts';
import { GATEWAY_V4, HOST_LINK_LOCAL, HOST_VETH_MAC } from './naming.ts';

export interface VethSpec {
  readonly hostVeth: string;
  readonly containerIf: string;
  /** Path of the sandbox's network namespace (CNI_NETNS). */
  readonly netns: string;
  readonly mtu: number;
  /** Addresses as /32 and /128 CIDRs. */
  readonly ipv4: readonly string[];
  readonly ipv6: readonly string[];
}

/** What the dataplane needs besides `ip`: sysctls on the host side and whether a netns exists. */
export interface HostSys {
  writeSysctl(path: string, value: string): Promise<void>;
  pathExists(path: string): Promise<boolean>;
  /** The pid `ip link ... netns <pid>` uses to name the plugin's own (host) namespace. */
  readonly pid: number;
}

export const linuxHostSys: HostSys = {
  async writeSysctl(path, value) {
    await writeFile(`/proc/sys/${path}`, value);
  },
  async pathExists(path) {
    try {
      await access(path);
      return true;
    } catch {
      return false;
    }
  },
  pid: process.pid,
};

interface IpLink {
  ifname: string;
  address?: string;
  flags?: string[];
  operstate?: string;
  mtu?: number;
}

const isNoDevice = (err: unknown): boolean => err instanceof CommandError && /Cannot find device|does not exist|not found/i.test(err.stderr);

export class VethDataplane {
  readonly #run: CommandRunner;
  readonly #sys: HostSys;

  constructor(run: CommandRunner, sys: HostSys = linuxHostSys) {
    this.#run = run;
    this.#sys = sys;
  }

  #ip(args: string[], stdin?: string): Promise<string> {
    return this.#run.run('ip', args, stdin).then((r) => r.stdout);
  }

  #ipIn(netns: string, args: string[], stdin?: string): Promise<string> {
    return this.#run.run('nsenter', [`--net=${netns}`, 'ip', ...args], stdin).then((r) => r.stdout);
  }

  netnsExists(netns: string): Promise<boolean> {
    return this.#sys.pathExists(netns);
  }

  async hostLink(name: string): Promise<IpLink | undefined> {
    try {
      const out = await this.#ip(['-j', 'link', 'show', 'dev', name]);
      return (JSON.parse(out) as IpLink[])[0];
    } catch (err) {
      if (isNoDevice(err)) return undefined;
      throw err;
    }
  }

  async containerLink(netns: string, name: string): Promise<IpLink | undefined> {
    try {
      const out = await this.#ipIn(netns, ['-j', 'link', 'show', 'dev', name]);
      return (JSON.parse(out) as IpLink[])[0];
    } catch (err) {
      if (isNoDevice(err)) return undefined;
      throw err;
    }
  }

  /**
   * Creates and configures the pair; returns the container interface's MAC. On failure the caller
   * removes the host veth (which takes its peer with it).
   */
  async create(s: VethSpec): Promise<{ containerMac: string }> {
    const mtu = String(s.mtu);
    // Created inside the sandbox with the host end sent straight to our namespace: no temporary names.
    await this.#ipIn(s.netns, ['link', 'add', s.containerIf, 'mtu', mtu, 'type', 'veth', 'peer', 'name', s.hostVeth, 'mtu', mtu, 'netns', String(this.#sys.pid)]);
    const h = s.hostVeth;
    await this.#ip(['link', 'set', 'dev', h, 'address', HOST_VETH_MAC]);
    const v6 = s.ipv6.length > 0;
    if (v6) await this.#sys.writeSysctl(`net/ipv6/conf/${h}/accept_dad`, '0').catch(() => undefined);
    for (const [path, value] of hostSysctls(h, s.ipv4.length > 0, v6)) await this.#sys.writeSysctl(path, value);
    await this.#ip(['link', 'set', 'dev', h, 'up']);
    // With the agent's route protocol: the agent then owns these routes (it never replaces a route
    // of another protocol, so a protocol-less one would make its own `add` fail with EEXIST forever).
    const hostRoutes = [
      ...s.ipv4.map((a) => `route replace ${a} dev ${h} proto ${ROUTE_PROTO} scope link`),
      ...s.ipv6.map((a) => `route replace ${a} dev ${h} proto ${ROUTE_PROTO}`),
    ];
    if (hostRoutes.length > 0) await this.#ip(['-batch', '-'], `${hostRoutes.join('\n')}\n`);

    const c = s.containerIf;
    const inside = [
      `link set dev ${c} up`,
      ...s.ipv4.map((a) => `addr add ${a} dev ${c}`),
      ...(s.ipv4.length > 0
        ? [`route add ${GATEWAY_V4} dev ${c} scope link`, `route add default via ${GATEWAY_V4} dev ${c}`, `neigh replace ${GATEWAY_V4} lladdr ${HOST_VETH_MAC} dev ${c} nud permanent`]
        : []),
      ...s.ipv6.map((a) => `addr add ${a} dev ${c} nodad`),
      // In a batch there is no -6: the family follows from the addresses.
      ...(v6 ? [`route add ::/0 via ${HOST_LINK_LOCAL} dev ${c}`] : []),
    ];
    await this.#ipIn(s.netns, ['-batch', '-'], `${inside.join('\n')}\n`);
    const link = await this.containerLink(s.netns, c);
    return { containerMac: link?.address ?? '' };
  }

  /** Deletes the host veth (its peer goes with it); false when it was not there. */
  async deleteHostVeth(name: string): Promise<boolean> {
    try {
      await this.#ip(['link', 'del', 'dev', name]);
      return true;
    } catch (err) {
      if (isNoDevice(err)) return false;
      throw err;
    }
  }

  /** What CHECK finds wrong with the attachment; empty when it is as ADD left it. */
  async check(s: VethSpec): Promise<string[]> {
    const problems: string[] = [];
    const host = await this.hostLink(s.hostVeth);
    if (!host) problems.push(`host interface ${s.hostVeth} is missing`);
    else {
      if (host.address !== HOST_VETH_MAC) problems.push(`host interface ${s.hostVeth} has MAC ${host.address}, expected ${HOST_VETH_MAC}`);
      if (!host.flags?.includes('UP')) problems.push(`host interface ${s.hostVeth} is down`);
    }
    if (!(await this.netnsExists(s.netns))) return [...problems, `network namespace ${s.netns} does not exist`];
    const cont = await this.containerLink(s.netns, s.containerIf);
    if (!cont) return [...problems, `interface ${s.containerIf} is missing in ${s.netns}`];
    if (!cont.flags?.includes('UP')) problems.push(`interface ${s.containerIf} in ${s.netns} is down`);
    const addrs = JSON.parse(await this.#ipIn(s.netns, ['-j', 'addr', 'show', 'dev', s.containerIf])) as { addr_info?: { local: string; prefixlen: number }[] }[];
    const have = new Set((addrs[0]?.addr_info ?? []).map((a) => `${a.local}/${a.prefixlen}`));
    for (const a of [...s.ipv4, ...s.ipv6]) if (!have.has(a)) problems.push(`address ${a} is missing on ${s.containerIf}`);
    if (s.ipv4.length > 0) {
      const routes = JSON.parse(await this.#ipIn(s.netns, ['-j', 'route', 'show', 'dev', s.containerIf])) as { dst: string; gateway?: string }[];
      if (!routes.some((r) => r.dst === 'default' && r.gateway === GATEWAY_V4)) problems.push(`default route via ${GATEWAY_V4} is missing in ${s.netns}`);
    }
    if (s.ipv6.length > 0) {
      const routes = JSON.parse(await this.#ipIn(s.netns, ['-j', '-6', 'route', 'show', 'dev', s.containerIf])) as { dst: string; gateway?: string }[];
      if (!routes.some((r) => r.dst === 'default' && r.gateway === HOST_LINK_LOCAL)) problems.push(`IPv6 default route via ${HOST_LINK_LOCAL} is missing in ${s.netns}`);
    }
    return problems;
  }
}

/** Calico's host-side sysctls for a workload veth. */
export function hostSysctls(iface: string, v4: boolean, v6: boolean): [string, string][] {
  const out: [string, string][] = [];
  if (v4) {
    out.push([`net/ipv4/conf/${iface}/proxy_arp`, '1'], [`net/ipv4/neigh/${iface}/proxy_delay`, '0'], [`net/ipv4/conf/${iface}/forwarding`, '1']);
  }
  if (v6) out.push([`net/ipv6/conf/${iface}/proxy_ndp`, '1'], [`net/ipv6/conf/${iface}/forwarding`, '1']);
  return out;
}
