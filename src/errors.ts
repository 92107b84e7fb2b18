/**
 * Typed errors with stable `code` strings. Every error the program raises on purpose is a
 * RoutecatError so callers can branch on `code` rather than on message text.
 */
export class RoutecatError extends Error {
  readonly code: string;
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = 'RoutecatError';
  }
}

/** A resource failed validation: names the resource, the field path and the reason. */
export class ValidationError extends RoutecatError {
  readonly kind: string;
  readonly resourceName: string;
  readonly field: string;
  readonly reason: string;
  constructor(kind: string, resourceName: string, field: string, reason: string) {
    const who = resourceName ? `${kind} '${resourceName}'` : kind || 'resource';
    super('E_VALIDATION', field ? `${who}: field ${field}: ${reason}` : `${who}: ${reason}`);
    this.name = 'ValidationError';
    this.kind = kind;
    this.resourceName = resourceName;
    this.field = field;
    this.reason = reason;
  }
}

/** A compare-and-swap lost: somebody else changed or created the key first. */
export class ConflictError extends RoutecatError {
  constructor(message: string) {
    super('E_CONFLICT', message);
    this.name = 'ConflictError';
  }
}

export class NotFoundError extends RoutecatError {
  constructor(message: string) {
    super('E_NOT_FOUND', message);
    this.name = 'NotFoundError';
  }
}

export class AlreadyExistsError extends RoutecatError {
  constructor(message: string) {
    super('E_EXISTS', message);
    this.name = 'AlreadyExistsError';
  }
}

/** Wrong usage of the command line or configuration: exit status 2. */
export class UsageError extends RoutecatError {
  constructor(message: string) {
    super('E_USAGE', message);
    this.name = 'UsageError';
  }
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
