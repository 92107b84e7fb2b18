/**
 * The errors block IPAM raises on purpose, each with a stable `code` so the CNI plugin and the CLI
 * can branch on it (CNI maps them to its error result, ctl to exit status 1).
 */
import { RoutecatError } from '../errors.ts';

/** No pool, block or address can satisfy the request. */
export class IpamExhaustedError extends RoutecatError {
  constructor(message: string) {
    super('E_IPAM_EXHAUSTED', message);
    this.name = 'IpamExhaustedError';
  }
}

/** The request itself is wrong: unknown or disabled pool, bad address, bad count. */
export class IpamRequestError extends RoutecatError {
  constructor(message: string) {
    super('E_IPAM_REQUEST', message);
    this.name = 'IpamRequestError';
  }
}

/** A compare-and-swap kept losing: the datastore is too contended (or something loops). */
export class IpamContentionError extends RoutecatError {
  constructor(message: string) {
    super('E_IPAM_CONTENTION', message);
    this.name = 'IpamContentionError';
  }
}

/** A stored IPAM object does not parse or contradicts itself. */
export class IpamCorruptError extends RoutecatError {
  readonly key: string;
  constructor(key: string, reason: string) {
    super('E_IPAM_CORRUPT', `IPAM object ${key}: ${reason}`);
    this.name = 'IpamCorruptError';
    this.key = key;
  }
}
