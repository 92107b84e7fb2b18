/**
 * The multi-host lab of `bash scripts/demo`: three hosts (network namespaces on one bridged
 * fabric, never the machine's own network) each running the one binary as `routecat node`
 * against a throwaway etcd, with workloads wired as the CNI plugin leaves them. Nothing routes
 * between the hosts but BGP: the demo shows the learned routes, the BGP peers, real pings and a
 * traceroute along the real path, and policy deciding a flow (with `routecat ctl explain`).
 *
 *   node --import tsx scripts/demo-lab.ts [--dataplane iptables|nftables] [--binary dist/routecat]
 *
 * Everything it creates it deletes on exit, also on failure or Ctrl-C.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { parseAllDocuments } from 'yaml';
import { NodeLab, type HostDef } from '../tests/helpers/node-lab.ts';

const ROOT = resolve(import.meta.dirname, '..');
const { values: opts } = parseArgs({
  options: {
    dataplane: { type: 'string', default: 'nftables' },
    binary: { type: 'string', default: join(ROOT, 'dist/routecat') },
  },
});
const dataplane = opts.dataplane === 'iptables' ? 'iptables' : 'nftables';
const bin = resolve(opts.binary!);
if (!existsSync(bin)) throw new Error(`${bin} not found: run npm run build first`);

const HOSTS: HostDef[] = [
  { name: 'host1', ip: '10.0.0.1', ip6: 'fd00:a::1', block: '10.65.1.0/24', block6: 'fd00:65:1::/64' },
  { name: 'host2', ip: '10.0.0.2', ip6: 'fd00:a::2', block: '10.65.2.0/24', block6: 'fd00:65:2::/64' },
  { name: 'host3', ip: '10.0.0.3', ip6: 'fd00:a::3', block: '10.65.3.0/24', block6: 'fd00:65:3::/64' },
];

function say(title: string): void {
  console.log(`\n== ${title}`);
}

async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

const lab = await NodeLab.create('rcdemo', dataplane);
let interrupted = false;
const onSignal = () => {
  interrupted = true;
  void lab.cleanup().finally(() => process.exit(130));
};
process.once('SIGINT', onSignal);
process.once('SIGTERM', onSignal);

try {
  say(`etcd at ${lab.etcd.endpoint}; applying examples/*.yaml (pools, BGP mesh, tenants, tiered policy)`);
  for (const f of ['pools.yaml', 'bgp.yaml', 'tenants.yaml', 'policy.yaml']) {
    for (const doc of parseAllDocuments(readFileSync(join(ROOT, 'examples', f), 'utf8'))) await lab.apply(doc.toJS());
  }

  say('three hosts on one fabric (10.0.0.0/24), no static routes; `routecat node` in each');
  await lab.addHosts(HOSTS, { staticRoutes: false });
  for (const h of lab.hosts.values()) {
    h.agent = lab.lab.spawn(h.ns, bin, [
      'node', '--name', h.name, '--ip', h.ip, '--ip6', h.ip6,
      '--etcd-endpoints', lab.etcd.unixEndpoint, '--dataplane', dataplane, '--run-dir', h.runDir,
      '--health-port', '0', '--metrics-port', '0', '--log-level', 'warn',
    ]);
  }
  const wl = [
    { name: 'red-web', host: 'host1', ipv4: '10.65.1.10', ipv6: 'fd00:65:1::10', labels: { role: 'web' }, profiles: ['tenant-red'] },
    { name: 'red-db', host: 'host3', ipv4: '10.65.3.20', ipv6: 'fd00:65:3::20', labels: { role: 'db' }, profiles: ['tenant-red'] },
    { name: 'blue-app', host: 'host2', ipv4: '10.65.2.30', ipv6: 'fd00:65:2::30', labels: { role: 'app' }, profiles: ['tenant-blue'] },
  ];
  let rev = '0';
  for (const w of wl) rev = await lab.putWorkloadEndpoint(await lab.addWorkload(w)); // unchanged: its revision
  await lab.waitApplied(rev, 60_000);
  const h2 = lab.hosts.get('host2')!;
  await waitFor('host2 to learn both other hosts\' workload routes by BGP', async () => {
    const out = (await lab.lab.exec(h2.ns, 'ip', ['route', 'show', 'proto', '193'])).stdout;
    return out.includes('10.65.1.10') && out.includes('10.65.3.20');
  }, 60_000);

  say('host2\'s kernel: its own workload (proto 192, agent) and the others\' learned by BGP (proto 193)');
  console.log((await lab.lab.must(h2.ns, 'ip', ['route', 'show'])).trimEnd());
  console.log((await lab.lab.must(h2.ns, 'ip', ['-6', 'route', 'show', 'proto', '193'])).trimEnd());

  say('routecat status on host2 (peers of the node-to-node mesh)');
  console.log(execFileSync('ip', ['netns', 'exec', h2.ns, bin, 'status', '--run-dir', h2.runDir], { encoding: 'utf8' }).trimEnd());

  const red = lab.workloads.get('red-web')!;
  say('red-web (host1) -> red-db (host3): same tenant, across hosts, over the real path');
  console.log((await lab.lab.exec(red.ns, 'ping', ['-c', '2', '-W', '1', '10.65.3.20'])).stdout.trimEnd());
  console.log((await lab.lab.exec(red.ns, 'ping', ['-6', '-c', '1', '-W', '1', 'fd00:65:3::20'])).stdout.trimEnd());
  const tr = await lab.lab.exec(red.ns, 'traceroute', ['-n', '-q', '1', '-w', '1', '10.65.3.20'], { timeoutMs: 20_000 });
  console.log(tr.stdout.trimEnd() || tr.stderr.trimEnd());

  say('policy: blue-app may reach red-web on TCP 80 only (tier security), not on 22, and cannot ping it');
  const web = lab.listen(red.ns, [80, 22]);
  await web.waitFor(/listening/, 5_000);
  const blue = lab.workloads.get('blue-app')!;
  console.log(`  TCP 80: ${(await lab.eventually(() => lab.tcp(blue.ns, '10.65.1.10', 80))) ? 'connected' : 'refused'}`);
  console.log(`  TCP 22: ${(await lab.tcp(blue.ns, '10.65.1.10', 22)) ? 'connected' : 'dropped'}`);
  console.log(`  ping:   ${(await lab.ping('blue-app', '10.65.1.10')) ? 'answered' : 'dropped'}`);

  say('routecat ctl explain demo/blue-app demo/red-web --protocol tcp --port 22');
  const explain = execFileSync(bin, ['ctl', 'explain', 'demo/blue-app', 'demo/red-web', '--protocol', 'tcp', '--port', '22', '--etcd-endpoints', lab.etcd.endpoint], { encoding: 'utf8' });
  console.log(explain.trimEnd());
  console.log('\nDemo done: cleaning up the lab.');
} finally {
  if (!interrupted) await lab.cleanup();
}
