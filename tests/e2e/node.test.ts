/**
 * `routecat node` end to end, under both ACL backends: two hosts (network namespaces on one
 * fabric, static routes between their workload blocks), five workloads wired as Calico's CNI
 * leaves them, the agent running in each host against a real etcd. Every check is a real packet.
 */
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { NodeLab, type Workload } from '../helpers/node-lab.ts';
import type { LabProcess } from '../helpers/netns.ts';
import { main } from '../../src/cli/main.ts';

/** `routecat ctl explain` against the lab's etcd: exit code and text. */
async function explain(lab: NodeLab, ...args: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const code = await main(['routecat', 'ctl', 'explain', ...args], { ETCD_ENDPOINTS: lab.etcd.endpoint }, {
    out: (t) => (out += `${t}\n`),
    err: (t) => (err += `${t}\n`),
    readStdin: async () => '',
  });
  return { code, out, err };
}

const profile = (tenant: string) => ({
  apiVersion: 'projectcalico.org/v3',
  kind: 'Profile',
  metadata: { name: `tenant-${tenant}` },
  spec: {
    ingress: [{ action: 'Allow', source: { selector: `tenant == '${tenant}'` } }],
    egress: [{ action: 'Allow' }],
  },
});

for (const dataplane of ['iptables', 'nftables'] as const) {
  describe(`node agent, ${dataplane} dataplane`, { concurrency: 1 }, () => {
    let lab: NodeLab;
    let w: (name: string) => Workload;
    const listeners: LabProcess[] = [];

    before(async () => {
      lab = await NodeLab.create(dataplane === 'iptables' ? 'rcnodei' : 'rcnoden', dataplane);
      w = (n) => lab.workloads.get(n)!;
      await lab.addHosts([
        { name: 'h1', ip: '172.31.0.1', ip6: 'fd00:31::1', block: '10.65.1.0/24', block6: 'fd00:65:1::/64' },
        { name: 'h2', ip: '172.31.0.2', ip6: 'fd00:31::2', block: '10.65.2.0/24', block6: 'fd00:65:2::/64' },
      ]);
      await lab.apply(profile('a'));
      await lab.apply(profile('b'));
      await lab.addWorkload({ name: 'a1', host: 'h1', ipv4: '10.65.1.2', ipv6: 'fd00:65:1::2', labels: { tenant: 'a', app: 'client' }, profiles: ['tenant-a'] });
      await lab.addWorkload({ name: 'a3', host: 'h1', ipv4: '10.65.1.4', labels: { tenant: 'a' }, profiles: ['tenant-a'] });
      await lab.addWorkload({ name: 'b1', host: 'h1', ipv4: '10.65.1.3', labels: { tenant: 'b' }, profiles: ['tenant-b'] });
      await lab.addWorkload({ name: 'a2', host: 'h2', ipv4: '10.65.2.2', ipv6: 'fd00:65:2::2', labels: { tenant: 'a' }, profiles: ['tenant-a'] });
      await lab.addWorkload({ name: 'b2', host: 'h2', ipv4: '10.65.2.3', labels: { tenant: 'b' }, profiles: ['tenant-b'] });
      for (const wl of lab.workloads.values()) listeners.push(lab.listen(wl.ns, [22, 80, 8080]));
      listeners.push(lab.listen(lab.hosts.get('h2')!.ns, [8081, 8082]));
      await Promise.all(listeners.map((l) => l.waitFor(/listening/, 10_000)));
      lab.startAgent('h1');
      lab.startAgent('h2');
      await lab.waitApplied('0', 30_000);
    });

    after(async () => {
      await lab?.cleanup();
    });

    test('routes: a /32 per local workload via its interface with our protocol; proxy ARP on', async () => {
      const h1 = lab.hosts.get('h1')!;
      const routes = await lab.lab.must(h1.ns, 'ip', ['-4', 'route', 'show', 'proto', '192']);
      assert.match(routes, /10\.65\.1\.2 dev calia1 scope link/);
      assert.match(routes, /10\.65\.1\.3 dev calib1 scope link/);
      assert.doesNotMatch(routes, /10\.65\.2\./, 'remote workloads are not routed by the agent');
      const v6 = await lab.lab.must(h1.ns, 'ip', ['-6', 'route', 'show', 'proto', '192']);
      assert.match(v6, /fd00:65:1::2 dev calia1/);
      const proxyArp = await lab.lab.must(h1.ns, 'cat', ['/proc/sys/net/ipv4/conf/calia1/proxy_arp']);
      assert.equal(proxyArp.trim(), '1');
      const static4 = await lab.lab.must(h1.ns, 'ip', ['-4', 'route', 'show', '10.65.2.0/24']);
      assert.match(static4, /via 172\.31\.0\.2/, 'foreign (static) routes are untouched');
    });

    test('profiles: same-host and cross-host traffic within a tenant flows; tenants are isolated', async () => {
      assert.ok(await lab.eventually(() => lab.ping('a1', '10.65.1.4')), 'a1 -> a3 (same host) ping');
      assert.ok(await lab.eventually(() => lab.ping('a1', '10.65.2.2')), 'a1 -> a2 (cross host) ping');
      assert.ok(await lab.eventually(() => lab.tcp(w('a1').ns, '10.65.2.2', 80)), 'a1 -> a2:80');
      assert.ok(await lab.eventually(() => lab.tcp(w('b1').ns, '10.65.2.3', 22)), 'b1 -> b2:22');
      assert.equal(await lab.ping('a1', '10.65.1.3'), false, 'a1 -> b1 must be refused');
      assert.equal(await lab.tcp(w('a1').ns, '10.65.2.3', 80), false, 'a1 -> b2:80 must be refused');
      assert.equal(await lab.ping('b2', '10.65.2.2'), false, 'b2 -> a2 must be refused');
    });

    test('IPv6 between two workloads on different hosts', async () => {
      assert.ok(await lab.eventually(() => lab.ping('a1', 'fd00:65:2::2', { v6: true })), 'a1 -> a2 over IPv6');
      assert.ok(await lab.eventually(() => lab.tcp(w('a1').ns, 'fd00:65:2::2', 80)), 'a1 -> [a2]:80');
    });

    test('tiers: a GlobalNetworkPolicy allows only TCP 80 from tenant a to tenant b; 22 is refused', async () => {
      await lab.apply({ apiVersion: 'projectcalico.org/v3', kind: 'Tier', metadata: { name: 'security' }, spec: { order: 100 } });
      const rev = await lab.apply({
        apiVersion: 'projectcalico.org/v3',
        kind: 'GlobalNetworkPolicy',
        metadata: { name: 'security.web-only' },
        spec: {
          tier: 'security',
          order: 10,
          selector: "tenant == 'b'",
          types: ['Ingress'],
          ingress: [{ action: 'Allow', protocol: 'TCP', source: { selector: "tenant == 'a'" }, destination: { ports: [80] } }],
        },
      });
      await lab.waitApplied(rev);
      assert.ok(await lab.eventually(() => lab.tcp(w('a1').ns, '10.65.2.3', 80)), 'a1 -> b2:80 allowed by the tiered policy');
      assert.equal(await lab.tcp(w('a1').ns, '10.65.2.3', 22), false, 'a1 -> b2:22 refused (end of tier)');
      assert.equal(await lab.tcp(w('b1').ns, '10.65.2.3', 22), false, 'b1 -> b2:22 refused too: the tier applies to b2, its profile is not reached');

      // explain agrees with the packets, and names what decided.
      const ok = await explain(lab, 'demo/a1', 'demo/b2', '-p', 'tcp', '--port', '80');
      assert.equal(ok.code, 0, ok.err);
      assert.match(ok.out, /^ALLOW\s+tcp 10\.65\.1\.2 -> 10\.65\.2\.3:80/);
      assert.match(ok.out, /egress at node h1, endpoint wep\/demo\/a1: ALLOW/);
      assert.match(ok.out, /ingress at node h2, endpoint wep\/demo\/b2: ALLOW[\s\S]*tier security \/ gnp\/security\.web-only \/ rule 0: allow/);
      const no = await explain(lab, '10.65.1.2', 'demo/b2', '-p', 'tcp', '--port', '22');
      assert.equal(no.code, 0, no.err);
      assert.match(no.out, /^DENY/);
      assert.match(no.out, /tier security.*end-of-tier/);
      const json = JSON.parse((await explain(lab, 'demo/b1', 'demo/b2', '--port', '22', '-o', 'json')).out);
      assert.equal(json.verdict, 'deny');
      assert.equal(json.ingress.node, 'h2');
    });

    test('Pass hands the decision to the next tier; passing the last tier falls to the profiles', async () => {
      let rev = await lab.apply({
        apiVersion: 'projectcalico.org/v3',
        kind: 'GlobalNetworkPolicy',
        metadata: { name: 'security.pass-8080' },
        spec: { tier: 'security', order: 5, selector: "tenant == 'b'", types: ['Ingress'], ingress: [{ action: 'Pass', protocol: 'TCP', destination: { ports: [8080] } }] },
      });
      rev = await lab.apply({
        apiVersion: 'projectcalico.org/v3',
        kind: 'GlobalNetworkPolicy',
        metadata: { name: 'default.allow-8080' },
        spec: { selector: "tenant == 'b'", types: ['Ingress'], ingress: [{ action: 'Allow', protocol: 'TCP', destination: { ports: [8080] } }] },
      });
      await lab.waitApplied(rev);
      assert.ok(await lab.eventually(() => lab.tcp(w('a1').ns, '10.65.2.3', 8080)), 'passed by security, allowed by default tier');
      rev = await lab.remove('gnp', 'default.allow-8080');
      await lab.waitApplied(rev);
      assert.equal(await lab.tcp(w('a1').ns, '10.65.2.3', 8080), false, 'passed to the profile of tenant b, which refuses tenant a');
      assert.ok(await lab.eventually(() => lab.tcp(w('b1').ns, '10.65.2.3', 8080)), 'tenant b profile still admits b1 on 8080');
      await lab.remove('gnp', 'security.pass-8080');
      rev = await lab.remove('gnp', 'security.web-only');
      await lab.waitApplied(rev);
      assert.ok(await lab.eventually(() => lab.tcp(w('b1').ns, '10.65.2.3', 22)), 'without the tier, the profile admits b1:22 again');
    });

    test('egress: a workload allowed out only to one external IP and port', async () => {
      const rev = await lab.apply({
        apiVersion: 'projectcalico.org/v3',
        kind: 'GlobalNetworkPolicy',
        metadata: { name: 'default.client-egress' },
        spec: { selector: "app == 'client'", types: ['Egress'], egress: [{ action: 'Allow', protocol: 'TCP', destination: { nets: ['172.31.0.2/32'], ports: [8081] } }] },
      });
      await lab.waitApplied(rev);
      assert.ok(await lab.eventually(() => lab.tcp(w('a1').ns, '172.31.0.2', 8081)), 'a1 -> 172.31.0.2:8081 allowed');
      assert.equal(await lab.tcp(w('a1').ns, '172.31.0.2', 8082), false, 'other port refused');
      assert.equal(await lab.ping('a1', '10.65.1.4'), false, 'everything else refused, even its own tenant');
      const del = await lab.remove('gnp', 'default.client-egress');
      await lab.waitApplied(del);
      assert.ok(await lab.eventually(() => lab.ping('a1', '10.65.1.4')), 'back to the profile once the policy goes');
    });

    test('bookended: a policy at either end alone blocks the flow', async () => {
      // Egress side only (on h1): a1 may not talk to a2; a2's ingress would allow it.
      let rev = await lab.apply({
        apiVersion: 'projectcalico.org/v3',
        kind: 'NetworkPolicy',
        metadata: { name: 'no-a2', namespace: 'demo' },
        spec: { selector: "app == 'client'", types: ['Egress'], egress: [{ action: 'Deny', destination: { nets: ['10.65.2.2/32'] } }, { action: 'Allow' }] },
      });
      await lab.waitApplied(rev);
      assert.equal(await lab.ping('a1', '10.65.2.2'), false, 'dropped at the sending host');
      assert.ok(await lab.eventually(() => lab.ping('a1', '10.65.1.4')), 'the rest of a1 egress still flows');
      rev = await lab.remove('np', 'no-a2', 'demo');
      // Ingress side only (on h2): a2 refuses a1; a1's egress allows everything.
      rev = await lab.apply({
        apiVersion: 'projectcalico.org/v3',
        kind: 'NetworkPolicy',
        metadata: { name: 'a2-not-from-a1', namespace: 'demo' },
        spec: { selector: "tenant == 'a' && !has(app)", types: ['Ingress'], ingress: [{ action: 'Deny', source: { selector: "app == 'client'" } }, { action: 'Allow' }] },
      });
      await lab.waitApplied(rev);
      assert.equal(await lab.ping('a1', '10.65.2.2'), false, 'dropped at the receiving host');
      assert.ok(await lab.eventually(() => lab.ping('a3', '10.65.2.2')), 'a3 -> a2 still allowed');
      rev = await lab.remove('np', 'a2-not-from-a1', 'demo');
      await lab.waitApplied(rev);
      assert.ok(await lab.eventually(() => lab.ping('a1', '10.65.2.2')));
    });

    test('anti-spoofing: a workload cannot send from an address that is not its own', async () => {
      await lab.lab.must(w('a3').ns, 'ip', ['addr', 'add', '10.65.1.99/32', 'dev', 'eth0']);
      try {
        assert.ok(await lab.eventually(() => lab.ping('a3', '10.65.1.2')), 'a3 from its own address');
        assert.equal(await lab.ping('a3', '10.65.1.2', { source: '10.65.1.99' }), false, 'spoofed source dropped');
      } finally {
        await lab.lab.must(w('a3').ns, 'ip', ['addr', 'del', '10.65.1.99/32', 'dev', 'eth0']);
      }
    });

    test('fail closed: an interface with our prefix but no endpoint gets no traffic through', async () => {
      const h1 = lab.hosts.get('h1')!;
      const rogue = await lab.lab.addNs('rogue');
      await lab.lab.veth(h1.ns, 'calirogue', rogue, 'eth0');
      await lab.lab.sh(h1.ns, 'ip link set calirogue address ee:ee:ee:ee:ee:ee && ip link set calirogue up && sysctl -qw net.ipv4.conf.calirogue.proxy_arp=1 && ip route add 10.65.1.50/32 dev calirogue');
      await lab.lab.sh(rogue, 'ip link set eth0 up && ip addr add 10.65.1.50/32 dev eth0 && ip route add 169.254.1.1 dev eth0 scope link && ip route add default via 169.254.1.1 && ip neigh add 169.254.1.1 lladdr ee:ee:ee:ee:ee:ee dev eth0 nud permanent');
      const r1 = await lab.lab.exec(rogue, 'ping', ['-c', '1', '-W', '1', '10.65.1.4'], { timeoutMs: 5_000 });
      assert.notEqual(r1.code, 0, 'rogue -> a3 dropped');
      assert.equal(await lab.ping('a3', '10.65.1.50'), false, 'a3 -> rogue dropped');
      const routes = await lab.lab.must(h1.ns, 'ip', ['-4', 'route', 'show', '10.65.1.50/32']);
      assert.match(routes, /calirogue/, 'a route that is not ours is left alone');
    });

    test('bad data in etcd is reported with its key and skipped; the host keeps working', async () => {
      const key = '/calico/resources/v3/projectcalico.org/globalnetworkpolicies/default.broken';
      const put = await lab.client.put(key).value('{"kind":"GlobalNetworkPolicy","metadata":{"name":"default.broken"},"spec":{"selector":"tenant ==="}}').exec();
      await lab.waitApplied(put.header.revision);
      const s = await lab.status('h1');
      const problems = (s?.problems ?? []) as Array<{ key: string; reason: string }>;
      assert.ok(problems.some((p) => p.key === key), `status names the bad key: ${JSON.stringify(problems)}`);
      assert.ok(await lab.eventually(() => lab.ping('a1', '10.65.2.2')), 'traffic unaffected');
      const del = await lab.client.delete().key(key).exec();
      await lab.waitApplied(del.header.revision);
    });

    test('reporting: Felix status keys and endpoint status in etcd, metrics on 9091, status over the control socket', async () => {
      const deadline = Date.now() + 10_000;
      let status: string | null = null;
      let ep: string | null = null;
      while (Date.now() < deadline && !(status && ep)) {
        status = await lab.client.get('/calico/felix/v2/no-region/host/h1/status').string();
        ep = await lab.client.get('/calico/felix/v2/no-region/host/h1/workload/demo/a1/endpoint').string();
        if (!(status && ep)) await new Promise((r) => setTimeout(r, 200));
      }
      assert.ok(status, 'felix status key written');
      assert.ok(JSON.parse(status!).time);
      assert.deepEqual(JSON.parse(ep ?? '{}'), { status: 'up' });
      const h1 = lab.hosts.get('h1')!;
      const metrics = await lab.lab.sh(h1.ns, 'exec 3<>/dev/tcp/127.0.0.1/9091; printf "GET /metrics HTTP/1.0\\r\\n\\r\\n" >&3; cat <&3');
      assert.match(metrics, /^routecat_routes_programmed \d+/m);
      assert.match(metrics, /^routecat_datastore_in_sync 1/m);
      const ready = await lab.lab.sh(h1.ns, 'exec 3<>/dev/tcp/127.0.0.1/9099; printf "GET /readiness HTTP/1.0\\r\\n\\r\\n" >&3; cat <&3');
      assert.match(ready, /^HTTP\/1\.[01] 200/);
      const s = await lab.status('h1');
      assert.equal(s?.node, 'h1');
      assert.equal((s?.endpoints as unknown[]).length, 3);
    });

    test('drift: a route deleted by hand is put back within seconds', async () => {
      const h1 = lab.hosts.get('h1')!;
      await lab.lab.must(h1.ns, 'ip', ['route', 'del', '10.65.1.4/32']);
      const deadline = Date.now() + 5_000;
      let back = false;
      while (Date.now() < deadline && !back) {
        back = /10\.65\.1\.4 dev calia3/.test(await lab.lab.must(h1.ns, 'ip', ['-4', 'route', 'show', 'proto', '192']));
        if (!back) await new Promise((r) => setTimeout(r, 100));
      }
      assert.ok(back, 'route repaired');
      assert.ok(await lab.eventually(() => lab.ping('a1', '10.65.1.4')));
    });

    test('drift: ACL state removed by hand is restored by the periodic re-read', async () => {
      const h1 = lab.hosts.get('h1')!;
      if (dataplane === 'nftables') await lab.lab.must(h1.ns, 'nft', ['delete', 'table', 'inet', 'routecat']);
      else await lab.lab.sh(h1.ns, 'iptables-save -t filter | grep -- "-A FORWARD .*routecat" | head -1 | sed "s/^-A/-D/" | xargs -r iptables -w -t filter');
      // With our ACLs gone, b1 could reach a1; the agent must put them back.
      const deadline = Date.now() + 8_000;
      let restored = false;
      while (Date.now() < deadline && !restored) {
        restored = !(await lab.ping('b1', '10.65.1.2'));
        if (!restored) await new Promise((r) => setTimeout(r, 200));
      }
      assert.ok(restored, 'isolation restored');
      assert.ok(await lab.eventually(() => lab.ping('a3', '10.65.1.2')), 'allowed traffic still flows');
    });

    test('restart: the agent restarts under a running ping and no reply is lost', async () => {
      const ping = lab.lab.spawn(w('a1').ns, 'ping', ['-i', '0.1', '-c', '50', '10.65.2.2']);
      await new Promise((r) => setTimeout(r, 500));
      await lab.stopAgent('h1');
      lab.startAgent('h1');
      await lab.waitApplied('0', 30_000);
      await new Promise<void>((resolve) => {
        if (ping.child.exitCode !== null) return resolve();
        ping.child.once('exit', () => resolve());
        setTimeout(resolve, 15_000);
      });
      const out = ping.output();
      assert.match(out, /50 packets transmitted, 50 received/, out.slice(-300));
    });

    test('workload to its own host: dropped by default; --default-endpoint-to-host-action accept lets it in', async () => {
      const h1 = lab.hosts.get('h1')!;
      const hostListener = lab.listen(h1.ns, [8083]);
      listeners.push(hostListener);
      await hostListener.waitFor(/listening/, 10_000);
      assert.equal(await lab.tcp(w('a1').ns, h1.ip, 8083), false, 'Calico\'s default: a workload cannot reach its host');
      await lab.stopAgent('h1');
      lab.startAgent('h1', ['--default-endpoint-to-host-action', 'accept']);
      await lab.waitApplied('0', 30_000);
      assert.ok(await lab.eventually(() => lab.tcp(w('a1').ns, h1.ip, 8083)), 'accepted after the workload\'s egress policy');
      await lab.stopAgent('h1');
      lab.startAgent('h1');
      await lab.waitApplied('0', 30_000);
      assert.equal(await lab.tcp(w('a1').ns, h1.ip, 8083), false, 'and dropped again with the default');
    });
  });
}
