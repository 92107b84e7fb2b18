import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { parseSelector, printSelector, selectorFromAst, SelectorSyntaxError, checkSelector } from '../../src/policy/selector.ts';
import type { SelectorNode } from '../../src/policy/selector.ts';
import { RoutecatError } from '../../src/errors.ts';

const L = { app: 'web', tier: 'front', 'projectcalico.org/name': 'prod', empty: '' };

function matches(sel: string, labels: Record<string, string> = L): boolean {
  return parseSelector(sel).evaluate(labels);
}

test('selector: equality, inequality and has()', () => {
  assert.equal(matches('app == "web"'), true);
  assert.equal(matches("app == 'db'"), false);
  assert.equal(matches('missing == ""'), false, '== needs the label present');
  assert.equal(matches('empty == ""'), true);
  assert.equal(matches('app != "db"'), true);
  assert.equal(matches('missing != "db"'), true, '!= matches an absent label, as in Calico');
  assert.equal(matches('has(app)'), true);
  assert.equal(matches('has( tier )'), true);
  assert.equal(matches('has(missing)'), false);
  assert.equal(matches('projectcalico.org/name == "prod"'), true);
});

test('selector: in, not in (including empty and trailing-comma sets)', () => {
  assert.equal(matches('app in {"db", "web"}'), true);
  assert.equal(matches("app in {'db'}"), false);
  assert.equal(matches('missing in {"x"}'), false);
  assert.equal(matches('app in {}'), false);
  assert.equal(matches('app not in {"web"}'), false);
  assert.equal(matches('app not in {"db",}'), true);
  assert.equal(matches('missing not in {"x"}'), true, 'not in matches an absent label');
  assert.equal(matches('app not   in {}'), true);
});

test('selector: contains, starts with, ends with', () => {
  assert.equal(matches('app contains "e"'), true);
  assert.equal(matches('app contains "x"'), false);
  assert.equal(matches('app starts with "we"'), true);
  assert.equal(matches('app starts with "eb"'), false);
  assert.equal(matches('app ends with "eb"'), true);
  assert.equal(matches('app ends with "we"'), false);
  assert.equal(matches('missing contains ""'), false, 'string operators need the label present');
  assert.equal(matches('missing starts with ""'), false);
  assert.equal(matches('missing ends with ""'), false);
});

test('selector: boolean operators, precedence, parentheses, negation', () => {
  assert.equal(matches('app == "web" && tier == "front"'), true);
  assert.equal(matches('app == "web" && tier == "back"'), false);
  assert.equal(matches('app == "db" || tier == "front"'), true);
  // && binds tighter than ||
  assert.equal(matches('app == "db" && tier == "x" || has(app)'), true);
  assert.equal(matches('app == "db" && (tier == "x" || has(app))'), false);
  assert.equal(matches('!has(app)'), false);
  assert.equal(matches('!!has(app)'), true);
  assert.equal(matches('! (app == "db")'), true);
  assert.equal(matches('!(app == "web" && has(tier))'), false);
});

test('selector: all(), global() and the empty selector', () => {
  assert.equal(matches('all()'), true);
  assert.equal(matches('all()', {}), true);
  assert.equal(parseSelector('').text, 'all()');
  assert.equal(parseSelector('   ').text, 'all()');
  assert.equal(matches(''), true);
  const g = parseSelector('global()');
  assert.equal(g.evaluate({}), true, 'global() is true by default, as Calico evaluates it');
  assert.equal(g.evaluate({}, { namespaced: true }), false, 'a namespaced entity is not global');
  assert.equal(g.usesGlobal, true);
  assert.equal(parseSelector('all()').usesGlobal, false);
  assert.equal(parseSelector('!global() || has(a)').evaluate({}, { namespaced: true }), true);
});

test('selector: canonical text normalises quoting, sets, nesting and double negation', () => {
  const cases: Array<[string, string]> = [
    ["app=='web'", 'app == "web"'],
    ['a == \'say "hi"\'', 'a == \'say "hi"\''],
    ['a in {"z", "y", "z"}', 'a in {"y", "z"}'],
    ["a not in {'b',}", 'a not in {"b"}'],
    ['a == "1" && b == "2" || c == "3"', '((a == "1" && b == "2") || c == "3")'],
    ['(a == "1" && (b == "2" && c == "3"))', '(a == "1" && b == "2" && c == "3")'],
    ['!!!has(x)', '!has(x)'],
    ['!(!has(x))', 'has(x)'],
    ['x starts with "a" || x ends with "b" || x contains "c"', '(x starts with "a" || x ends with "b" || x contains "c")'],
    ['  has( a )  ', 'has(a)'],
  ];
  for (const [input, want] of cases) {
    const sel = parseSelector(input);
    assert.equal(sel.text, want, input);
    assert.equal(parseSelector(sel.text).text, sel.text, `round trip of ${input}`);
    assert.deepEqual(parseSelector(sel.text).ast, sel.ast);
  }
  assert.deepEqual(parseSelector('b == "1" && a == "2"').labelKeys, ['a', 'b']);
});

test('selector: syntax errors say what was expected and where', () => {
  const cases: Array<[string, number, RegExp]> = [
    ['a == ', 5, /a quoted string/],
    ['a', 1, /an operator/],
    ['a = "b"', 2, /an operator/],
    ['has(a', 5, /'\)'/],
    ['has()', 4, /a label name/],
    ['(a == "x"', 9, /'\)'/],
    ['a == "x" b', 9, /'&&', '\|\|' or the end/],
    ['a in {"x" "y"}', 10, /',' or '}'/],
    ['a in "x"', 5, /'\{'/],
    ['a == "unterminated', 18, /closing "/],
    ['a starts "x"', 9, /'with'/],
    ['a not "x"', 6, /'in'/],
    ['&& a == "b"', 0, /a label/],
    ['a == "b" &&', 11, /a label/],
    ['all(x)', 4, /'\)' after all\(/],
    ['a inx {}', 2, /an operator/],
    ['a == "b" & c == "d"', 9, /'&&', '\|\|'/],
  ];
  for (const [input, pos, what] of cases) {
    assert.throws(
      () => parseSelector(input),
      (err: unknown) => {
        assert.ok(err instanceof SelectorSyntaxError, `${input}: ${String(err)}`);
        assert.ok(err instanceof RoutecatError);
        assert.equal(err.code, 'E_SELECTOR');
        assert.equal(err.position, pos, `${input}: ${err.message}`);
        assert.match(err.expected, what, input);
        assert.match(err.message, new RegExp(`at position ${pos}$`));
        return true;
      },
    );
  }
  assert.equal(new SelectorSyntaxError('a == ', 5, 'a quoted string').message, 'selector "a == " : expected a quoted string at position 5');
  assert.equal(checkSelector('a == "b"'), null);
  assert.ok(checkSelector('a ==') instanceof SelectorSyntaxError);
});

test('selector: parsed selectors are cached and immutable', () => {
  const a = parseSelector('cache == "me"');
  assert.equal(parseSelector('cache == "me"'), a);
  assert.ok(Object.isFrozen(a));
  assert.ok(Object.isFrozen(a.ast));
});

test('selector: a value with both kinds of quote cannot be printed', () => {
  assert.throws(() => selectorFromAst({ op: 'eq', label: 'a', value: `'"` }), (e: unknown) => e instanceof RoutecatError && e.code === 'E_SELECTOR');
});

// ---- Property: printing any AST and parsing it back evaluates like a reference evaluator ------

const KEYS = ['a', 'b', 'x.y/z', 'has', 'in'];
const VALUES = ['', 'v', 'w', "it's", 'say "hi"', 'a b'];

function reference(node: SelectorNode, labels: Record<string, string>, namespaced: boolean): boolean {
  const has = (k: string) => Object.hasOwn(labels, k);
  switch (node.op) {
    case 'all': return true;
    case 'global': return !namespaced;
    case 'has': return has(node.label);
    case 'eq': return has(node.label) && labels[node.label] === node.value;
    case 'ne': return !has(node.label) || labels[node.label] !== node.value;
    case 'contains': return has(node.label) && labels[node.label].includes(node.value);
    case 'startsWith': return has(node.label) && labels[node.label].startsWith(node.value);
    case 'endsWith': return has(node.label) && labels[node.label].endsWith(node.value);
    case 'in': return has(node.label) && node.values.includes(labels[node.label]);
    case 'notIn': return !has(node.label) || !node.values.includes(labels[node.label]);
    case 'not': return !reference(node.operand, labels, namespaced);
    case 'and': return node.operands.every((o) => reference(o, labels, namespaced));
    case 'or': return node.operands.some((o) => reference(o, labels, namespaced));
  }
}

const key = fc.constantFrom(...KEYS);
const value = fc.constantFrom(...VALUES);
const { node: arbNode } = fc.letrec<{ node: SelectorNode }>((tie) => ({
  node: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    fc.constant<SelectorNode>({ op: 'all' }),
    fc.constant<SelectorNode>({ op: 'global' }),
    key.map((label): SelectorNode => ({ op: 'has', label })),
    fc.record({ op: fc.constantFrom('eq' as const, 'ne' as const, 'contains' as const, 'startsWith' as const, 'endsWith' as const), label: key, value }),
    fc.record({ op: fc.constantFrom('in' as const, 'notIn' as const), label: key, values: fc.array(value, { maxLength: 3 }) }),
    tie('node').map((operand): SelectorNode => ({ op: 'not', operand })),
    fc.record({ op: fc.constantFrom('and' as const, 'or' as const), operands: fc.array(tie('node'), { minLength: 2, maxLength: 3 }) }),
  ),
}));
const arbLabels = fc.dictionary(key, value, { maxKeys: 5 });

test('selector property: print -> parse -> evaluate agrees with a reference evaluator', () => {
  fc.assert(
    fc.property(arbNode, arbLabels, fc.boolean(), (ast, labels, namespaced) => {
      const text = printSelector(ast);
      const sel = parseSelector(text);
      assert.equal(sel.evaluate(labels, { namespaced }), reference(ast, labels, namespaced), text);
      assert.equal(parseSelector(sel.text).text, sel.text, 'canonical text is a fixed point');
    }),
    { numRuns: 500 },
  );
});

test('selector property: arbitrary text either parses or raises SelectorSyntaxError', () => {
  const alphabet = fc.constantFrom('a', 'b', ' ', '(', ')', '!', '=', '&', '|', '"', "'", '{', '}', ',', 'in', 'not', 'has(', 'all()', 'global()', 'contains', 'starts', 'with', '/', '.');
  fc.assert(
    fc.property(fc.array(alphabet, { maxLength: 20 }).map((xs) => xs.join('')), (text) => {
      try {
        const sel = parseSelector(text);
        assert.equal(parseSelector(sel.text).text, sel.text);
      } catch (err) {
        assert.ok(err instanceof SelectorSyntaxError, String(err));
        assert.ok(err.position >= 0 && err.position <= text.length);
      }
    }),
    { numRuns: 1000 },
  );
});
