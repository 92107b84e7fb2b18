/**
 * Picks the role from how the binary was invoked. Pure and table-tested: no I/O, no side effects.
 * CNI runtimes exec the plugin by file name with CNI_COMMAND set, so that wins over any argv;
 * a copy or link named `routecat-ipam` is the IPAM-only plugin; one named `calicoctl` is the CLI.
 */
export const ROLE_COMMANDS = ['node', 'reflector', 'proxy', 'cni', 'ctl', 'status', 'version'] as const;
export type RoleCommand = (typeof ROLE_COMMANDS)[number] | 'ipam';

export type Dispatch =
  | { readonly kind: 'role'; readonly role: RoleCommand; readonly args: readonly string[] }
  | { readonly kind: 'help' }
  | { readonly kind: 'error'; readonly message: string; readonly exitCode: number };

function baseName(program: string): string {
  const slash = program.lastIndexOf('/');
  return (slash >= 0 ? program.slice(slash + 1) : program).replace(/\.(c?js|ts|exe)$/, '');
}

/**
 * @param argv the invoked program name followed by the arguments (`[argv0, ...args]`)
 * @param env the process environment
 */
export function dispatch(argv: readonly string[], env: Readonly<Record<string, string | undefined>>): Dispatch {
  const program = baseName(argv[0] ?? 'routecat');
  const args = argv.slice(1);
  const isIpamName = program === 'routecat-ipam';
  if (env.CNI_COMMAND !== undefined && env.CNI_COMMAND !== '') {
    return { kind: 'role', role: isIpamName ? 'ipam' : 'cni', args: [] };
  }
  if (isIpamName) return { kind: 'role', role: 'ipam', args: [] };
  if (program === 'calicoctl') return { kind: 'role', role: 'ctl', args };
  const first = args[0];
  if (first === undefined || first === '--help' || first === '-h' || first === 'help') return { kind: 'help' };
  if (first === '--version' || first === '-v' || first === '-V') return { kind: 'role', role: 'version', args: args.slice(1) };
  if ((ROLE_COMMANDS as readonly string[]).includes(first)) {
    return { kind: 'role', role: first as RoleCommand, args: args.slice(1) };
  }
  return { kind: 'error', message: `unknown command '${first}'; run 'routecat --help' for the list of roles`, exitCode: 2 };
}
