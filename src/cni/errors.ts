/**
 * CNI errors: the spec's numeric codes, and the `{cniVersion, code, msg, details}` JSON a plugin
 * prints on stdout when a command fails. Codes 1-99 are the spec's; 100+ are routecat's own.
 */
import { RoutecatError } from '../errors.ts';

export const CNI_CODES = {
  incompatibleVersion: 1,
  unsupportedField: 2,
  unknownContainer: 3,
  invalidEnv: 4,
  ioFailure: 5,
  undecodableConfig: 6,
  invalidConfig: 7,
  tryAgainLater: 11,
  pluginNotAvailable: 50,
  /** routecat: a command of ours failed (netlink, IPAM, datastore write). */
  internal: 100,
  /** routecat: the interface to create is already there. */
  interfaceExists: 101,
  /** routecat: IPAM could not assign addresses. */
  ipamFailed: 102,
  /** routecat: CHECK found the attachment not as ADD left it. */
  checkFailed: 103,
} as const;

export class CniError extends RoutecatError {
  readonly cniCode: number;
  readonly details: string;
  constructor(cniCode: number, msg: string, details = '', options?: { cause?: unknown }) {
    super('E_CNI', msg, options);
    this.name = 'CniError';
    this.cniCode = cniCode;
    this.details = details;
  }
}

/** The error object printed on stdout (spec: "Error" section). */
export function errorJson(cniVersion: string, err: CniError): string {
  const out: Record<string, unknown> = { cniVersion, code: err.cniCode, msg: err.message };
  if (err.details) out.details = err.details;
  return JSON.stringify(out);
}

/** Whether an error from the etcd client means the datastore could not be reached (try later). */
export function isUnreachable(err: unknown): boolean {
  for (let e: unknown = err, depth = 0; e && depth < 5; e = (e as { cause?: unknown }).cause, depth++) {
    const name = (e as { name?: string }).name ?? (e as object).constructor?.name ?? '';
    const msg = String((e as { message?: string }).message ?? '');
    if (/GRPCConnectFailed|GRPCUnavailable|GRPCDeadlineExceeded|BrokenCircuit|TaskCancelled|ClientClosed/i.test(name)) return true;
    if (/ECONNREFUSED|ENOENT.*sock|No connection established|deadline exceeded|unavailable|breaker is open|failed to connect/i.test(msg)) return true;
  }
  return false;
}
