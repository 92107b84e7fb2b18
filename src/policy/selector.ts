/**
 * Calico's label selector language: tokenizer, recursive-descent parser, canonical printer and a
 * compiled evaluator. Owns the grammar and its meaning; knows nothing about resources, IP sets or
 * the dataplane (callers turn selectors into IP sets elsewhere).
 *
 * Grammar (lowest precedence first), as libcalico-go's parser:
 *   or    := and ('||' and)*
 *   and   := op ('&&' op)*
 *   op    := '!'* ( 'has(' key ')' | 'all()' | 'global()' | '(' or ')'
 *                 | key ('==' | '!=' | 'contains' | 'starts with' | 'ends with') string
 *                 | key ('in' | 'not in') '{' [string (',' string)* [',']] '}' )
 *   key   := [a-zA-Z0-9_./-]{1,512}      e.g. `app`, `projectcalico.org/name`
 *   string:= '"' [^"]* '"' | "'" [^']* "'"   (no escapes, as in Calico)
 * An empty (all-whitespace) selector means all().
 *
 * Semantics follow Calico: `k != v` and `k not in {..}` match when k is absent; `==`, `in`,
 * `contains`, `starts with`, `ends with` need k present.
 *
 * global(): Calico's evaluator treats global() as always true; what it really means is "a
 * non-namespaced entity" and the calculation layer applies that. We do the same by default and
 * let a caller that knows better pass `{ namespaced: true }`, which makes global() false.
 *
 * Canonical text (`Selector.text`): Calico's printing (`a == "v"`, `has(a)`, `!x`, `(a && b)`,
 * `k in {"x", "y"}`, strings quoted with `"` unless they contain one) plus normalisation so that
 * equal meaning-preserving spellings print the same: `!!x` collapses to `x`, nested &&/|| flatten,
 * set members are sorted and de-duplicated. Parsing the text yields the same AST again.
 */
import { RoutecatError } from '../errors.ts';

export type SelectorNode =
  | { readonly op: 'all' }
  | { readonly op: 'global' }
  | { readonly op: 'has'; readonly label: string }
  | { readonly op: 'eq' | 'ne' | 'contains' | 'startsWith' | 'endsWith'; readonly label: string; readonly value: string }
  | { readonly op: 'in' | 'notIn'; readonly label: string; readonly values: readonly string[] }
  | { readonly op: 'not'; readonly operand: SelectorNode }
  | { readonly op: 'and' | 'or'; readonly operands: readonly SelectorNode[] };

export type Labels = Readonly<Record<string, string>>;

export interface EvaluateOptions {
  /** The entity lives in a namespace: global() does not match it. Default false. */
  readonly namespaced?: boolean;
}

export interface Selector {
  /** Canonical text; `parseSelector(s.text)` gives an equal selector. */
  readonly text: string;
  readonly ast: SelectorNode;
  /** True when the selector mentions global() anywhere. */
  readonly usesGlobal: boolean;
  /** Label keys the selector looks at, sorted. */
  readonly labelKeys: readonly string[];
  evaluate(labels: Labels, options?: EvaluateOptions): boolean;
}

/** A selector that does not parse: where (0-based character index) and what was expected. */
export class SelectorSyntaxError extends RoutecatError {
  readonly selector: string;
  readonly position: number;
  readonly expected: string;
  constructor(selector: string, position: number, expected: string) {
    super('E_SELECTOR', `selector ${JSON.stringify(selector)} : expected ${expected} at position ${position}`);
    this.name = 'SelectorSyntaxError';
    this.selector = selector;
    this.position = position;
    this.expected = expected;
  }
}

export const MAX_LABEL_KEY_LENGTH = 512;

const KEY_CHAR = /[a-zA-Z0-9_./-]/;

/** True when `s` can appear as a label key in a selector. */
export function isSelectorLabelKey(s: string): boolean {
  return s.length > 0 && s.length <= MAX_LABEL_KEY_LENGTH && /^[a-zA-Z0-9_./-]+$/.test(s);
}

// ---------------------------------------------------------------------------------------------
// Parser: a character-level recursive descent (no separate token list) so every error knows its
// exact position.

class Parser {
  readonly src: string;
  pos = 0;
  constructor(src: string) {
    this.src = src;
  }

  fail(expected: string, at: number = this.pos): never {
    throw new SelectorSyntaxError(this.src, at, expected);
  }

  skipSpace(): void {
    while (this.pos < this.src.length && /\s/.test(this.src[this.pos])) this.pos++;
  }

  atEnd(): boolean {
    this.skipSpace();
    return this.pos >= this.src.length;
  }

  /** Consumes `lit` if it is next (after whitespace). */
  eat(lit: string): boolean {
    this.skipSpace();
    if (this.src.startsWith(lit, this.pos)) {
      this.pos += lit.length;
      return true;
    }
    return false;
  }

  /** Consumes a keyword that is not immediately followed by another key character. */
  eatWord(word: string): boolean {
    this.skipSpace();
    if (!this.src.startsWith(word, this.pos)) return false;
    const next = this.src[this.pos + word.length];
    if (next !== undefined && KEY_CHAR.test(next)) return false;
    this.pos += word.length;
    return true;
  }

  expect(lit: string, what = `'${lit}'`): void {
    if (!this.eat(lit)) this.fail(what);
  }

  parseRoot(): SelectorNode {
    if (this.atEnd()) return { op: 'all' };
    const node = this.parseOr();
    if (!this.atEnd()) this.fail("'&&', '||' or the end of the selector");
    return node;
  }

  parseOr(): SelectorNode {
    const operands = [this.parseAnd()];
    while (this.eat('||')) operands.push(this.parseAnd());
    return operands.length === 1 ? operands[0] : { op: 'or', operands };
  }

  parseAnd(): SelectorNode {
    const operands = [this.parseOperation()];
    while (this.eat('&&')) operands.push(this.parseOperation());
    return operands.length === 1 ? operands[0] : { op: 'and', operands };
  }

  parseOperation(): SelectorNode {
    let negated = false;
    for (;;) {
      this.skipSpace();
      // '!' but not the start of '!=' (which would be a syntax error here anyway).
      if (this.src[this.pos] === '!' && this.src[this.pos + 1] !== '=') {
        this.pos++;
        negated = !negated;
      } else break;
    }
    const node = this.parseTerm();
    return negated ? { op: 'not', operand: node } : node;
  }

  parseTerm(): SelectorNode {
    this.skipSpace();
    const start = this.pos;
    if (this.eat('(')) {
      const inner = this.parseOr();
      this.expect(')', "')'");
      return inner;
    }
    for (const fn of ['has', 'all', 'global'] as const) {
      if (this.src.startsWith(`${fn}(`, this.pos)) {
        this.pos += fn.length + 1;
        if (fn === 'has') {
          this.skipSpace();
          const label = this.parseKey();
          this.expect(')', "')' after the label in has(");
          return { op: 'has', label };
        }
        this.expect(')', `')' after ${fn}(`);
        return { op: fn };
      }
    }
    if (this.pos >= this.src.length || !KEY_CHAR.test(this.src[this.pos])) {
      this.fail("a label, '!', '(', has(), all() or global()", start);
    }
    const label = this.parseKey();
    this.skipSpace();
    const opAt = this.pos;
    if (this.eat('==')) return { op: 'eq', label, value: this.parseString() };
    if (this.eat('!=')) return { op: 'ne', label, value: this.parseString() };
    if (this.eatWord('contains')) return { op: 'contains', label, value: this.parseString() };
    if (this.eatWord('starts')) {
      if (!this.eatWord('with')) this.fail("'with' after 'starts'");
      return { op: 'startsWith', label, value: this.parseString() };
    }
    if (this.eatWord('ends')) {
      if (!this.eatWord('with')) this.fail("'with' after 'ends'");
      return { op: 'endsWith', label, value: this.parseString() };
    }
    if (this.eatWord('not')) {
      if (!this.eatWord('in')) this.fail("'in' after 'not'");
      return { op: 'notIn', label, values: this.parseSet() };
    }
    if (this.eat('in')) {
      const next = this.src[this.pos];
      if (next !== undefined && KEY_CHAR.test(next)) this.pos = opAt;
      else return { op: 'in', label, values: this.parseSet() };
    }
    return this.fail("an operator (==, !=, in, not in, contains, starts with, ends with)", opAt);
  }

  parseKey(): string {
    const start = this.pos;
    while (this.pos < this.src.length && KEY_CHAR.test(this.src[this.pos])) this.pos++;
    if (this.pos === start) this.fail('a label name');
    if (this.pos - start > MAX_LABEL_KEY_LENGTH) this.fail(`a label name of at most ${MAX_LABEL_KEY_LENGTH} characters`, start);
    return this.src.slice(start, this.pos);
  }

  parseString(): string {
    this.skipSpace();
    const quote = this.src[this.pos];
    if (quote !== '"' && quote !== "'") this.fail('a quoted string');
    const close = this.src.indexOf(quote, this.pos + 1);
    if (close < 0) this.fail(`a closing ${quote}`, this.src.length);
    const value = this.src.slice(this.pos + 1, close);
    this.pos = close + 1;
    return value;
  }

  parseSet(): string[] {
    this.expect('{', "'{'");
    const values: string[] = [];
    for (;;) {
      this.skipSpace();
      const c = this.src[this.pos];
      if (c !== '"' && c !== "'") break;
      values.push(this.parseString());
      if (!this.eat(',')) break;
    }
    this.expect('}', values.length === 0 ? "a quoted string or '}'" : "',' or '}'");
    return values;
  }
}

// ---------------------------------------------------------------------------------------------
// Normalisation and printing.

/** Flattens nested and/or, collapses double negation, sorts and de-duplicates set members. */
export function normalizeSelector(node: SelectorNode): SelectorNode {
  switch (node.op) {
    case 'not': {
      const inner = normalizeSelector(node.operand);
      return inner.op === 'not' ? inner.operand : { op: 'not', operand: inner };
    }
    case 'and':
    case 'or': {
      const operands: SelectorNode[] = [];
      for (const o of node.operands) {
        const n = normalizeSelector(o);
        if (n.op === node.op) operands.push(...n.operands);
        else operands.push(n);
      }
      return operands.length === 1 ? operands[0] : { op: node.op, operands };
    }
    case 'in':
    case 'notIn': {
      const values = [...new Set(node.values)].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
      return { op: node.op, label: node.label, values };
    }
    default:
      return node;
  }
}

function quote(s: string): string {
  if (!s.includes('"')) return `"${s}"`;
  if (!s.includes("'")) return `'${s}'`;
  // The language has no escapes, so the parser can never produce such a value.
  throw new RoutecatError('E_SELECTOR', `selector value ${JSON.stringify(s)} contains both kinds of quote and cannot be written`);
}

const BINARY_TEXT = { eq: ' == ', ne: ' != ', contains: ' contains ', startsWith: ' starts with ', endsWith: ' ends with ' } as const;

/** Prints an AST in Calico's style; and/or are always parenthesised so no precedence is implied. */
export function printSelector(node: SelectorNode): string {
  switch (node.op) {
    case 'all':
      return 'all()';
    case 'global':
      return 'global()';
    case 'has':
      return `has(${node.label})`;
    case 'eq':
    case 'ne':
    case 'contains':
    case 'startsWith':
    case 'endsWith':
      return `${node.label}${BINARY_TEXT[node.op]}${quote(node.value)}`;
    case 'in':
    case 'notIn':
      return `${node.label} ${node.op === 'in' ? 'in' : 'not in'} {${node.values.map(quote).join(', ')}}`;
    case 'not':
      return `!${printSelector(node.operand)}`;
    case 'and':
    case 'or':
      return `(${node.operands.map(printSelector).join(node.op === 'and' ? ' && ' : ' || ')})`;
  }
}

// ---------------------------------------------------------------------------------------------
// Compilation: the AST becomes a tree of closures, evaluated once per label set.

type Matcher = (labels: Labels, namespaced: boolean) => boolean;

const hasOwn = Object.prototype.hasOwnProperty;

function get(labels: Labels, key: string): string | undefined {
  return hasOwn.call(labels, key) ? labels[key] : undefined;
}

function compile(node: SelectorNode): Matcher {
  switch (node.op) {
    case 'all':
      return () => true;
    case 'global':
      return (_l, namespaced) => !namespaced;
    case 'has': {
      const k = node.label;
      return (l) => hasOwn.call(l, k);
    }
    case 'eq': {
      const { label: k, value: v } = node;
      return (l) => get(l, k) === v;
    }
    case 'ne': {
      const { label: k, value: v } = node;
      return (l) => get(l, k) !== v;
    }
    case 'contains': {
      const { label: k, value: v } = node;
      return (l) => get(l, k)?.includes(v) ?? false;
    }
    case 'startsWith': {
      const { label: k, value: v } = node;
      return (l) => get(l, k)?.startsWith(v) ?? false;
    }
    case 'endsWith': {
      const { label: k, value: v } = node;
      return (l) => get(l, k)?.endsWith(v) ?? false;
    }
    case 'in': {
      const k = node.label;
      const set = new Set(node.values);
      return (l) => {
        const v = get(l, k);
        return v !== undefined && set.has(v);
      };
    }
    case 'notIn': {
      const k = node.label;
      const set = new Set(node.values);
      return (l) => {
        const v = get(l, k);
        return v === undefined || !set.has(v);
      };
    }
    case 'not': {
      const inner = compile(node.operand);
      return (l, ns) => !inner(l, ns);
    }
    case 'and': {
      const parts = node.operands.map(compile);
      return (l, ns) => parts.every((p) => p(l, ns));
    }
    case 'or': {
      const parts = node.operands.map(compile);
      return (l, ns) => parts.some((p) => p(l, ns));
    }
  }
}

function collect(node: SelectorNode, keys: Set<string>): boolean {
  switch (node.op) {
    case 'all':
      return false;
    case 'global':
      return true;
    case 'not':
      return collect(node.operand, keys);
    case 'and':
    case 'or': {
      let g = false;
      for (const o of node.operands) g = collect(o, keys) || g;
      return g;
    }
    default:
      keys.add(node.label);
      return false;
  }
}

function deepFreeze<T>(v: T): T {
  if (typeof v === 'object' && v !== null && !Object.isFrozen(v)) {
    for (const x of Object.values(v)) deepFreeze(x);
    Object.freeze(v);
  }
  return v;
}

/** Builds a Selector from an AST (normalised first). Useful to tests and to code that rewrites ASTs. */
export function selectorFromAst(ast: SelectorNode): Selector {
  const norm = deepFreeze(normalizeSelector(ast));
  const matcher = compile(norm);
  const keys = new Set<string>();
  const usesGlobal = collect(norm, keys);
  return Object.freeze({
    text: printSelector(norm),
    ast: norm,
    usesGlobal,
    labelKeys: Object.freeze([...keys].sort()),
    evaluate: (labels: Labels, options?: EvaluateOptions) => matcher(labels, options?.namespaced === true),
  });
}

// ---------------------------------------------------------------------------------------------
// Parsing entry point with a bounded cache (least recently used is dropped first).

const CACHE_LIMIT = 4096;
const cache = new Map<string, Selector>();

/** Parses selector text; throws SelectorSyntaxError. Results are cached by text and immutable. */
export function parseSelector(text: string): Selector {
  const hit = cache.get(text);
  if (hit) {
    cache.delete(text);
    cache.set(text, hit);
    return hit;
  }
  const sel = selectorFromAst(new Parser(text).parseRoot());
  cache.set(text, sel);
  if (cache.size > CACHE_LIMIT) cache.delete(cache.keys().next().value as string);
  return sel;
}

/** Null when the text parses, else the syntax error. */
export function checkSelector(text: string): SelectorSyntaxError | null {
  try {
    parseSelector(text);
    return null;
  } catch (err) {
    if (err instanceof SelectorSyntaxError) return err;
    throw err;
  }
}

/** Number of parsed selectors currently cached (for tests and metrics). */
export function selectorCacheSize(): number {
  return cache.size;
}
