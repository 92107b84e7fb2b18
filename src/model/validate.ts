/**
 * Validation and normalisation of Calico v3 resources, as calicoctl and libcalico-go do before
 * anything is stored. Input is a document already parsed from YAML/JSON (`unknown`); output is a
 * fresh, normalised copy with Calico's defaults filled in. Strict: an unknown field is an error.
 *
 * Every kind is described once, as data: a schema of field checks built from small combinators
 * (`str`, `int`, `cidr`, `obj`, `list`, ...), plus cross-field rules (`post`) that run only when
 * every field of that object is valid. Errors name the kind, metadata.name, the field path
 * (`spec.ingress[0].destination.ports[1]`) and the reason. All errors are collected; the first is
 * thrown by validateResource, all are returned by validateAll.
 *
 * Must never throw anything but ValidationError, never mutate its input, and be idempotent:
 * validateResource(validateResource(x)) deep-equals validateResource(x). Metadata bookkeeping
 * (resourceVersion, uid, creationTimestamp, generation, labels, annotations) is kept as given.
 */
import ipaddr from 'ipaddr.js';
import { ValidationError, errorMessage } from '../errors.ts';
import { API_VERSION, KINDS, lookupKind } from './kinds.ts';
import type { KindInfo } from './kinds.ts';
import type { ObjectMeta, Resource } from './resource.ts';
import { SelectorSyntaxError, parseSelector } from '../policy/selector.ts';

// ---------------------------------------------------------------------------------------------
// Check combinators

interface Ctx {
  readonly kind: string;
  readonly name: string;
  readonly errors: ValidationError[];
}

/** Validates one value at `path`; returns the normalised value or throws. */
type Check = (value: unknown, path: string, ctx: Ctx) => unknown;

/** Thrown by a container (obj/list) whose children failed; their errors are already recorded. */
const CHILD_FAILED = Symbol('child failed');

interface Field {
  readonly check: Check;
  readonly required?: boolean;
  /** Filled in when the field is absent; sees the object's other (already normalised) fields. */
  readonly default?: (obj: Record<string, unknown>) => unknown;
}

type Post = (obj: Record<string, unknown>, path: string, ctx: Ctx) => void;

function fail(ctx: Ctx, path: string, reason: string): never {
  throw new ValidationError(ctx.kind, ctx.name, path, reason);
}

function join(path: string, key: string): string {
  return path ? `${path}.${key}` : key;
}

function typeName(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'list';
  return typeof v === 'object' ? 'object' : typeof v;
}

function wrongType(ctx: Ctx, path: string, expected: string, v: unknown): never {
  return fail(ctx, path, `wrong type: expected ${expected}, got ${typeName(v)}`);
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return false;
  const proto: unknown = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}

/** Runs a child check, recording its error; returns false when it failed. */
function attempt(ctx: Ctx, run: () => void): boolean {
  try {
    run();
    return true;
  } catch (err) {
    if (err === CHILD_FAILED) return false;
    if (err instanceof ValidationError) {
      ctx.errors.push(err);
      return false;
    }
    throw err;
  }
}

/** Sets a property even when the key is `__proto__`. */
function put(out: Record<string, unknown>, key: string, value: unknown): void {
  Object.defineProperty(out, key, { value, enumerable: true, writable: true, configurable: true });
}

function field(check: Check, extra: Omit<Field, 'check'> = {}): Field {
  return { check, ...extra };
}

function required(check: Check): Field {
  return { check, required: true };
}

function withDefault(check: Check, value: unknown | ((obj: Record<string, unknown>) => unknown)): Field {
  const fn = typeof value === 'function' ? (value as (o: Record<string, unknown>) => unknown) : () => structuredClone(value);
  return { check, default: fn };
}

/** An object with exactly the listed fields; absent (or null) optional fields are left out. */
function obj(fields: Record<string, Field | Check>, post?: Post): Check {
  const spec: Record<string, Field> = {};
  for (const [k, f] of Object.entries(fields)) spec[k] = typeof f === 'function' ? { check: f } : f;
  return (v, path, ctx) => {
    if (!isPlainObject(v)) wrongType(ctx, path, 'object', v);
    const out: Record<string, unknown> = {};
    let ok = true;
    for (const key of Object.keys(v)) {
      if (!Object.hasOwn(spec, key)) {
        const where = join(path, key);
        ok = attempt(ctx, () => fail(ctx, where, `unknown field '${where}'`)) && ok;
      }
    }
    for (const [key, f] of Object.entries(spec)) {
      const given = Object.hasOwn(v, key) ? v[key] : undefined;
      const where = join(path, key);
      if (given === undefined || given === null) {
        if (f.required) ok = attempt(ctx, () => fail(ctx, where, 'missing required field')) && ok;
        continue;
      }
      ok = attempt(ctx, () => put(out, key, f.check(given, where, ctx))) && ok;
    }
    if (!ok) throw CHILD_FAILED;
    for (const [key, f] of Object.entries(spec)) {
      if (f.default && !Object.hasOwn(out, key)) put(out, key, f.default(out));
    }
    if (post) post(out, path, ctx);
    return out;
  };
}

function list(item: Check, opts: { unique?: boolean; nonEmpty?: boolean } = {}): Check {
  return (v, path, ctx) => {
    if (!Array.isArray(v)) wrongType(ctx, path, 'list', v);
    if (opts.nonEmpty && v.length === 0) fail(ctx, path, 'must not be empty');
    const out: unknown[] = [];
    let ok = true;
    v.forEach((x, i) => {
      ok = attempt(ctx, () => {
        if (x === null || x === undefined) fail(ctx, `${path}[${i}]`, 'wrong type: list items must not be null');
        out.push(item(x, `${path}[${i}]`, ctx));
      }) && ok;
    });
    if (!ok) throw CHILD_FAILED;
    if (opts.unique) {
      const seen = new Set<string>();
      out.forEach((x, i) => {
        const key = JSON.stringify(x);
        if (seen.has(key)) fail(ctx, `${path}[${i}]`, `duplicate value ${key}`);
        seen.add(key);
      });
    }
    return out;
  };
}

/** A map of string keys to values. */
function map(value: Check, key?: (k: string, path: string, ctx: Ctx) => void): Check {
  return (v, path, ctx) => {
    if (!isPlainObject(v)) wrongType(ctx, path, 'object', v);
    const out: Record<string, unknown> = {};
    let ok = true;
    for (const k of Object.keys(v)) {
      const where = `${path}[${JSON.stringify(k)}]`;
      ok = attempt(ctx, () => {
        key?.(k, where, ctx);
        put(out, k, value(v[k], where, ctx));
      }) && ok;
    }
    if (!ok) throw CHILD_FAILED;
    return out;
  };
}

function str(opts: { pattern?: RegExp; what?: string; max?: number; nonEmpty?: boolean } = {}): Check {
  return (v, path, ctx) => {
    if (typeof v !== 'string') wrongType(ctx, path, 'string', v);
    if (opts.nonEmpty && v === '') fail(ctx, path, 'must not be empty');
    if (opts.max !== undefined && v.length > opts.max) fail(ctx, path, `'${clip(v)}' is longer than ${opts.max} characters`);
    if (opts.pattern && !opts.pattern.test(v)) fail(ctx, path, `'${clip(v)}' is not ${opts.what ?? `matching ${String(opts.pattern)}`}`);
    return v;
  };
}

function clip(s: string): string {
  return s.length > 80 ? `${s.slice(0, 77)}...` : s;
}

const bool: Check = (v, path, ctx) => (typeof v === 'boolean' ? v : wrongType(ctx, path, 'boolean', v));

function int(min: number, max: number, what = 'value'): Check {
  return (v, path, ctx) => {
    if (typeof v !== 'number') wrongType(ctx, path, 'integer', v);
    if (!Number.isInteger(v)) fail(ctx, path, `${what} ${v} is not an integer`);
    if (v < min || v > max) fail(ctx, path, `${what} ${v} out of range ${min}-${max}`);
    return v;
  };
}

const finite: Check = (v, path, ctx) => {
  if (typeof v !== 'number') wrongType(ctx, path, 'number', v);
  if (!Number.isFinite(v)) fail(ctx, path, `${v} is not a finite number`);
  return v;
};

function oneOf<T extends string>(values: readonly T[]): Check {
  return (v, path, ctx) => {
    if (typeof v !== 'string') wrongType(ctx, path, 'string', v);
    if (!(values as readonly string[]).includes(v)) fail(ctx, path, `'${clip(v)}' is not one of ${values.join(', ')}`);
    return v;
  };
}

/** Free-form JSON (Node status): deep-copied, depth-limited. */
const anyJson: Check = (v, path, ctx) => {
  const copy = (x: unknown, depth: number): unknown => {
    if (depth > 64) fail(ctx, path, 'nested too deeply');
    if (Array.isArray(x)) return x.map((y) => copy(y, depth + 1));
    if (isPlainObject(x)) {
      const out: Record<string, unknown> = {};
      for (const k of Object.keys(x)) put(out, k, copy(x[k], depth + 1));
      return out;
    }
    if (x === null || typeof x === 'string' || typeof x === 'boolean' || (typeof x === 'number' && Number.isFinite(x))) return x;
    return fail(ctx, path, `wrong type: ${typeName(x)} is not a JSON value`);
  };
  if (!isPlainObject(v)) wrongType(ctx, path, 'object', v);
  return copy(v, 0);
};

// ---------------------------------------------------------------------------------------------
// Names, labels, IPs, ports and other Calico value types

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const LABEL_NAME = /^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/;

/** A resource name: DNS-1123 subdomain, at most 253 characters. */
export function isValidName(s: string): boolean {
  return s.length > 0 && s.length <= 253 && DNS_SUBDOMAIN.test(s);
}

const name = str({ pattern: DNS_SUBDOMAIN, what: 'a valid name (lower-case letters, digits, \'-\' and \'.\')', max: 253, nonEmpty: true });
const dnsLabel = str({ pattern: DNS_LABEL, what: 'a valid DNS label (lower-case letters, digits and \'-\')', max: 63, nonEmpty: true });

function labelKeyProblem(k: string): string | undefined {
  const slash = k.lastIndexOf('/');
  const prefix = slash >= 0 ? k.slice(0, slash) : undefined;
  const nm = slash >= 0 ? k.slice(slash + 1) : k;
  if (prefix !== undefined && !isValidName(prefix)) return `label key '${clip(k)}' has an invalid prefix (must be a DNS subdomain)`;
  if (nm.length === 0 || nm.length > 63 || !LABEL_NAME.test(nm)) return `label key '${clip(k)}' is invalid (at most 63 letters, digits, '-', '_', '.', starting and ending alphanumeric)`;
  return undefined;
}

const labelValue: Check = (v, path, ctx) => {
  if (typeof v !== 'string') wrongType(ctx, path, 'string', v);
  if (v !== '' && (v.length > 63 || !LABEL_NAME.test(v))) fail(ctx, path, `label value '${clip(v)}' is invalid (at most 63 letters, digits, '-', '_', '.', starting and ending alphanumeric)`);
  return v;
};

const labels = map(labelValue, (k, path, ctx) => {
  const problem = labelKeyProblem(k);
  if (problem) fail(ctx, path, problem);
});
const stringMap = map(str());

type IPVersion = 4 | 6;

interface ParsedIP {
  version: IPVersion;
  addr: ipaddr.IPv4 | ipaddr.IPv6;
}

function parseIP(s: string): ParsedIP | undefined {
  try {
    if (ipaddr.IPv4.isValidFourPartDecimal(s)) return { version: 4, addr: ipaddr.IPv4.parse(s) };
    if (s.includes(':') && !s.includes('%') && ipaddr.IPv6.isValid(s)) return { version: 6, addr: ipaddr.IPv6.parse(s) };
  } catch {
    // fall through: not an IP
  }
  return undefined;
}

function ipText(p: ParsedIP): string {
  return p.version === 6 ? (p.addr as ipaddr.IPv6).toRFC5952String() : p.addr.toString();
}

function ip(version?: IPVersion): Check {
  return (v, path, ctx) => {
    if (typeof v !== 'string') wrongType(ctx, path, 'string', v);
    const p = parseIP(v);
    if (!p) fail(ctx, path, `invalid IP address '${clip(v)}'`);
    if (version && p.version !== version) fail(ctx, path, `'${v}' is not an IPv${version} address`);
    return v;
  };
}

interface ParsedCIDR extends ParsedIP {
  prefix: number;
  /** True when the host bits are all zero. */
  aligned: boolean;
  /** Canonical network text, e.g. 2001:db8::/32. */
  canonical: string;
}

/** Parses "addr/len" (or a bare address when allowIP, as a host route). Returns a reason on failure. */
function parseCIDR(s: string, allowIP: boolean): ParsedCIDR | string {
  const slash = s.indexOf('/');
  const addrText = slash < 0 ? s : s.slice(0, slash);
  const p = parseIP(addrText);
  if (!p) return `invalid CIDR '${clip(s)}': '${clip(addrText)}' is not an IP address`;
  const max = p.version === 4 ? 32 : 128;
  let prefix = max;
  if (slash < 0) {
    if (!allowIP) return `invalid CIDR '${clip(s)}': missing prefix length (e.g. /${max})`;
  } else {
    const lenText = s.slice(slash + 1);
    if (!/^\d{1,3}$/.test(lenText)) return `invalid CIDR '${clip(s)}': prefix length '${clip(lenText)}' is not a number`;
    prefix = Number(lenText);
    if (prefix > max) return `invalid CIDR '${clip(s)}': prefix length ${prefix} > ${max}`;
  }
  const network = p.version === 4 ? ipaddr.IPv4.networkAddressFromCIDR(`${addrText}/${prefix}`) : ipaddr.IPv6.networkAddressFromCIDR(`${addrText}/${prefix}`);
  const netText = ipText({ version: p.version, addr: network });
  return { ...p, prefix, aligned: netText === ipText(p), canonical: `${netText}/${prefix}` };
}

function cidrCheck(opts: { allowIP?: boolean; version?: IPVersion } = {}): Check {
  return (v, path, ctx) => {
    if (typeof v !== 'string') wrongType(ctx, path, 'string', v);
    const c = parseCIDR(v, opts.allowIP ?? false);
    if (typeof c === 'string') fail(ctx, path, c);
    if (opts.version && c.version !== opts.version) fail(ctx, path, `'${v}' is not an IPv${opts.version} CIDR`);
    return v;
  };
}

/** A CIDR or a plain IP address (Calico's "net"). */
const net = cidrCheck({ allowIP: true });
const cidrBlock = obj({ cidr: required(net) });

function cidrVersion(s: unknown): IPVersion | undefined {
  if (typeof s !== 'string') return undefined;
  const c = parseCIDR(s, true);
  return typeof c === 'string' ? undefined : c.version;
}

const selector: Check = (v, path, ctx) => {
  if (typeof v !== 'string') wrongType(ctx, path, 'string', v);
  try {
    parseSelector(v);
  } catch (err) {
    if (err instanceof SelectorSyntaxError) fail(ctx, path, `invalid selector: expected ${err.expected} at position ${err.position}`);
    fail(ctx, path, `invalid selector: ${errorMessage(err)}`);
  }
  return v;
};

const DURATION = /^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$|^0$/;
const duration = str({ pattern: DURATION, what: 'a duration such as "90s" or "1m30s"' });

const MAX_AS = 4294967295;

/** An AS number: integer 1..4294967295, or the same as a decimal or "asdot" (a.b) string. */
const asNumber: Check = (v, path, ctx) => {
  let n: number;
  if (typeof v === 'number') n = v;
  else if (typeof v === 'string' && /^\d{1,10}$/.test(v)) n = Number(v);
  else if (typeof v === 'string' && /^\d{1,5}\.\d{1,5}$/.test(v)) {
    const [hi, lo] = v.split('.').map(Number);
    if (hi > 65535 || lo > 65535) fail(ctx, path, `AS number '${v}': each part of the dotted form must be 0-65535`);
    n = hi * 65536 + lo;
  } else if (typeof v === 'string') return fail(ctx, path, `'${clip(v)}' is not an AS number`);
  else return wrongType(ctx, path, 'integer', v);
  if (!Number.isInteger(n) || n < 1 || n > MAX_AS) fail(ctx, path, `AS number ${n} out of range 1-${MAX_AS}`);
  return n;
};

const PROTOCOL_NAMES = ['TCP', 'UDP', 'ICMP', 'ICMPv6', 'SCTP', 'UDPLite'] as const;
const PORT_PROTOCOLS = new Set<unknown>(['TCP', 'UDP', 'SCTP', 6, 17, 132]);

/** A protocol name (any case, normalised to Calico's spelling) or number 1-255. */
const protocol: Check = (v, path, ctx) => {
  if (typeof v === 'string' && /^\d{1,3}$/.test(v)) v = Number(v);
  if (typeof v === 'number') return int(1, 255, 'protocol')(v, path, ctx);
  if (typeof v !== 'string') return wrongType(ctx, path, 'string or integer', v);
  const found = PROTOCOL_NAMES.find((p) => p.toLowerCase() === v.toLowerCase());
  if (!found) fail(ctx, path, `'${clip(v)}' is not a protocol (${PROTOCOL_NAMES.join(', ')} or 1-255)`);
  return found;
};

function portProtocol(allowed: readonly string[]): Check {
  return (v, path, ctx) => {
    const p = protocol(v, path, ctx);
    const named = typeof p === 'number' ? ({ 6: 'TCP', 17: 'UDP', 132: 'SCTP' } as Record<number, string>)[p] : p;
    if (typeof named !== 'string' || !allowed.includes(named)) fail(ctx, path, `protocol ${String(p)} is not one of ${allowed.join(', ')}`);
    return named;
  };
}

const PORT_NAME = /^[a-zA-Z0-9_.-]{1,128}$/;
const portNumber = int(0, 65535, 'port');

/** A rule port: number, "min:max" range, or named port. "80" and "80:80" normalise to 80. */
const port: Check = (v, path, ctx) => {
  if (typeof v === 'number') return portNumber(v, path, ctx);
  if (typeof v !== 'string') return wrongType(ctx, path, 'integer or string', v);
  if (/^\d+$/.test(v)) return portNumber(Number(v), path, ctx);
  const range = /^(\d+):(\d+)$/.exec(v);
  if (range) {
    const lo = Number(range[1]);
    const hi = Number(range[2]);
    portNumber(lo, path, ctx);
    portNumber(hi, path, ctx);
    if (lo > hi) fail(ctx, path, `port range '${v}': minimum ${lo} > maximum ${hi}`);
    return lo === hi ? lo : `${lo}:${hi}`;
  }
  if (!PORT_NAME.test(v)) fail(ctx, path, `'${clip(v)}' is not a port number, range (min:max) or port name`);
  return v;
};

const INTERFACE = /^[a-zA-Z0-9_.@:-]{1,15}$/;
const interfaceName = str({ pattern: INTERFACE, what: 'a valid interface name (at most 15 characters)' });
const MAC = /^([0-9a-fA-F]{2}[:-]){5}[0-9a-fA-F]{2}$/;
const mac = str({ pattern: MAC, what: 'a MAC address' });
const LOG_LEVELS = ['Debug', 'Info', 'Warning', 'Error', 'Fatal'] as const;
const logLevel = oneOf(LOG_LEVELS);
const ENCAP = ['Never', 'CrossSubnet', 'Always'] as const;

/** "ip", "ip:port" or "[ipv6]:port". */
const ipPort: Check = (v, path, ctx) => {
  if (typeof v !== 'string') wrongType(ctx, path, 'string', v);
  let host = v;
  let portText: string | undefined;
  const bracketed = /^\[([^\]]+)\]:(\d+)$/.exec(v);
  if (bracketed) [, host, portText] = bracketed;
  else if (v.split(':').length === 2) [host, portText] = v.split(':');
  const p = parseIP(host);
  if (!p || (bracketed && p.version !== 6)) fail(ctx, path, `'${clip(v)}' is not an IP address, IP:port or [IPv6]:port`);
  if (portText !== undefined) {
    const n = Number(portText);
    if (!/^\d+$/.test(portText) || n < 1 || n > 65535) fail(ctx, path, `port ${portText} out of range 1-65535`);
  }
  return v;
};

const secretPassword = obj({
  secretKeyRef: obj({ name: required(str({ nonEmpty: true })), key: required(str({ nonEmpty: true })), optional: bool }),
});

// ---------------------------------------------------------------------------------------------
// Rules

function entityRule(): Check {
  return obj(
    {
      nets: list(net),
      notNets: list(net),
      selector,
      notSelector: selector,
      namespaceSelector: selector,
      serviceAccounts: obj({ names: list(str({ nonEmpty: true })), selector }),
      ports: list(port),
      notPorts: list(port),
      services: obj({ name: required(name), namespace: name }),
    },
    (e, path, ctx) => {
      if (e.services === undefined) return;
      for (const other of ['nets', 'notNets', 'selector', 'notSelector', 'serviceAccounts', 'ports', 'notPorts']) {
        if (e[other] !== undefined) fail(ctx, join(path, other), `cannot be combined with ${join(path, 'services')}`);
      }
    },
  );
}

const icmpFields = obj({ type: int(0, 254, 'ICMP type'), code: int(0, 255, 'ICMP code') }, (o, path, ctx) => {
  if (o.code !== undefined && o.type === undefined) fail(ctx, join(path, 'code'), 'ICMP code requires an ICMP type');
});

const ACTIONS = ['Allow', 'Deny', 'Log', 'Pass'] as const;

function rule(inProfile: boolean): Check {
  return obj(
    {
      action: required(oneOf(ACTIONS)),
      ipVersion: (v, path, ctx) => (v === 4 || v === 6 ? v : fail(ctx, path, `ipVersion ${JSON.stringify(v)} must be 4 or 6`)),
      protocol,
      notProtocol: protocol,
      icmp: icmpFields,
      notICMP: icmpFields,
      source: entityRule(),
      destination: entityRule(),
      http: obj({
        methods: list(str({ nonEmpty: true })),
        paths: list(
          obj({ exact: str(), prefix: str() }, (p, path, ctx) => {
            if ((p.exact === undefined) === (p.prefix === undefined)) fail(ctx, path, 'exactly one of exact or prefix is required');
          }),
        ),
      }),
      metadata: obj({ annotations: stringMap }),
    },
    (r, path, ctx) => {
      if (inProfile && r.action === 'Pass') fail(ctx, join(path, 'action'), 'Pass is not allowed in a Profile rule');
      const proto = r.protocol;
      for (const side of ['source', 'destination'] as const) {
        const e = r[side] as Record<string, unknown> | undefined;
        if (!e) continue;
        for (const which of ['ports', 'notPorts'] as const) {
          if (((e[which] as unknown[] | undefined)?.length ?? 0) > 0 && !PORT_PROTOCOLS.has(proto)) {
            fail(ctx, `${path}.${side}.${which}`, `ports are only allowed with protocol TCP, UDP or SCTP${proto === undefined ? '' : ` (got ${String(proto)})`}`);
          }
        }
      }
      for (const which of ['icmp', 'notICMP'] as const) {
        if (r[which] !== undefined && proto !== 'ICMP' && proto !== 'ICMPv6' && proto !== 1 && proto !== 58) {
          fail(ctx, join(path, which), `${which} requires protocol ICMP or ICMPv6`);
        }
      }
      const version = r.ipVersion as IPVersion | undefined;
      if (version === 6 && (proto === 'ICMP' || proto === 1)) fail(ctx, join(path, 'protocol'), 'protocol ICMP cannot be used with ipVersion 6 (use ICMPv6)');
      if (version === 4 && (proto === 'ICMPv6' || proto === 58)) fail(ctx, join(path, 'protocol'), 'protocol ICMPv6 cannot be used with ipVersion 4 (use ICMP)');
      // Every CIDR in the rule must be of one IP version, and that of ipVersion when given.
      let seen: { version: IPVersion; where: string } | undefined = version ? { version, where: join(path, 'ipVersion') } : undefined;
      for (const side of ['source', 'destination'] as const) {
        const e = r[side] as Record<string, unknown> | undefined;
        for (const which of ['nets', 'notNets'] as const) {
          const nets = (e?.[which] as string[] | undefined) ?? [];
          nets.forEach((n, i) => {
            const v = cidrVersion(n);
            const where = `${path}.${side}.${which}[${i}]`;
            if (v === undefined) return;
            if (seen && seen.version !== v) fail(ctx, where, `'${n}' is IPv${v} but ${seen.where} makes this an IPv${seen.version} rule`);
            seen ??= { version: v, where };
          });
        }
      }
    },
  );
}

const policyTypes = list(oneOf(['Ingress', 'Egress']), { unique: true });

/** Calico's defaulting of `types`: Ingress, unless there are egress rules (then Egress, plus Ingress if it has ingress rules). */
function defaultTypes(spec: Record<string, unknown>): string[] {
  const ingress = (spec.ingress as unknown[] | undefined)?.length ?? 0;
  const egress = (spec.egress as unknown[] | undefined)?.length ?? 0;
  if (egress === 0) return ['Ingress'];
  if (ingress === 0) return ['Egress'];
  return ['Ingress', 'Egress'];
}

const TIER_NAME = str({ pattern: DNS_LABEL, what: "a valid tier name (lower-case letters, digits and '-')", max: 63, nonEmpty: true });

function policySpec(global: boolean): Check {
  const fields: Record<string, Field | Check> = {
    tier: withDefault(TIER_NAME, 'default'),
    order: finite,
    selector: withDefault(selector, 'all()'),
    types: withDefault(policyTypes, defaultTypes),
    ingress: list(rule(false)),
    egress: list(rule(false)),
    serviceAccountSelector: selector,
    performanceHints: list(oneOf(['AssumeNeededOnEveryNode']), { unique: true }),
  };
  if (global) {
    Object.assign(fields, { namespaceSelector: selector, doNotTrack: bool, preDNAT: bool, applyOnForward: bool });
  }
  return obj(fields, (s, path, ctx) => {
    if (s.selector === '') s.selector = 'all()';
    if (s.types !== undefined && (s.types as unknown[]).length === 0) s.types = defaultTypes(s);
    if (s.doNotTrack === true && s.preDNAT === true) fail(ctx, join(path, 'preDNAT'), 'preDNAT and doNotTrack cannot both be true');
    if (s.preDNAT === true) {
      if (s.applyOnForward !== true) fail(ctx, join(path, 'applyOnForward'), 'applyOnForward must be true when preDNAT is true');
      if (((s.egress as unknown[] | undefined)?.length ?? 0) > 0) fail(ctx, join(path, 'egress'), 'egress rules are not allowed when preDNAT is true');
      if ((s.types as string[]).includes('Egress')) fail(ctx, join(path, 'types'), 'Egress is not allowed when preDNAT is true');
    }
    if (s.doNotTrack === true && s.applyOnForward !== true) fail(ctx, join(path, 'applyOnForward'), 'applyOnForward must be true when doNotTrack is true');
  });
}

// ---------------------------------------------------------------------------------------------
// Specs per kind

const endpointPort = obj({
  name: required(str({ pattern: PORT_NAME, what: 'a valid port name', nonEmpty: true })),
  protocol: required(portProtocol(['TCP', 'UDP', 'SCTP'])),
  port: required(int(1, 65535, 'port')),
});

const ipPoolSpec = obj(
  {
    cidr: required(cidrCheck()),
    blockSize: withDefault(int(0, 128, 'blockSize'), (s: Record<string, unknown>) => (cidrVersion(s.cidr) === 6 ? 122 : 26)),
    ipipMode: withDefault(oneOf(ENCAP), 'Never'),
    vxlanMode: withDefault(oneOf(ENCAP), 'Never'),
    natOutgoing: withDefault(bool, false),
    disabled: withDefault(bool, false),
    disableBGPExport: withDefault(bool, false),
    nodeSelector: withDefault(selector, 'all()'),
    namespaceSelector: selector,
    allowedUses: withDefault(list(oneOf(['Workload', 'Tunnel']), { unique: true, nonEmpty: true }), ['Workload', 'Tunnel']),
    assignmentMode: withDefault(oneOf(['Automatic', 'Manual']), 'Automatic'),
  },
  (s, path, ctx) => {
    const c = parseCIDR(s.cidr as string, false) as ParsedCIDR;
    if (!c.aligned) fail(ctx, join(path, 'cidr'), `CIDR '${String(s.cidr)}' has host bits set; did you mean '${c.canonical}'?`);
    s.cidr = c.canonical;
    if (s.nodeSelector === '') s.nodeSelector = 'all()';
    const bs = s.blockSize as number;
    const [lo, hi] = c.version === 4 ? [20, 32] : [116, 128];
    if (bs < lo || bs > hi) fail(ctx, join(path, 'blockSize'), `blockSize ${bs} out of range ${lo}-${hi} for an IPv${c.version} pool`);
    if (bs < c.prefix) fail(ctx, join(path, 'blockSize'), `blockSize ${bs} is larger than the pool (/${c.prefix})`);
    if (c.version === 6 && s.ipipMode !== 'Never') fail(ctx, join(path, 'ipipMode'), 'IPIP is not supported on an IPv6 pool');
    if (s.ipipMode !== 'Never' && s.vxlanMode !== 'Never') fail(ctx, join(path, 'vxlanMode'), 'ipipMode and vxlanMode cannot both be enabled');
  },
);

const COMMUNITY_VALUE = /^(\d+):(\d+)(?::(\d+))?$/;

function communityValueProblem(v: string): string | undefined {
  const m = COMMUNITY_VALUE.exec(v);
  if (!m) return `'${clip(v)}' is not a community value (aa:nn or aa:nn:mm)`;
  const parts = m.slice(1).filter((x) => x !== undefined).map(Number);
  const max = parts.length === 2 ? 65535 : MAX_AS;
  if (parts.some((p) => p > max)) return `community '${v}': each part must be 0-${max}`;
  return undefined;
}

const bgpConfigurationSpec = obj(
  {
    logSeverityScreen: logLevel,
    nodeToNodeMeshEnabled: bool,
    asNumber,
    serviceLoadBalancerIPs: list(cidrBlock),
    serviceExternalIPs: list(cidrBlock),
    serviceClusterIPs: list(cidrBlock),
    serviceLoadBalancerAggregation: oneOf(['Enabled', 'Disabled']),
    communities: list(
      obj({
        name: required(name),
        value: required((v, path, ctx) => {
          if (typeof v !== 'string') wrongType(ctx, path, 'string', v);
          const problem = communityValueProblem(v);
          return problem ? fail(ctx, path, problem) : v;
        }),
      }),
    ),
    prefixAdvertisements: list(obj({ cidr: required(net), communities: required(list(str({ nonEmpty: true }))) })),
    listenPort: int(1, 65535, 'port'),
    nodeMeshPassword: secretPassword,
    nodeMeshMaxRestartTime: duration,
    bindMode: oneOf(['None', 'NodeIP']),
    ignoredInterfaces: list(str({ pattern: /^[a-zA-Z0-9_.*@:-]{1,15}$/, what: 'an interface name or pattern' })),
    localWorkloadPeeringIPV4: ip(4),
    localWorkloadPeeringIPV6: ip(6),
  },
  (s, path, ctx) => {
    const names = new Set(((s.communities as Array<{ name: string }> | undefined) ?? []).map((c) => c.name));
    ((s.prefixAdvertisements as Array<{ communities: string[] }> | undefined) ?? []).forEach((pa, i) => {
      pa.communities.forEach((c, j) => {
        if (!names.has(c) && communityValueProblem(c)) {
          fail(ctx, `${path}.prefixAdvertisements[${i}].communities[${j}]`, `'${clip(c)}' is neither a community defined in spec.communities nor a community value (aa:nn or aa:nn:mm)`);
        }
      });
    });
  },
);

const bgpPeerSpec = obj(
  {
    node: name,
    nodeSelector: selector,
    peerIP: ipPort,
    asNumber,
    localASNumber: asNumber,
    peerSelector: selector,
    keepOriginalNextHop: bool,
    nextHopMode: oneOf(['Auto', 'Self', 'Keep']),
    password: secretPassword,
    sourceAddress: oneOf(['UseNodeIP', 'None']),
    maxRestartTime: duration,
    numAllowedLocalASNumbers: int(0, 2147483647, 'numAllowedLocalASNumbers'),
    ttlSecurity: int(0, 255, 'ttlSecurity'),
    reachableBy: ip(),
    filters: list(name),
    localWorkloadSelector: selector,
    reversePeering: oneOf(['Auto', 'Manual']),
    keepaliveTime: duration,
  },
  (s, path, ctx) => {
    if (s.node !== undefined && s.nodeSelector !== undefined) fail(ctx, join(path, 'nodeSelector'), 'cannot be used together with spec.node');
    if (s.peerIP !== undefined && s.peerSelector !== undefined) fail(ctx, join(path, 'peerSelector'), 'cannot be used together with spec.peerIP');
    if (s.peerIP !== undefined && s.asNumber === undefined) fail(ctx, join(path, 'asNumber'), 'missing required field (required when spec.peerIP is set)');
  },
);

const nodeSpec = obj({
  bgp: obj({
    asNumber,
    ipv4Address: cidrCheck({ allowIP: true, version: 4 }),
    ipv6Address: cidrCheck({ allowIP: true, version: 6 }),
    ipv4IPIPTunnelAddr: ip(4),
    routeReflectorClusterID: ip(4),
  }),
  ipv4VXLANTunnelAddr: ip(4),
  vxlanTunnelMACAddr: mac,
  ipv6VXLANTunnelAddr: ip(6),
  vxlanTunnelMACAddrV6: mac,
  orchRefs: list(obj({ nodeName: str(), orchestrator: required(str({ nonEmpty: true })) })),
  addresses: list(obj({ address: required(net), type: oneOf(['InternalIP', 'ExternalIP', 'CalicoNodeIP']) })),
  wireguard: obj({ interfaceIPv4Address: ip(4), interfaceIPv6Address: ip(6) }),
});

const profileSpec = obj({ ingress: list(rule(true)), egress: list(rule(true)), labelsToApply: labels });

const tierSpec = obj({ order: finite, defaultAction: withDefault(oneOf(['Deny', 'Pass']), 'Deny') });

const workloadEndpointSpec = obj({
  orchestrator: str(),
  workload: str(),
  node: required(name),
  containerID: str(),
  pod: str(),
  endpoint: str(),
  serviceAccountName: str(),
  ipNetworks: list(net),
  ipNATs: list(obj({ internalIP: required(ip()), externalIP: required(ip()) })),
  ipv4Gateway: ip(4),
  ipv6Gateway: ip(6),
  profiles: list(name),
  interfaceName: required(interfaceName),
  mac,
  ports: list(
    obj({
      name: required(str({ pattern: PORT_NAME, what: 'a valid port name', nonEmpty: true })),
      protocol: required(portProtocol(['TCP', 'UDP', 'SCTP'])),
      port: required(int(1, 65535, 'port')),
      hostPort: int(0, 65535, 'port'),
      hostIP: ip(),
    }),
  ),
  allowSpoofedSourcePrefixes: list(net),
});

const hostEndpointSpec = obj(
  {
    node: required(name),
    interfaceName: (v, path, ctx) => (v === '*' ? v : interfaceName(v, path, ctx)),
    expectedIPs: list(ip()),
    profiles: list(name),
    ports: list(endpointPort),
  },
  (s, path, ctx) => {
    if (s.interfaceName === undefined && ((s.expectedIPs as unknown[] | undefined)?.length ?? 0) === 0) {
      fail(ctx, join(path, 'interfaceName'), 'one of interfaceName or expectedIPs is required');
    }
  },
);

const networkSetSpec = obj({ nets: list(net) });

const clusterInformationSpec = obj({ clusterGUID: str(), clusterType: str(), calicoVersion: str(), datastoreReady: bool, variant: str() });

/** Felix's fields by type: one declaration each. Unlisted fields are errors. */
const FELIX_DURATIONS = [
  'dataplaneWatchdogTimeout', 'routeRefreshInterval', 'interfaceRefreshInterval', 'iptablesRefreshInterval',
  'iptablesPostWriteCheckInterval', 'iptablesLockTimeout', 'iptablesLockProbeInterval', 'ipsetsRefreshInterval',
  'xdpRefreshInterval', 'netlinkTimeout', 'reportingInterval', 'reportingTTL', 'endpointReportingDelay',
  'usageReportingInitialDelay', 'usageReportingInterval', 'debugSimulateCalcGraphHangAfter',
  'debugSimulateDataplaneHangAfter', 'debugSimulateDataplaneApplyDelay', 'nftablesRefreshInterval',
  'bpfKubeProxyMinSyncPeriod', 'flowLogsFlushInterval', 'wireguardKeepAlive',
];
const FELIX_BOOLS = [
  'useInternalDataplaneDriver', 'ipv6Support', 'ipipEnabled', 'vxlanEnabled', 'allowVXLANPacketsFromWorkloads',
  'allowIPIPPacketsFromWorkloads', 'endpointReportingEnabled', 'disableConntrackInvalidCheck', 'healthEnabled',
  'prometheusMetricsEnabled', 'prometheusGoMetricsEnabled', 'prometheusProcessMetricsEnabled',
  'prometheusWireGuardMetricsEnabled', 'usageReportingEnabled', 'removeExternalRoutes', 'debugDisableLogDropping',
  'sidecarAccelerationEnabled', 'xdpEnabled', 'genericXDPEnabled', 'bpfEnabled', 'bpfDisableUnprivileged',
  'bpfConnectTimeLoadBalancingEnabled', 'bpfKubeProxyIptablesCleanupEnabled', 'bpfKubeProxyEndpointSlicesEnabled',
  'bpfHostConntrackBypass', 'bpfPolicyDebugEnabled', 'routeSyncDisabled', 'wireguardEnabled', 'wireguardEnabledV6',
  'wireguardThreadingEnabled', 'wireguardHostEncryptionEnabled', 'flowLogsCollectorDebugTrace', 'requireMTUFile',
];
const FELIX_STRINGS = [
  'dataplaneDriver', 'iptablesLockFilePath', 'featureDetectOverride', 'featureGates', 'metadataAddr',
  'openstackRegion', 'interfacePrefix', 'interfaceExclude', 'logPrefix', 'logFilePath', 'logDebugFilenameRegex',
  'endpointStatusPathPrefix', 'healthHost', 'prometheusMetricsHost', 'policySyncPathPrefix',
  'deviceRouteSourceAddress', 'deviceRouteSourceAddressIPv6', 'programClusterRoutes', 'ipForwarding',
  'debugMemoryProfilePath', 'debugHost', 'iptablesNATOutgoingInterfaceFilter', 'bpfCTLBLogFilter',
  'bpfDataIfacePattern', 'bpfL3IfacePattern', 'bpfMapSizeConntrackScaling', 'bpfEnforceRPF',
  'bpfDisableGROForIfaces', 'cgroupV2Path', 'bpfRedirectToPeer', 'flowLogsGoldmaneServer', 'flowLogsLocalReporter',
  'bpfProfiling', 'wireguardInterfaceName', 'wireguardInterfaceNameV6', 'mtuIfacePattern', 'nftablesMode',
  'flowLogsPolicyEvaluationMode', 'floatingIPs',
];
const FELIX_INTS: Record<string, [number, number]> = {
  maxIpsetSize: [0, 2147483647], metadataPort: [0, 65535], ipipMTU: [0, 65535], vxlanMTU: [0, 65535],
  vxlanMTUV6: [0, 65535], vxlanPort: [0, 65535], vxlanVNI: [0, 16777215], iptablesMarkMask: [0, 4294967295],
  nftablesMarkMask: [0, 4294967295], healthPort: [0, 65535], prometheusMetricsPort: [0, 65535], debugPort: [0, 65535],
  deviceRouteProtocol: [0, 255], bpfExtToServiceConnmark: [0, 4294967295], bpfMapSizeNATFrontend: [0, 2147483647],
  bpfMapSizeNATBackend: [0, 2147483647], bpfMapSizeNATAffinity: [0, 2147483647], bpfMapSizeRoute: [0, 2147483647],
  bpfMapSizeConntrack: [0, 2147483647], bpfMapSizePerCpuConntrack: [0, 2147483647],
  bpfMapSizeConntrackCleanupQueue: [1, 2147483647], bpfMapSizeIPSets: [0, 2147483647],
  bpfMapSizeIfState: [0, 2147483647], bpfExportBufferSizeMB: [0, 2147483647], wireguardListeningPort: [1, 65535],
  wireguardListeningPortV6: [1, 65535], wireguardRoutingRulePriority: [1, 32765], wireguardMTU: [0, 65535],
  wireguardMTUV6: [0, 65535], goGCThreshold: [-1, 2147483647], goMemoryLimitMB: [-1, 2147483647],
  goMaxProcs: [-1, 2147483647],
};
const FELIX_ENUMS: Record<string, readonly string[]> = {
  iptablesBackend: ['Legacy', 'NFT', 'Auto'],
  chainInsertMode: ['Insert', 'Append'],
  defaultEndpointToHostAction: ['Drop', 'Return', 'Accept'],
  iptablesFilterAllowAction: ['Accept', 'Return'],
  iptablesMangleAllowAction: ['Accept', 'Return'],
  iptablesFilterDenyAction: ['Drop', 'Reject'],
  nftablesFilterAllowAction: ['Accept', 'Return'],
  nftablesMangleAllowAction: ['Accept', 'Return'],
  nftablesFilterDenyAction: ['Drop', 'Reject'],
  logSeverityScreen: LOG_LEVELS,
  logSeverityFile: LOG_LEVELS,
  logSeveritySys: LOG_LEVELS,
  natOutgoingExclusions: ['IPPoolsOnly', 'IPPoolsAndHostIPs'],
  bpfLogLevel: ['Off', 'Info', 'Debug'],
  bpfConntrackLogLevel: ['Off', 'Debug'],
  bpfConntrackMode: ['Auto', 'Userspace', 'BPFProgram'],
  bpfConnectTimeLoadBalancing: ['TCP', 'Enabled', 'Disabled'],
  bpfHostNetworkedNATWithoutCTLB: ['Enabled', 'Disabled'],
  bpfExternalServiceMode: ['Tunnel', 'DSR'],
  bpfAttachType: ['TC', 'TCX'],
  routeSource: ['CalicoIPAM', 'WorkloadIPs'],
  awsSrcDstCheck: ['DoNothing', 'Enable', 'Disable'],
  serviceLoopPrevention: ['Drop', 'Reject', 'Disabled'],
  workloadSourceSpoofing: ['Disabled', 'Any'],
  windowsManageFirewallRules: ['Enabled', 'Disabled'],
};

const protoPort = obj({ protocol: required(portProtocol(['TCP', 'UDP', 'SCTP'])), port: required(portNumber), net });
const routeTableRange = obj({ min: required(int(1, 4294967295, 'route table')), max: required(int(1, 4294967295, 'route table')) }, (r, path, ctx) => {
  if ((r.min as number) > (r.max as number)) fail(ctx, join(path, 'min'), `min ${String(r.min)} > max ${String(r.max)}`);
});

function felixSpec(): Check {
  const fields: Record<string, Field | Check> = {};
  for (const f of FELIX_DURATIONS) fields[f] = duration;
  for (const f of FELIX_BOOLS) fields[f] = bool;
  for (const f of FELIX_STRINGS) fields[f] = str();
  for (const [f, [lo, hi]] of Object.entries(FELIX_INTS)) fields[f] = int(lo, hi, f);
  for (const [f, values] of Object.entries(FELIX_ENUMS)) fields[f] = oneOf(values);
  Object.assign(fields, {
    failsafeInboundHostPorts: list(protoPort),
    failsafeOutboundHostPorts: list(protoPort),
    healthTimeoutOverrides: list(obj({ name: required(str({ nonEmpty: true })), timeout: required(duration) })),
    kubeNodePortRanges: list(port),
    natPortRange: port,
    bpfPSNATPorts: port,
    natOutgoingAddress: ip(4),
    externalNodesList: list(net),
    bpfConntrackTimeouts: map(str()),
    bpfLogFilters: map(str()),
    bpfDSROptoutCIDRs: list(net),
    bpfExcludeCIDRsFromNAT: list(net),
    bpfForceTrackPacketsFromIfaces: list(str()),
    routeTableRange,
    routeTableRanges: list(routeTableRange),
  });
  return obj(fields);
}

const SPECS: Record<string, Check> = {
  IPPool: ipPoolSpec,
  BGPConfiguration: bgpConfigurationSpec,
  BGPPeer: bgpPeerSpec,
  Node: nodeSpec,
  Profile: profileSpec,
  GlobalNetworkPolicy: policySpec(true),
  NetworkPolicy: policySpec(false),
  Tier: tierSpec,
  WorkloadEndpoint: workloadEndpointSpec,
  HostEndpoint: hostEndpointSpec,
  GlobalNetworkSet: networkSetSpec,
  NetworkSet: networkSetSpec,
  FelixConfiguration: felixSpec(),
  ClusterInformation: clusterInformationSpec,
};

for (const k of KINDS) if (!SPECS[k.kind]) throw new Error(`validate.ts: no schema for kind ${k.kind}`);

// ---------------------------------------------------------------------------------------------
// The envelope

function metadata(info: KindInfo): Check {
  return obj(
    {
      name: required(name),
      namespace: info.namespaced
        ? withDefault((v, path, ctx) => (v === '' ? 'default' : dnsLabel(v, path, ctx)), 'default')
        : (v, path, ctx) => (v === '' ? undefined : fail(ctx, path, `not allowed: ${info.kind} is not namespaced`)),
      resourceVersion: str(),
      uid: str(),
      creationTimestamp: str(),
      generation: int(0, Number.MAX_SAFE_INTEGER, 'generation'),
      labels,
      annotations: stringMap,
    },
    (m) => {
      if (m.namespace === undefined) delete m.namespace;
    },
  );
}

/** Rules that need the whole resource (metadata and spec together). */
function resourceRules(info: KindInfo, meta: Record<string, unknown>, spec: Record<string, unknown>, ctx: Ctx): void {
  const resName = meta.name as string;
  if (info.kind === 'GlobalNetworkPolicy' || info.kind === 'NetworkPolicy') {
    const tier = spec.tier as string;
    if (tier !== 'default' && !resName.startsWith(`${tier}.`)) {
      fail(ctx, 'metadata.name', `policy in tier '${tier}' must be named '${tier}.<name>', got '${resName}'`);
    }
  }
  if (info.kind === 'Tier') {
    // Policy names are "<tier>.<name>", so a dot in a tier name would be ambiguous.
    if (resName.includes('.')) fail(ctx, 'metadata.name', `tier name '${resName}' must not contain '.'`);
    if (resName === 'default') delete spec.order;
  }
}

function validateInto(doc: unknown, ctx: { kind: string; name: string; errors: ValidationError[] }): Resource | undefined {
  if (!isPlainObject(doc)) {
    ctx.errors.push(new ValidationError('', '', '', `wrong type: expected a resource object, got ${typeName(doc)}`));
    return undefined;
  }
  const meta0 = doc.metadata;
  const givenName = isPlainObject(meta0) && typeof meta0.name === 'string' ? meta0.name : '';
  const givenKind = typeof doc.kind === 'string' ? doc.kind : '';
  ctx.name = givenName;
  ctx.kind = givenKind;
  if (doc.apiVersion !== API_VERSION) {
    const reason = doc.apiVersion === undefined ? 'missing required field' : `must be ${API_VERSION}, got ${typeof doc.apiVersion === 'string' ? `'${clip(doc.apiVersion)}'` : typeName(doc.apiVersion)}`;
    ctx.errors.push(new ValidationError(givenKind, givenName, 'apiVersion', reason));
  }
  const info = KINDS.find((k) => k.kind === givenKind);
  if (!info) {
    let reason: string;
    if (doc.kind === undefined) reason = 'missing required field';
    else if (typeof doc.kind !== 'string') reason = `wrong type: expected string, got ${typeName(doc.kind)}`;
    else {
      const near = lookupKind(doc.kind);
      reason = `unknown kind '${clip(doc.kind)}'${near ? ` (did you mean ${near.kind}?)` : ''}`;
    }
    ctx.errors.push(new ValidationError(givenKind, givenName, 'kind', reason));
    return undefined;
  }
  const envelope = obj({
    apiVersion: str(),
    kind: str(),
    metadata: required(metadata(info)),
    spec: SPECS[info.kind],
    ...(info.kind === 'Node' ? { status: anyJson } : {}),
  });
  let out: Record<string, unknown> | undefined;
  // A missing spec is validated as an empty one so required spec fields are reported by path.
  const withSpec = doc.spec === undefined || doc.spec === null ? { ...doc, spec: {} } : doc;
  const ok = attempt(ctx, () => {
    out = envelope(withSpec, '', ctx) as Record<string, unknown>;
  });
  if (!ok || !out || ctx.errors.length > 0) return undefined;
  const result = out;
  if (!attempt(ctx, () => resourceRules(info, result.metadata as Record<string, unknown>, result.spec as Record<string, unknown>, ctx))) return undefined;
  const resource: Resource = { apiVersion: API_VERSION, kind: info.kind, metadata: result.metadata as unknown as ObjectMeta, spec: result.spec as Record<string, unknown> };
  if (result.status !== undefined) resource.status = result.status as Record<string, unknown>;
  return resource;
}

function run(doc: unknown): { resource?: Resource; errors: ValidationError[] } {
  const ctx = { kind: '', name: '', errors: [] as ValidationError[] };
  try {
    const resource = validateInto(doc, ctx);
    return { resource, errors: ctx.errors };
  } catch (err) {
    // A bug here must still surface as a ValidationError, never as a crash of the caller.
    return { errors: [...ctx.errors, new ValidationError(ctx.kind, ctx.name, '', `internal error while validating: ${errorMessage(err)}`)] };
  }
}

/**
 * Checks a parsed document and returns a normalised copy with Calico's defaults applied.
 * Throws the first ValidationError found.
 */
export function validateResource(doc: unknown): Resource {
  const { resource, errors } = run(doc);
  if (errors.length > 0 || !resource) throw errors[0] ?? new ValidationError('', '', '', 'invalid resource');
  return resource;
}

/** Every problem with a document (empty when it is valid). */
export function validateAll(doc: unknown): ValidationError[] {
  return run(doc).errors;
}
