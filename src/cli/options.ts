/**
 * Turns the parameter declarations into command-line options (cac) and help text, and reads a
 * role's configuration: flags, environment and the YAML config file, then resolveConfig().
 */
import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { UsageError, errorMessage } from '../errors.ts';
import { paramsFor, type ParamDecl, type Role } from '../config/params.ts';
import { resolveConfig, type ConfigLayers, type ResolvedConfig } from '../config/resolve.ts';

interface OptionTarget {
  option(rawName: string, description: string, config?: { default?: unknown }): unknown;
}

function camel(flag: string): string {
  return flag.replace(/-([a-z0-9])/g, (_, c: string) => c.toUpperCase());
}

/** The help line for one parameter: description, env var and default. */
export function describeParam(decl: ParamDecl): string {
  const parts = [decl.description];
  if (decl.choices) parts.push(`(${decl.choices.join('|')})`);
  if (decl.env) parts.push(`[env ${decl.env}]`);
  const d = decl.default;
  if (d !== undefined) parts.push(`(default: ${Array.isArray(d) ? d.join(',') : String(d)})`);
  return parts.join(' ');
}

export function addParamOptions(target: OptionTarget, role: Role): void {
  for (const decl of paramsFor(role)) {
    const raw = decl.type === 'bool' ? `--${decl.flag}` : `--${decl.flag} <${decl.type === 'list' ? 'list' : decl.type === 'int' ? 'n' : 'value'}>`;
    target.option(raw, describeParam(decl));
  }
  target.option('--print-config', 'print every configuration value with the source that set it, and exit');
}

/** Picks the declared parameters out of cac's parsed options, keyed by param name. */
export function flagsFromParsed(role: Role, parsed: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const decl of paramsFor(role)) {
    const v = parsed[camel(decl.flag)];
    if (v === undefined) continue;
    // A flag given twice arrives as an array; the last one wins, as with most tools.
    out[decl.name] = Array.isArray(v) && decl.type !== 'list' ? v[v.length - 1] : v;
  }
  return out;
}

export function readConfigFile(path: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new UsageError(`cannot read config file ${path}: ${errorMessage(err)}`);
  }
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (err) {
    throw new UsageError(`config file ${path} is not valid YAML: ${errorMessage(err)}`);
  }
  if (doc === null || doc === undefined) return {};
  if (typeof doc !== 'object' || Array.isArray(doc)) throw new UsageError(`config file ${path}: expected a mapping of parameter names to values`);
  return doc as Record<string, unknown>;
}

/** Flags + env + config file (+ optional datastore layer) -> resolved configuration. */
export function loadConfig(
  role: Role,
  parsed: Record<string, unknown>,
  env: Record<string, string | undefined>,
  datastore?: Record<string, unknown>,
): ResolvedConfig {
  const flags = flagsFromParsed(role, parsed);
  const configPath = (flags.config as string | undefined) ?? env.ROUTECAT_CONFIG;
  const layers: ConfigLayers = { flags, env, datastore };
  if (configPath) layers.file = readConfigFile(String(configPath));
  return resolveConfig(role, layers);
}
