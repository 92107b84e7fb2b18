/**
 * The composition root of the binary: dispatch() picks the role, and the role's module is loaded
 * only when that role runs (esbuild turns these dynamic imports into lazy initialisers in the
 * CommonJS bundle, so `routecat version` never pays for gRPC or etcd).
 */
import { VERSION } from '../version.ts';
import { RoutecatError, errorMessage } from '../errors.ts';
import { paramsFor } from '../config/params.ts';
import { dispatch, type RoleCommand } from './dispatch.ts';
import { describeParam } from './options.ts';

export interface Io {
  out(text: string): void;
  err(text: string): void;
  readStdin(): Promise<string>;
}

export type RoleRunner = (args: readonly string[], env: Record<string, string | undefined>, io: Io) => Promise<number>;

const ROLE_SUMMARIES: ReadonlyArray<[string, string]> = [
  ['node', 'host agent (Felix) and BGP speaker, on every compute host'],
  ['reflector', 'BGP route reflector, no data plane'],
  ['proxy', 'etcd v3 proxy cache, one per host'],
  ['cni', 'CNI plugin (chosen automatically when CNI_COMMAND is set)'],
  ['ctl', 'admin CLI: apply, create, replace, delete, get, validate'],
  ['status', 'BGP peers and agent state of this host'],
  ['version', 'print the version'],
];

export function topLevelHelp(): string {
  const common = paramsFor('ctl').filter((p) => p.roles === 'all');
  const lines = [
    `routecat ${VERSION}: pure layer-3 networking for VMs and containers (Calico's architecture, one binary)`,
    '',
    'Usage: routecat <role> [options]',
    '',
    'Roles:',
    ...ROLE_SUMMARIES.map(([r, s]) => `  ${r.padEnd(10)} ${s}`),
    '',
    'Options every role takes:',
    ...common.map((p) => `  --${p.flag.padEnd(20)} ${describeParam(p)}`),
    `  --${'print-config'.padEnd(20)} print every value with the source that set it, and exit`,
    '',
    "Run 'routecat <role> --help' for the role's own options.",
  ];
  return lines.join('\n');
}

const CNI_HELP = `routecat cni: the CNI plugin (CNI 0.3.0 to 1.1.0) with block IPAM.

A container runtime runs it, not a person: install the binary as /opt/cni/bin/routecat (and
link it as /opt/cni/bin/routecat-ipam); the runtime sets CNI_COMMAND (ADD, DEL, CHECK, STATUS,
VERSION), CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME and CNI_PATH, and passes the network
configuration as JSON on stdin. Settings come from that JSON, not from flags:
  etcd_endpoints, etcd_ca_cert_file, etcd_cert_file, etcd_key_file, nodename, mtu,
  policy_setup_timeout_seconds, log_level, ipam { type: routecat-ipam, assign_ipv4, assign_ipv6,
  ipv4_pools, ipv6_pools }.
See docs/reference.md and docs/architecture.md (a new workload).`;

async function loadRunner(role: RoleCommand): Promise<RoleRunner | undefined> {
  switch (role) {
    case 'version':
      return async (_args, _env, io) => {
        io.out(`routecat ${VERSION} (node ${process.versions.node})`);
        return 0;
      };
    case 'ctl':
      return (await import('./ctl.ts')).runCtl;
    case 'status':
      return (await import('./status.ts')).runStatus;
    case 'node':
      return (await import('../agent/node-role.ts')).runNodeRole;
    case 'reflector':
      return (await import('../reflector/role.ts')).runReflectorRole;
    case 'proxy':
      return (await import('../proxy/role.ts')).runProxyRole;
    case 'cni': {
      const { runCni } = await import('../cni/plugin.ts');
      return async (args, env, io) => {
        if (args.includes('--help') || args.includes('-h')) {
          io.out(CNI_HELP);
          return 0;
        }
        return runCni(env, await io.readStdin(), io.out);
      };
    }
    case 'ipam': {
      const { runIpamPlugin } = await import('../cni/ipam-plugin.ts');
      return async (_args, env, io) => runIpamPlugin(env, await io.readStdin(), io.out);
    }
    default:
      return (await import('./pending-roles.ts')).pendingRunner(role);
  }
}

export async function main(argv: readonly string[], env: Record<string, string | undefined>, io: Io): Promise<number> {
  const d = dispatch(argv, env);
  if (d.kind === 'help') {
    io.out(topLevelHelp());
    return 0;
  }
  if (d.kind === 'error') {
    io.err(`routecat: ${d.message}`);
    return d.exitCode;
  }
  try {
    const runner = await loadRunner(d.role);
    if (!runner) {
      io.err(`routecat ${d.role}: not implemented yet`);
      return 2;
    }
    return await runner(d.args, env, io);
  } catch (err) {
    if (err instanceof RoutecatError && err.code === 'E_USAGE') {
      io.err(`routecat ${d.role}: ${err.message}`);
      return 2;
    }
    io.err(`routecat ${d.role}: ${errorMessage(err)}`);
    return 1;
  }
}
