/**
 * Calico's etcdv3 key layout for v3 resources:
 *   /calico/resources/v3/projectcalico.org/<plural>/[<namespace>/]<name>
 * Pure string functions; the only place that knows the layout.
 */
import { lookupKind, KINDS, type KindInfo } from '../model/kinds.ts';

export const RESOURCE_PREFIX = '/calico/resources/v3/projectcalico.org/';

export function kindPrefix(kind: KindInfo, namespace?: string): string {
  const base = `${RESOURCE_PREFIX}${kind.plural}/`;
  return kind.namespaced && namespace !== undefined ? `${base}${namespace}/` : base;
}

export function resourceKey(kind: KindInfo, name: string, namespace?: string): string {
  if (kind.namespaced) {
    if (!namespace) throw new Error(`${kind.kind} '${name}' needs a namespace`);
    return `${RESOURCE_PREFIX}${kind.plural}/${namespace}/${name}`;
  }
  return `${RESOURCE_PREFIX}${kind.plural}/${name}`;
}

export interface ParsedKey {
  readonly kind: KindInfo;
  readonly name: string;
  readonly namespace?: string;
}

const byPlural = new Map(KINDS.map((k) => [k.plural, k]));

/** The kind, namespace and name a key stands for; undefined for keys outside the layout. */
export function parseResourceKey(key: string): ParsedKey | undefined {
  if (!key.startsWith(RESOURCE_PREFIX)) return undefined;
  const parts = key.slice(RESOURCE_PREFIX.length).split('/');
  const kind = byPlural.get(parts[0] ?? '') ?? lookupKind(parts[0] ?? '');
  if (!kind) return undefined;
  if (kind.namespaced) {
    if (parts.length !== 3 || !parts[1] || !parts[2]) return undefined;
    return { kind, namespace: parts[1], name: parts[2] };
  }
  if (parts.length !== 2 || !parts[1]) return undefined;
  return { kind, name: parts[1] };
}
