/**
 * A minimal CNI runtime for end-to-end tests: plugin executables looked up on CNI_PATH (routecat
 * and routecat-ipam are wrapper scripts that run `node --import tsx src/main.ts` under those
 * names), config on stdin, CNI_* in the environment, and conflists executed as libcni does:
 * ADD in order passing each result as the next plugin's prevResult, CHECK in order with the
 * cached result, DEL in reverse. Plugins run inside a test "host" namespace (`ip netns exec`), so
 * the machine's own interfaces are never touched.
 */
import { spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

export const REPO = resolve(import.meta.dirname, '../..');
export const SYSTEM_CNI_DIR = '/usr/lib/cni';

export interface PluginRun {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
  /** stdout parsed, when it is JSON. */
  readonly json?: Record<string, any>;
}

export interface Attachment {
  readonly containerId: string;
  readonly netns: string;
  readonly ifname: string;
  readonly args?: string;
}

export interface CniRuntime {
  readonly binDir: string;
  readonly cniPath: string;
  /** Run one plugin once. */
  exec(type: string, command: string, config: object | string, att?: Attachment): Promise<PluginRun>;
  /** Run a conflist; ADD returns the last plugin's result. */
  conflist(list: ConfList, command: 'ADD' | 'CHECK' | 'DEL', att: Attachment, cached?: object): Promise<PluginRun>;
  cleanup(): void;
}

export interface ConfList {
  readonly cniVersion: string;
  readonly name: string;
  readonly plugins: readonly Record<string, unknown>[];
}

function wrapper(name: string): string {
  // exec -a sets argv0, which is how the binary tells routecat-ipam from routecat.
  return `#!/bin/bash\ncd '${REPO}' || exit 1\nexec -a '${name}' node --import tsx src/main.ts "$@"\n`;
}

export function createCniRuntime(hostNs: string): CniRuntime {
  const binDir = mkdtempSync(join(tmpdir(), 'rccni-bin-'));
  for (const name of ['routecat', 'routecat-ipam']) {
    const p = join(binDir, name);
    writeFileSync(p, wrapper(name));
    chmodSync(p, 0o755);
  }
  const cniPath = `${binDir}:${SYSTEM_CNI_DIR}`;

  const find = (type: string): string => {
    for (const dir of cniPath.split(':')) if (existsSync(join(dir, type))) return join(dir, type);
    throw new Error(`plugin '${type}' not found on ${cniPath}`);
  };

  const exec = (type: string, command: string, config: object | string, att?: Attachment): Promise<PluginRun> =>
    new Promise((done) => {
      const env: Record<string, string> = { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', HOME: process.env.HOME ?? '/root', CNI_COMMAND: command, CNI_PATH: cniPath };
      if (att) {
        env.CNI_CONTAINERID = att.containerId;
        env.CNI_NETNS = att.netns;
        env.CNI_IFNAME = att.ifname;
        if (att.args) env.CNI_ARGS = att.args;
      }
      const child = spawn('ip', ['netns', 'exec', hostNs, find(type)], { env, stdio: ['pipe', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
      child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
      child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
      child.on('close', (code) => {
        clearTimeout(timer);
        let json: Record<string, any> | undefined;
        try {
          json = stdout.trim() ? (JSON.parse(stdout) as Record<string, any>) : undefined;
        } catch {
          json = undefined;
        }
        done({ code, stdout, stderr, json });
      });
      child.stdin.on('error', () => undefined);
      child.stdin.end(typeof config === 'string' ? config : JSON.stringify(config));
    });

  const pluginConf = (list: ConfList, p: Record<string, unknown>, prevResult?: object): object => ({
    ...p,
    cniVersion: list.cniVersion,
    name: list.name,
    ...(prevResult ? { prevResult } : {}),
  });

  return {
    binDir,
    cniPath,
    exec,
    async conflist(list, command, att, cached) {
      let prev: object | undefined = command === 'ADD' ? undefined : cached;
      const plugins = command === 'DEL' ? [...list.plugins].reverse() : list.plugins;
      let last: PluginRun = { code: 0, stdout: '', stderr: '' };
      for (const p of plugins) {
        last = await exec(String(p.type), command, pluginConf(list, p, prev), att);
        if (last.code !== 0) return last;
        if (command === 'ADD') prev = last.json;
      }
      return command === 'ADD' ? last : { code: 0, stdout: '', stderr: last.stderr };
    },
    cleanup() {
      rmSync(binDir, { recursive: true, force: true });
    },
  };
}
