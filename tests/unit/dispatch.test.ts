import { test } from 'node:test';
import assert from 'node:assert/strict';
import { dispatch } from '../../src/cli/dispatch.ts';

type Row = [name: string, argv: string[], env: Record<string, string>, expected: ReturnType<typeof dispatch>];

const ROWS: Row[] = [
  ['no arguments shows help', ['routecat'], {}, { kind: 'help' }],
  ['--help', ['routecat', '--help'], {}, { kind: 'help' }],
  ['-h', ['/usr/local/bin/routecat', '-h'], {}, { kind: 'help' }],
  ['help word', ['routecat', 'help'], {}, { kind: 'help' }],
  ['version', ['routecat', 'version'], {}, { kind: 'role', role: 'version', args: [] }],
  ['--version', ['routecat', '--version'], {}, { kind: 'role', role: 'version', args: [] }],
  ['node with flags', ['routecat', 'node', '--name', 'h1'], {}, { kind: 'role', role: 'node', args: ['--name', 'h1'] }],
  ['reflector', ['routecat', 'reflector'], {}, { kind: 'role', role: 'reflector', args: [] }],
  ['proxy', ['routecat', 'proxy', '--listen', '127.0.0.1:2379'], {}, { kind: 'role', role: 'proxy', args: ['--listen', '127.0.0.1:2379'] }],
  ['cni by argv', ['routecat', 'cni'], {}, { kind: 'role', role: 'cni', args: [] }],
  ['ctl keeps its arguments', ['routecat', 'ctl', 'get', 'ippools', '-o', 'yaml'], {}, { kind: 'role', role: 'ctl', args: ['get', 'ippools', '-o', 'yaml'] }],
  ['status', ['routecat', 'status', '-o', 'json'], {}, { kind: 'role', role: 'status', args: ['-o', 'json'] }],
  ['CNI_COMMAND wins over argv', ['routecat', 'ctl', 'get'], { CNI_COMMAND: 'ADD' }, { kind: 'role', role: 'cni', args: [] }],
  ['CNI_COMMAND with plugin path name', ['/opt/cni/bin/routecat'], { CNI_COMMAND: 'VERSION' }, { kind: 'role', role: 'cni', args: [] }],
  ['empty CNI_COMMAND is ignored', ['routecat', 'version'], { CNI_COMMAND: '' }, { kind: 'role', role: 'version', args: [] }],
  ['routecat-ipam by file name', ['/opt/cni/bin/routecat-ipam'], { CNI_COMMAND: 'ADD' }, { kind: 'role', role: 'ipam', args: [] }],
  ['routecat-ipam without CNI_COMMAND', ['routecat-ipam', 'node'], {}, { kind: 'role', role: 'ipam', args: [] }],
  ['calicoctl name is the CLI', ['/usr/bin/calicoctl', 'get', 'nodes'], {}, { kind: 'role', role: 'ctl', args: ['get', 'nodes'] }],
  ['unknown role', ['routecat', 'frobnicate'], {}, { kind: 'error', message: "unknown command 'frobnicate'; run 'routecat --help' for the list of roles", exitCode: 2 }],
  ['a flag before the role is not a role', ['routecat', '--name', 'x'], {}, { kind: 'error', message: "unknown command '--name'; run 'routecat --help' for the list of roles", exitCode: 2 }],
];

for (const [name, argv, env, expected] of ROWS) {
  test(`dispatch: ${name}`, () => {
    assert.deepEqual(dispatch(argv, env), expected);
  });
}
