/**
 * The envelope every CNI invocation shares, for both the plugin (`routecat`) and the IPAM-only
 * plugin (`routecat-ipam`): parse the environment and stdin, answer VERSION, open the backend,
 * run the command's handler, and turn any failure into the spec's error JSON on stdout with exit
 * status 1. Handlers throw; only this module writes to stdout.
 */
import { errorMessage } from '../errors.ts';
import { logger, setLogLevel } from '../log.ts';
import { CommandError } from '../agent/dataplane/exec.ts';
import { CNI_CODES, CniError, errorJson, isUnreachable } from './errors.ts';
import { SUPPORTED_VERSIONS, checkVersion, decodeJson, parseEnv, parseNetConf, type CniCommand, type CniEnv, type NetConf } from './config.ts';
import { etcdBackend, type Backend, type BackendFactory } from './backend.ts';

const log = logger('cni');

export type Handler = (ctx: { env: CniEnv; conf: NetConf; backend: Backend }) => Promise<string | undefined>;
export type Handlers = Partial<Record<Exclude<CniCommand, 'VERSION'>, Handler>>;

export interface InvokeOptions {
  readonly backend?: BackendFactory;
  readonly hostname?: string;
}

/** Any error as a CniError with the spec's code. */
export function toCniError(err: unknown, what: string): CniError {
  if (err instanceof CniError) return err;
  const code = (err as { code?: unknown }).code;
  if (code === 'E_IPAM_EXHAUSTED') return new CniError(CNI_CODES.ipamFailed, `${what}: ${errorMessage(err)}`);
  if (code === 'E_IPAM_REQUEST') return new CniError(CNI_CODES.invalidConfig, `${what}: ${errorMessage(err)}`);
  if (code === 'E_IPAM_CONTENTION') return new CniError(CNI_CODES.tryAgainLater, `${what}: ${errorMessage(err)}`);
  if (isUnreachable(err)) return new CniError(CNI_CODES.tryAgainLater, `${what}: datastore unreachable: ${errorMessage(err)}`);
  if (err instanceof CommandError) return new CniError(CNI_CODES.internal, `${what}: ${errorMessage(err)}`, err.stderr.trim());
  return new CniError(CNI_CODES.internal, `${what}: ${errorMessage(err)}`);
}

export async function invoke(
  envVars: Readonly<Record<string, string | undefined>>,
  stdin: string,
  stdout: (text: string) => void,
  handlers: Handlers,
  opts: InvokeOptions = {},
): Promise<number> {
  let cniVersion = '1.1.0';
  try {
    // The version first, so even an environment error answers in the caller's version.
    let raw: Record<string, unknown> | undefined;
    if (stdin.trim() !== '') {
      try {
        raw = decodeJson(stdin);
        if (typeof raw.cniVersion === 'string' && raw.cniVersion) cniVersion = raw.cniVersion;
      } catch (err) {
        if ((envVars.CNI_COMMAND ?? '').toUpperCase() !== 'VERSION') throw err;
      }
    }
    const env = parseEnv(envVars);
    if (env.command === 'VERSION') {
      stdout(JSON.stringify({ cniVersion: raw ? checkVersion({ cniVersion: raw.cniVersion }) : cniVersion, supportedVersions: SUPPORTED_VERSIONS }));
      return 0;
    }
    if (!raw) throw new CniError(CNI_CODES.undecodableConfig, 'no network configuration on stdin');
    const conf = parseNetConf(raw, { env: envVars, hostname: opts.hostname });
    setLogLevel(conf.logLevel);
    const handler = handlers[env.command];
    if (!handler) throw new CniError(CNI_CODES.invalidEnv, `CNI_COMMAND ${env.command} is not supported by this plugin`);
    let backend: Backend;
    try {
      backend = await (opts.backend ?? etcdBackend)(conf);
    } catch (err) {
      throw toCniError(err, 'cannot open the datastore');
    }
    try {
      const out = await handler({ env, conf, backend });
      if (out !== undefined) stdout(out);
      return 0;
    } finally {
      await backend.close().catch(() => undefined);
    }
  } catch (err) {
    const cniErr = toCniError(err, 'failed');
    log.error(`${envVars.CNI_COMMAND ?? '?'} ${envVars.CNI_CONTAINERID ?? ''}: [${cniErr.cniCode}] ${cniErr.message}${cniErr.details ? ` (${cniErr.details})` : ''}`);
    stdout(errorJson(cniVersion, cniErr));
    return 1;
  }
}
