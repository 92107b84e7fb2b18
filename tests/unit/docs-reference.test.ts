import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PARAMS, ROLES } from '../../src/config/params.ts';
import { REFERENCE_PATH, renderReference, runGenerator } from '../../scripts/gen-reference.ts';

test('docs/reference.md is what scripts/gen-reference.ts generates from src/config/params.ts', () => {
  let have: string;
  try {
    have = readFileSync(REFERENCE_PATH, 'utf8');
  } catch {
    assert.fail(`${REFERENCE_PATH} is missing: run 'node --import tsx scripts/gen-reference.ts'`);
  }
  assert.ok(have === renderReference(), `${REFERENCE_PATH} is stale: run 'node --import tsx scripts/gen-reference.ts' and commit the result`);
});

test('the reference names every role, flag and environment variable', () => {
  const text = renderReference();
  for (const role of ROLES) assert.match(text, new RegExp(`## \`routecat ${role}\``));
  for (const p of PARAMS) {
    assert.ok(text.includes(`--${p.flag}`), `--${p.flag} is in the reference`);
    if (p.env) assert.ok(text.includes(`\`${p.env}\``), `${p.env} is in the reference`);
  }
});

test('--check exits 1 on a stale file and 0 on a fresh one', () => {
  const dir = mkdtempSync(join(tmpdir(), 'rc-ref-'));
  const file = join(dir, 'reference.md');
  const quiet = process.stderr.write;
  process.stderr.write = () => true;
  try {
    assert.equal(runGenerator(['--check'], file), 1, 'missing file');
    writeFileSync(file, `${renderReference()}\nedited by hand\n`);
    assert.equal(runGenerator(['--check'], file), 1, 'stale file');
    writeFileSync(file, renderReference());
    assert.equal(runGenerator(['--check'], file), 0, 'fresh file');
  } finally {
    process.stderr.write = quiet;
    rmSync(dir, { recursive: true, force: true });
  }
});
