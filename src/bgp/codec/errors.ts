/**
 * DOC: BGP codec errors. Owns the NOTIFICATION code/subcode numbers (RFC 4271 section 4.5,
 * RFC 6793, RFC 7313) and the two error classes the codec throws. `BgpError` is thrown by the
 * decoder only for errors that reset the session; it carries the NOTIFICATION to send.
 * `BgpEncodeError` is thrown when asked to encode something that cannot be put on the wire
 * (a programming or configuration error, never caused by a peer). Never logs, never does I/O.
 */

export const ErrorCode = {
  HEADER: 1,
  OPEN: 2,
  UPDATE: 3,
  HOLD_TIMER_EXPIRED: 4,
  FSM: 5,
  CEASE: 6,
  ROUTE_REFRESH: 7,
} as const;

export const HeaderSubcode = { NOT_SYNCHRONIZED: 1, BAD_LENGTH: 2, BAD_TYPE: 3 } as const;

export const OpenSubcode = {
  UNSPECIFIC: 0,
  UNSUPPORTED_VERSION: 1,
  BAD_PEER_AS: 2,
  BAD_BGP_ID: 3,
  UNSUPPORTED_OPTIONAL_PARAM: 4,
  UNACCEPTABLE_HOLD_TIME: 6,
  UNSUPPORTED_CAPABILITY: 7,
} as const;

export const UpdateSubcode = {
  MALFORMED_ATTRIBUTE_LIST: 1,
  UNRECOGNIZED_WELL_KNOWN: 2,
  MISSING_WELL_KNOWN: 3,
  ATTRIBUTE_FLAGS: 4,
  ATTRIBUTE_LENGTH: 5,
  INVALID_ORIGIN: 6,
  INVALID_NEXT_HOP: 8,
  OPTIONAL_ATTRIBUTE: 9,
  INVALID_NETWORK_FIELD: 10,
  MALFORMED_AS_PATH: 11,
} as const;

export const CeaseSubcode = {
  MAX_PREFIXES: 1,
  ADMINISTRATIVE_SHUTDOWN: 2,
  PEER_DECONFIGURED: 3,
  ADMINISTRATIVE_RESET: 4,
  CONNECTION_REJECTED: 5,
  OTHER_CONFIGURATION_CHANGE: 6,
  CONNECTION_COLLISION: 7,
  OUT_OF_RESOURCES: 8,
} as const;

export const RouteRefreshSubcode = { INVALID_LENGTH: 1 } as const;

const EMPTY = new Uint8Array(0);

/** A decode error that resets the session: send `notification`, then close. */
export class BgpError extends Error {
  readonly code = 'E_BGP' as const;
  readonly notification: { readonly code: number; readonly subcode: number; readonly data: Uint8Array };

  constructor(message: string, code: number, subcode: number, data: Uint8Array = EMPTY) {
    super(message);
    this.name = 'BgpError';
    this.notification = { code, subcode, data };
  }
}

/** Asked to encode something that cannot be encoded (bad prefix, message too large, ...). */
export class BgpEncodeError extends Error {
  readonly code = 'E_BGP_ENCODE' as const;

  constructor(message: string) {
    super(message);
    this.name = 'BgpEncodeError';
  }
}

export function isBgpError(e: unknown): e is BgpError {
  return e instanceof BgpError;
}
