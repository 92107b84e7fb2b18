/**
 * Roles whose implementation has not landed yet: they parse their options (so `--help` and
 * `--print-config` work and bad flags are reported) and then exit 2 saying so.
 */
import type { Role } from '../config/params.ts';
import type { RoleCommand } from './dispatch.ts';
import type { RoleRunner } from './main.ts';
import { parseRoleArgs } from './role-options.ts';

export function pendingRunner(role: RoleCommand): RoleRunner {
  return async (args, env, io) => {
    if (role === 'ipam') {
      io.err('routecat-ipam: not implemented yet');
      return 2;
    }
    const parsed = parseRoleArgs(role as Role, args, env, io.out);
    if (!parsed) return 0;
    io.err(`routecat ${role}: not implemented yet`);
    return 2;
  };
}
