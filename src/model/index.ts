/**
 * The resource model: kinds, the resource envelope, per-kind spec types and validation.
 * Re-exports only.
 */
export { API_VERSION, DEFAULT_NAMESPACE, KINDS, lookupKind } from './kinds.ts';
export type { KindInfo } from './kinds.ts';
export type { ObjectMeta, Resource } from './resource.ts';
export type * from './types.ts';
export { isValidName, validateAll, validateResource } from './validate.ts';
