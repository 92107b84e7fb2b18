/**
 * Resolves configuration for one role from its layers, in precedence order:
 * flag > environment > config file > datastore > default. Pure: the caller reads the file and the
 * datastore; this only merges, coerces and records which source set each value.
 */
import { UsageError } from '../errors.ts';
import { paramsFor, type ParamDecl, type Role } from './params.ts';

export type ConfigSource = 'flag' | 'env' | 'file' | 'datastore' | 'default';
export type ConfigValue = string | number | boolean | string[] | undefined;

export interface ConfigLayers {
  /** Parsed flags keyed by param name (camelCase); absent means not given. */
  flags?: Record<string, unknown>;
  env?: Record<string, string | undefined>;
  /** Contents of the YAML config file; keys are param names or flag names. */
  file?: Record<string, unknown>;
  /** Values taken from FelixConfiguration / BGPConfiguration, keyed by param name. */
  datastore?: Record<string, unknown>;
}

export interface ResolvedConfig {
  readonly role: Role;
  readonly values: Record<string, ConfigValue>;
  readonly sources: Record<string, ConfigSource>;
}

const DURATION_RE = /^(?:(\d+(?:\.\d+)?)(h|ms|m|s|us|ns))+$/;
const DURATION_PART = /(\d+(?:\.\d+)?)(h|ms|m|s|us|ns)/g;
const UNIT_MS: Record<string, number> = { h: 3_600_000, m: 60_000, s: 1000, ms: 1, us: 0.001, ns: 0.000001 };

/** Parses a Go-style duration ("90s", "1m30s", "250ms") into milliseconds; a bare number is seconds. */
export function parseDuration(text: string): number {
  const t = text.trim();
  if (/^\d+(\.\d+)?$/.test(t)) return Number(t) * 1000;
  if (!DURATION_RE.test(t)) throw new Error(`invalid duration '${text}' (expected e.g. 90s, 1m30s, 250ms)`);
  let ms = 0;
  for (const m of t.matchAll(DURATION_PART)) ms += Number(m[1]) * UNIT_MS[m[2]];
  return ms;
}

function coerce(decl: ParamDecl, raw: unknown, source: ConfigSource): ConfigValue {
  const where = `${source === 'flag' ? `--${decl.flag}` : source === 'env' ? decl.env : source === 'file' ? `config file key '${decl.name}'` : `datastore field ${decl.datastore?.kind}.${decl.datastore?.field}`}`;
  const bad = (why: string) => new UsageError(`invalid value for ${decl.name} from ${where}: ${why}`);
  switch (decl.type) {
    case 'string': {
      if (typeof raw !== 'string' && typeof raw !== 'number') throw bad(`expected a string, got ${typeof raw}`);
      let s = String(raw);
      if (decl.choices) {
        const lower = s.toLowerCase() === 'warning' ? 'warn' : s.toLowerCase();
        const hit = decl.choices.find((c) => c === lower);
        if (!hit) throw bad(`'${s}' is not one of ${decl.choices.join(', ')}`);
        s = hit;
      }
      return s;
    }
    case 'int': {
      const n = typeof raw === 'number' ? raw : typeof raw === 'string' && /^-?\d+$/.test(raw.trim()) ? Number(raw) : NaN;
      if (!Number.isInteger(n)) throw bad(`expected an integer, got '${String(raw)}'`);
      return n;
    }
    case 'bool': {
      if (typeof raw === 'boolean') return raw;
      const s = String(raw).toLowerCase();
      if (['true', '1', 'yes', 'on'].includes(s)) return true;
      if (['false', '0', 'no', 'off'].includes(s)) return false;
      throw bad(`expected true or false, got '${String(raw)}'`);
    }
    case 'list': {
      const items = Array.isArray(raw) ? raw.map(String) : typeof raw === 'string' ? raw.split(',') : null;
      if (!items) throw bad(`expected a comma-separated list, got ${typeof raw}`);
      return items.map((s) => s.trim()).filter((s) => s.length > 0);
    }
    case 'duration': {
      const s = typeof raw === 'number' ? `${raw}s` : String(raw);
      try {
        parseDuration(s);
      } catch (err) {
        throw bad((err as Error).message);
      }
      return s;
    }
  }
}

function fromFile(file: Record<string, unknown>, decl: ParamDecl): unknown {
  if (decl.name in file) return file[decl.name];
  if (decl.flag in file) return file[decl.flag];
  return undefined;
}

/** Merges the layers for `role`; throws UsageError naming the parameter and source of a bad value. */
export function resolveConfig(role: Role, layers: ConfigLayers): ResolvedConfig {
  const values: Record<string, ConfigValue> = {};
  const sources: Record<string, ConfigSource> = {};
  const file = layers.file ?? {};
  const declared = paramsFor(role);
  const known = new Set(declared.flatMap((d) => [d.name, d.flag]));
  for (const key of Object.keys(file)) {
    if (!known.has(key)) throw new UsageError(`config file: unknown parameter '${key}' for role ${role}`);
  }
  for (const decl of declared) {
    const flag = layers.flags?.[decl.name];
    const env = decl.env !== undefined ? layers.env?.[decl.env] : undefined;
    const fileValue = fromFile(file, decl);
    const ds = layers.datastore?.[decl.name];
    if (flag !== undefined) {
      values[decl.name] = coerce(decl, flag, 'flag');
      sources[decl.name] = 'flag';
    } else if (env !== undefined && env !== '') {
      values[decl.name] = coerce(decl, env, 'env');
      sources[decl.name] = 'env';
    } else if (fileValue !== undefined && fileValue !== null) {
      values[decl.name] = coerce(decl, fileValue, 'file');
      sources[decl.name] = 'file';
    } else if (ds !== undefined && ds !== null && decl.datastore) {
      values[decl.name] = coerce(decl, ds, 'datastore');
      sources[decl.name] = 'datastore';
    } else {
      const d = decl.default;
      values[decl.name] = Array.isArray(d) ? [...d] : (d as ConfigValue);
      sources[decl.name] = 'default';
    }
  }
  return { role, values, sources };
}

/** Picks the datastore layer out of FelixConfiguration and BGPConfiguration specs. */
export function datastoreLayer(
  role: Role,
  felix: Record<string, unknown> | undefined,
  bgp: Record<string, unknown> | undefined,
): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const decl of paramsFor(role)) {
    if (!decl.datastore) continue;
    const spec = decl.datastore.kind === 'FelixConfiguration' ? felix : bgp;
    const v = spec?.[decl.datastore.field];
    if (v !== undefined && v !== null) out[decl.name] = v;
  }
  return out;
}

/** Lines of `name = value (source)`, secrets redacted, for `--print-config`. */
export function formatConfig(cfg: ResolvedConfig): string {
  const decls = paramsFor(cfg.role);
  const width = Math.max(...decls.map((d) => d.name.length));
  return decls
    .map((d) => {
      const v = cfg.values[d.name];
      const shown = v === undefined ? '(unset)' : d.secret ? '<redacted>' : Array.isArray(v) ? v.join(',') : String(v);
      return `${d.name.padEnd(width)}  ${shown}  [${cfg.sources[d.name]}]`;
    })
    .join('\n');
}
