/**
 * Fakes for the CNI plugin's unit tests: an in-memory Ipam, an in-memory EndpointStore, and a
 * CommandRunner that plays `ip`/`nsenter` against a tiny model of links (so ADD, DEL and CHECK
 * see their own effects) and records every command.
 */
import type { AssignRequest, AssignResult, Allocation, BlockInfo, Ipam } from '../../src/ipam/api.ts';
import type { CommandRunner, CommandResult } from '../../src/agent/dataplane/exec.ts';
import { CommandError } from '../../src/agent/dataplane/exec.ts';
import type { EndpointStore, WorkloadEndpoint } from '../../src/cni/endpoint.ts';
import type { Backend } from '../../src/cni/backend.ts';
import type { HostSys } from '../../src/cni/veth.ts';

export class FakeIpam implements Ipam {
  readonly allocs = new Map<string, { handleId: string; attributes: Record<string, string> }>();
  next4 = 1;
  next6 = 1;
  failAssign: Error | undefined;

  async autoAssign(req: AssignRequest): Promise<AssignResult> {
    if (this.failAssign) throw this.failAssign;
    const ipv4: string[] = [];
    const ipv6: string[] = [];
    for (let i = 0; i < req.num4; i++) ipv4.push(`10.65.0.${this.next4++}/32`);
    for (let i = 0; i < req.num6; i++) ipv6.push(`fd00::${(this.next6++).toString(16)}/128`);
    for (const a of [...ipv4, ...ipv6]) this.allocs.set(a, { handleId: req.handleId, attributes: { ...(req.attributes ?? {}) } });
    return { ipv4, ipv6 };
  }
  async releaseByHandle(handleId: string): Promise<string[]> {
    const out: string[] = [];
    for (const [ip, a] of this.allocs) if (a.handleId === handleId) out.push(ip);
    for (const ip of out) this.allocs.delete(ip);
    return out;
  }
  async releaseIps(ips: readonly string[]): Promise<string[]> {
    return ips.filter((ip) => this.allocs.delete(ip));
  }
  async ipsByHandle(handleId: string): Promise<string[]> {
    return [...this.allocs].filter(([, a]) => a.handleId === handleId).map(([ip]) => ip);
  }
  async blocks(): Promise<BlockInfo[]> {
    return [];
  }
  async lookup(ip: string): Promise<Allocation | undefined> {
    const a = this.allocs.get(ip);
    return a ? { ip, handleId: a.handleId, attributes: a.attributes, block: '10.65.0.0/26' } : undefined;
  }
  async allocations(): Promise<Allocation[]> {
    return [...this.allocs].map(([ip, a]) => ({ ip, handleId: a.handleId, attributes: a.attributes, block: '10.65.0.0/26' }));
  }
}

export class FakeEndpoints implements EndpointStore {
  readonly weps = new Map<string, WorkloadEndpoint>();
  readonly profiles: string[] = [];
  readonly statuses = new Map<string, string>();
  failPut: Error | undefined;

  async get(ns: string, name: string) {
    return this.weps.get(`${ns}/${name}`);
  }
  async put(wep: WorkloadEndpoint) {
    if (this.failPut) throw this.failPut;
    this.weps.set(`${wep.metadata.namespace}/${wep.metadata.name}`, wep);
  }
  async delete(ns: string, name: string) {
    return this.weps.delete(`${ns}/${name}`);
  }
  async listForNode(node: string) {
    return [...this.weps.values()].filter((w) => w.spec?.node === node);
  }
  async ensureProfile(p: { metadata: { name: string } }) {
    if (!this.profiles.includes(p.metadata.name)) this.profiles.push(p.metadata.name);
  }
  async status(node: string, ns: string, name: string) {
    return this.statuses.get(`${node}/${ns}/${name}`);
  }
}

export function fakeBackend(ipam = new FakeIpam(), endpoints = new FakeEndpoints(), reachable = true): Backend & { ipam: FakeIpam; endpoints: FakeEndpoints } {
  return {
    ipam,
    endpoints,
    async ping() {
      if (!reachable) throw new Error('connect ECONNREFUSED 127.0.0.1:2379');
    },
    async close() {},
  };
}

interface FakeLink {
  ns: string; // 'host' or a netns path
  name: string;
  mac: string;
  up: boolean;
  peer?: FakeLink;
  addrs: string[];
  routes: { dst: string; gateway?: string; v6?: boolean }[];
}

/** A CommandRunner that understands just the `ip` commands src/cni/veth.ts issues. */
export class FakeIp implements CommandRunner {
  readonly commands: string[] = [];
  readonly links: FakeLink[] = [];
  readonly netns = new Set<string>();
  readonly sysctls: [string, string][] = [];
  /** Commands matching this fail with `RTNETLINK answers: Operation not permitted`. */
  failOn: RegExp | undefined;
  #macs = 0;

  readonly sys: HostSys = {
    writeSysctl: async (path, value) => {
      this.sysctls.push([path, value]);
    },
    pathExists: async (path) => this.netns.has(path),
    pid: 4242,
  };

  find(ns: string, name: string): FakeLink | undefined {
    return this.links.find((l) => l.ns === ns && l.name === name);
  }

  #fail(cmd: string, args: string[], stderr: string): never {
    throw new CommandError({ command: cmd, args, exitCode: 1, signal: null, stdout: '', stderr, timedOut: false });
  }

  async run(cmd: string, args: string[], stdin?: string): Promise<CommandResult> {
    let ns = 'host';
    let ipArgs = args;
    if (cmd === 'nsenter') {
      ns = args[0].slice('--net='.length);
      ipArgs = args.slice(2);
      if (!this.netns.has(ns)) this.#fail(cmd, args, `nsenter: cannot open ${ns}: No such file or directory`);
    }
    const line = `${ns === 'host' ? '' : `[${ns}] `}ip ${ipArgs.join(' ')}${stdin ? ` <<< ${stdin.trim().replace(/\n/g, ' ; ')}` : ''}`;
    this.commands.push(line);
    if (this.failOn?.test(line)) this.#fail(cmd, args, 'RTNETLINK answers: Operation not permitted');
    if (ipArgs[0] === '-batch') {
      for (const l of (stdin ?? '').split('\n').filter(Boolean)) this.#one(ns, l.split(' '), cmd, args);
      return { stdout: '', stderr: '' };
    }
    return { stdout: this.#one(ns, ipArgs, cmd, args), stderr: '' };
  }

  #one(ns: string, a: string[], cmd: string, args: string[]): string {
    let v6 = false;
    while (a[0] === '-6' || a[0] === '-j') {
      if (a[0] === '-6') v6 = true;
      a = a.slice(1);
    }
    const dev = (): FakeLink => {
      const name = a[a.indexOf('dev') + 1];
      const l = this.find(ns, name);
      if (!l) this.#fail(cmd, args, `Cannot find device "${name}"`);
      return l;
    };
    const [obj, verb] = a;
    if (obj === 'link' && verb === 'show') {
      const l = dev();
      return JSON.stringify([{ ifname: l.name, address: l.mac, flags: l.up ? ['BROADCAST', 'UP'] : ['BROADCAST'] }]);
    }
    if (obj === 'link' && verb === 'add') {
      const name = a[2];
      const peerName = a[a.indexOf('peer') + 2];
      if (this.find(ns, name) || this.find('host', peerName)) this.#fail(cmd, args, 'RTNETLINK answers: File exists');
      const c: FakeLink = { ns, name, mac: `02:00:00:00:00:${(++this.#macs).toString(16).padStart(2, '0')}`, up: false, addrs: [], routes: [] };
      const h: FakeLink = { ns: 'host', name: peerName, mac: `02:00:00:00:01:${this.#macs.toString(16).padStart(2, '0')}`, up: false, addrs: [], routes: [], peer: c };
      c.peer = h;
      this.links.push(c, h);
      return '';
    }
    if (obj === 'link' && verb === 'set') {
      const l = dev();
      if (a.includes('address')) l.mac = a[a.indexOf('address') + 1];
      if (a.includes('up')) l.up = true;
      return '';
    }
    if (obj === 'link' && verb === 'del') {
      const l = dev();
      for (const x of [l, l.peer]) if (x) this.links.splice(this.links.indexOf(x), 1);
      return '';
    }
    if (obj === 'addr' && verb === 'add') {
      dev().addrs.push(a[2]);
      return '';
    }
    if (obj === 'addr' && verb === 'show') {
      const l = dev();
      return JSON.stringify([{ ifname: l.name, addr_info: l.addrs.map((x) => ({ local: x.split('/')[0], prefixlen: Number(x.split('/')[1]) })) }]);
    }
    if (obj === 'route' && (verb === 'add' || verb === 'replace')) {
      const l = dev();
      const gw = a.includes('via') ? a[a.indexOf('via') + 1] : undefined;
      const dst = a[2] === '::/0' ? 'default' : a[2];
      l.routes.push({ dst, gateway: gw, v6: v6 || a[2].includes(':') || Boolean(gw?.includes(':')) });
      return '';
    }
    if (obj === 'route' && verb === 'show') {
      return JSON.stringify(dev().routes.filter((r) => Boolean(r.v6) === v6).map((r) => ({ dst: r.dst, gateway: r.gateway })));
    }
    if (obj === 'neigh') return '';
    this.#fail(cmd, args, `fake ip: unsupported ${a.join(' ')}`);
  }
}
