/**
 * A multi-host lab for the node agent: host namespaces joined by a veth "fabric" with static
 * routes between their workload blocks (until BGP does that), workloads wired as Calico's CNI
 * plugin leaves them (the agent does the rest: proxy ARP, forwarding, the /32 route, ACLs),
 * `routecat node` running inside each host namespace against a real etcd over its Unix socket,
 * and packet checks (ping, TCP connect) from inside the workloads.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { connectEtcd, type Etcd3 } from '../../src/datastore/etcd.ts';
import { ResourceStore } from '../../src/datastore/resource-store.ts';
import { resourceKey } from '../../src/datastore/keys.ts';
import { lookupKind } from '../../src/model/kinds.ts';
import { validateResource } from '../../src/model/validate.ts';
import { fetchControl } from '../../src/cli/status.ts';
import { createLab, type Lab, type LabProcess, HOST_VETH_MAC, HOST_LINK_LOCAL, GATEWAY_V4 } from './netns.ts';
import { startEtcd, type EtcdServer } from './etcd.ts';

export interface HostDef {
  readonly name: string;
  /** Fabric address (IPv4 /24 shared by all hosts) and IPv6 (/64). */
  readonly ip: string;
  readonly ip6: string;
  /** This host's workload block (a static route points here from the other hosts). */
  readonly block: string;
  readonly block6: string;
}

export interface WorkloadDef {
  readonly name: string;
  readonly host: string;
  readonly ipv4: string;
  readonly ipv6?: string;
  readonly labels: Record<string, string>;
  readonly profiles: string[];
  readonly namespace?: string;
}

export interface Host extends HostDef {
  readonly ns: string;
  readonly runDir: string;
  agent?: LabProcess;
}

export interface Workload extends WorkloadDef {
  readonly ns: string;
  readonly iface: string;
}

const ROOT = resolve(import.meta.dirname, '../..');

export function hostIface(name: string): string {
  return `cali${name}`.slice(0, 15);
}

export class NodeLab {
  readonly lab: Lab;
  readonly etcd: EtcdServer;
  readonly client: Etcd3;
  readonly store: ResourceStore;
  readonly hosts = new Map<string, Host>();
  readonly workloads = new Map<string, Workload>();
  readonly dataplane: 'iptables' | 'nftables';
  /** The bridge namespace of addHosts(). */
  fabricNs = '';
  readonly #tmp: string;

  private constructor(lab: Lab, etcd: EtcdServer, dataplane: 'iptables' | 'nftables') {
    this.lab = lab;
    this.etcd = etcd;
    this.dataplane = dataplane;
    this.client = connectEtcd({ endpoints: [etcd.endpoint] });
    this.store = new ResourceStore(this.client);
    this.#tmp = mkdtempSync(join(tmpdir(), 'routecat-nodelab-'));
  }

  static async create(prefix: string, dataplane: 'iptables' | 'nftables'): Promise<NodeLab> {
    const etcd = await startEtcd();
    return new NodeLab(createLab(prefix), etcd, dataplane);
  }

  /**
   * Host namespaces on one fabric segment, each routing the others' blocks statically (unless
   * `staticRoutes: false`: BGP's job then). The fabric namespace is `fabricNs` (for more hosts).
   */
  async addHosts(defs: readonly HostDef[], opts: { readonly staticRoutes?: boolean } = {}): Promise<void> {
    const fabric = await this.lab.addNs('fabric');
    this.fabricNs = fabric;
    await this.lab.sh(fabric, 'ip link add br0 type bridge && ip link set br0 up');
    for (const d of defs) {
      const ns = await this.lab.addNs(d.name);
      await this.lab.veth(ns, 'eth0', fabric, `p-${d.name}`);
      await this.lab.sh(fabric, `ip link set p-${d.name} master br0 && ip link set p-${d.name} up`);
      await this.lab.sh(ns, [
        'sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0 net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0',
        'sysctl -qw net.ipv6.conf.eth0.accept_dad=0',
        'ip link set eth0 up',
        `ip addr add ${d.ip}/24 dev eth0`,
        `ip -6 addr add ${d.ip6}/64 dev eth0 nodad`,
      ].join(' && '));
      this.hosts.set(d.name, { ...d, ns, runDir: join(this.#tmp, d.name) });
    }
    if (opts.staticRoutes === false) return;
    for (const h of this.hosts.values()) {
      for (const o of this.hosts.values()) {
        if (o === h) continue;
        await this.lab.sh(h.ns, `ip route add ${o.block} via ${o.ip} && ip -6 route add ${o.block6} via ${o.ip6}`);
      }
    }
  }

  /**
   * A workload namespace as the CNI plugin leaves it: veth with the host side named cali..., MAC
   * ee:ee:ee:ee:ee:ee and up; eth0 with /32 (/128), 169.254.1.1 as gateway with a permanent
   * neighbour entry. Nothing else on the host side: that is the agent's job. Also writes its
   * WorkloadEndpoint.
   */
  async addWorkload(def: WorkloadDef): Promise<Workload> {
    const host = this.hosts.get(def.host)!;
    const ns = await this.lab.addNs(def.name);
    const iface = hostIface(def.name);
    await this.lab.sh(ns, 'sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0');
    await this.lab.veth(host.ns, iface, ns, 'eth0');
    await this.lab.sh(host.ns, `ip link set ${iface} address ${HOST_VETH_MAC} && sysctl -qw net.ipv6.conf.${iface}.accept_dad=0 && ip link set ${iface} up`);
    await this.lab.sh(ns, [
      'ip link set eth0 up',
      `ip addr add ${def.ipv4}/32 dev eth0`,
      `ip route add ${GATEWAY_V4} dev eth0 scope link`,
      `ip route add default via ${GATEWAY_V4} dev eth0`,
      `ip neigh add ${GATEWAY_V4} lladdr ${HOST_VETH_MAC} dev eth0 nud permanent`,
      def.ipv6 ? `ip -6 addr add ${def.ipv6}/128 dev eth0 nodad` : 'true',
      def.ipv6 ? `ip -6 route add default via ${HOST_LINK_LOCAL} dev eth0` : 'true',
    ].join(' && '));
    const w: Workload = { ...def, ns, iface };
    this.workloads.set(def.name, w);
    await this.putWorkloadEndpoint(w);
    return w;
  }

  async putWorkloadEndpoint(w: Workload): Promise<string> {
    return this.apply({
      apiVersion: 'projectcalico.org/v3',
      kind: 'WorkloadEndpoint',
      metadata: { name: w.name, namespace: w.namespace ?? 'demo', labels: w.labels },
      spec: {
        node: w.host,
        orchestrator: 'k8s',
        workload: w.name,
        endpoint: 'eth0',
        interfaceName: w.iface,
        ipNetworks: [`${w.ipv4}/32`, ...(w.ipv6 ? [`${w.ipv6}/128`] : [])],
        profiles: w.profiles,
      },
    });
  }

  /** Validates and applies a resource; returns the etcd revision of the write. */
  async apply(doc: unknown): Promise<string> {
    const r = await this.store.apply(validateResource(doc));
    return r.resource.metadata.resourceVersion ?? '0';
  }

  async remove(kindName: string, name: string, namespace?: string): Promise<string> {
    const kind = lookupKind(kindName)!;
    // The delete's own revision: a later read could return a revision that only status writes
    // outside the resource prefix reached, which the agent never sees as applied.
    const r = await this.client.delete().key(resourceKey(kind, name, kind.namespaced ? (namespace ?? 'demo') : undefined)).exec();
    if (BigInt(r.deleted) === 0n) throw new Error(`${kindName} ${name} not found`);
    return r.header.revision;
  }

  /** A scratch directory of this lab (removed by cleanup()). */
  get tmpDir(): string {
    return this.#tmp;
  }

  /**
   * Starts (or restarts) `routecat node` inside the host's namespace; policy only (`--no-bgp`)
   * unless `bgp: true`.
   */
  startAgent(hostName: string, extra: readonly string[] = [], opts: { readonly bgp?: boolean } = {}): LabProcess {
    const h = this.hosts.get(hostName)!;
    h.agent = this.lab.spawn(h.ns, process.execPath, [
      '--import', 'tsx', join(ROOT, 'src/main.ts'), 'node',
      '--name', h.name,
      '--ip', h.ip,
      '--etcd-endpoints', this.etcd.unixEndpoint,
      '--dataplane', this.dataplane,
      '--run-dir', h.runDir,
      ...(opts.bgp ? [] : ['--no-bgp']),
      '--route-refresh-interval', '2s',
      '--iptables-refresh-interval', '2s',
      // Endpoint status must be written when an endpoint appears, not at the next interval: an
      // hour here makes every test that waits for "up" (the CNI plugin does) depend on that.
      '--reporting-interval', '1h',
      ...extra,
    ]);
    return h.agent;
  }

  /** Stops the agent: SIGTERM (SIGKILL after 10 s), or at once with `signal: 'SIGKILL'` (a crash). */
  async stopAgent(hostName: string, opts: { readonly signal?: 'SIGTERM' | 'SIGINT' | 'SIGKILL' } = {}): Promise<void> {
    const h = this.hosts.get(hostName)!;
    const a = h.agent;
    h.agent = undefined;
    if (!a) return;
    await new Promise<void>((resolveStop) => {
      const timer = setTimeout(() => {
        a.child.kill('SIGKILL');
      }, 10_000);
      a.child.once('exit', () => {
        clearTimeout(timer);
        resolveStop();
      });
      if (a.child.exitCode !== null) {
        clearTimeout(timer);
        resolveStop();
        return;
      }
      a.child.kill(opts.signal ?? 'SIGTERM');
    });
  }

  async status(hostName: string): Promise<Record<string, unknown> | undefined> {
    try {
      return (await fetchControl(this.hosts.get(hostName)!.runDir, '/status', 2_000)) as Record<string, unknown>;
    } catch {
      return undefined;
    }
  }

  /** Waits until every running agent is ready and has programmed revision `rev` (or later). */
  async waitApplied(rev = '0', timeoutMs = 20_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    const pending = () => [...this.hosts.values()].filter((h) => h.agent);
    for (;;) {
      const notYet: string[] = [];
      for (const h of pending()) {
        const s = await this.status(h.name);
        if (!s || s.ready !== true || BigInt(String(s.appliedRevision ?? '0')) < BigInt(rev)) notYet.push(`${h.name}: ${s ? `ready=${String(s.ready)} applied=${String(s.appliedRevision)}` : 'no status'}`);
      }
      if (notYet.length === 0) return;
      if (Date.now() > deadline) {
        const logs = pending().map((h) => `--- ${h.name} agent output (tail):\n${h.agent!.output().slice(-3000)}`).join('\n');
        throw new Error(`agents did not apply revision ${rev} within ${timeoutMs} ms: ${notYet.join('; ')}\n${logs}`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  async ping(from: string, to: string, opts: { v6?: boolean; source?: string } = {}): Promise<boolean> {
    const w = this.workloads.get(from)!;
    const args = [...(opts.v6 ? ['-6'] : []), '-c', '1', '-W', '1', ...(opts.source ? ['-I', opts.source] : []), to];
    const r = await this.lab.exec(w.ns, 'ping', args, { timeoutMs: 5_000 });
    return r.code === 0;
  }

  /** A TCP connect from a namespace (a workload's or a host's) with a 1.5 s limit. */
  async tcp(fromNs: string, ip: string, port: number): Promise<boolean> {
    const r = await this.lab.exec(fromNs, 'timeout', ['1.5', 'bash', '-c', `exec 3<>/dev/tcp/${ip}/${port}`], { timeoutMs: 5_000 });
    return r.code === 0;
  }

  /** Retries a positive check a few times (ARP, first packets) before calling it failed. */
  async eventually(check: () => Promise<boolean>, tries = 5): Promise<boolean> {
    for (let i = 0; i < tries; i++) {
      if (await check()) return true;
      await new Promise((r) => setTimeout(r, 300));
    }
    return false;
  }

  /** Listeners on the given TCP ports (IPv4 and IPv6) inside a namespace. */
  listen(ns: string, ports: readonly number[]): LabProcess {
    const script = `const net=require('net');for(const p of ${JSON.stringify(ports)}){net.createServer(s=>{s.on('error',()=>{});s.end('ok\\n')}).listen(p,'::')}console.log('listening')`;
    return this.lab.spawn(ns, process.execPath, ['-e', script]);
  }

  async cleanup(): Promise<void> {
    for (const h of this.hosts.keys()) await this.stopAgent(h).catch(() => {});
    await this.lab.cleanup();
    this.client.close();
    await this.etcd.cleanup();
    rmSync(this.#tmp, { recursive: true, force: true });
  }
}
