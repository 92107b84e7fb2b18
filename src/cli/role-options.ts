/**
 * Parses one role's command line with cac: declared parameters, `--help` (every option with its
 * env var and default) and `--print-config`. Returns the resolved configuration, or says the
 * caller should exit (help or print-config was served).
 */
import { cac } from 'cac';
import { UsageError } from '../errors.ts';
import type { Role } from '../config/params.ts';
import { formatConfig, type ResolvedConfig } from '../config/resolve.ts';
import { addParamOptions, loadConfig } from './options.ts';

export interface ParsedRole {
  readonly config: ResolvedConfig;
  readonly args: readonly string[];
  readonly options: Record<string, unknown>;
}

const SUMMARY: Record<Role, string> = {
  node: 'the host agent (Felix) and BGP speaker for a compute host',
  reflector: 'a BGP route reflector (RFC 4456) with no data plane',
  proxy: 'the etcd v3 proxy cache for this host',
  cni: 'the CNI plugin (normally run by a container runtime with CNI_COMMAND set)',
  ctl: 'the admin CLI',
  status: 'the BGP peers and agent state of this host',
};

/**
 * @returns the parsed role, or `undefined` when help or the configuration was printed and the
 * process should exit 0.
 */
export function parseRoleArgs(
  role: Role,
  args: readonly string[],
  env: Record<string, string | undefined>,
  out: (text: string) => void,
  extra?: (cli: ReturnType<typeof cac>) => void,
): ParsedRole | undefined {
  const cli = cac(`routecat ${role}`);
  cli.usage(`[options]\n\n  ${SUMMARY[role]}`);
  addParamOptions(cli, role);
  extra?.(cli);
  cli.help();
  let parsed;
  try {
    parsed = cli.parse(['routecat', role, ...args], { run: false });
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  if (parsed.options.help) return undefined;
  const config = loadConfig(role, parsed.options, env);
  if (parsed.options.printConfig) {
    out(formatConfig(config));
    return undefined;
  }
  return { config, args: parsed.args, options: parsed.options };
}
