#!/usr/bin/env node
/**
 * `npm run build`: src/main.ts -> one CommonJS bundle (dist/routecat.cjs) -> one self-contained
 * executable (dist/routecat, a Node Single Executable Application).
 *
 * Steps, each failing loudly:
 *   1. etcd's gRPC protos (node_modules/etcd3/proto/rpc.proto and its imports) -> a protobufjs JSON
 *      descriptor, build/etcd-rpc.json (keepCase: etcd3 and etcd's wire names are snake_case).
 *   2. tsup bundles everything (no externals; a SEA can only `require` built-ins) into CommonJS.
 *      A plugin rewrites etcd3's `loadSync(`${__dirname}/../proto/rpc.proto`)`, which would read a
 *      file that does not exist next to the binary, into `fromJSON(<the descriptor>)`.
 *   3. The bundle is checked: no real dynamic import() (fails under the SEA code cache), no
 *      import.meta, no path to rpc.proto left.
 *   4. SEA: blob from sea/sea-config.json, copy of this node, `strip --strip-all` (before the
 *      injection: a stripped-after binary crashes), postject, chmod.
 *   5. Reports the binary's size and the median start time of `dist/routecat version`.
 *
 * Options: --entry <file> (default src/main.ts), --proto-only (step 1 only), --no-sea (steps 1-3).
 * Owns dist/ and build/; never touches src/.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(join(ROOT, 'package.json'));

const BUILD_DIR = join(ROOT, 'build');
const DIST_DIR = join(ROOT, 'dist');
const DESCRIPTOR = join(BUILD_DIR, 'etcd-rpc.json');
const BUNDLE = join(DIST_DIR, 'routecat.cjs');
const BINARY = join(DIST_DIR, 'routecat');
const SEA_CONFIG = join(ROOT, 'sea', 'sea-config.json');
const SEA_FUSE = 'NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2';

/** The exact call in etcd3 1.1.2's lib/connection-pool.js that reads rpc.proto from disk. */
const ETCD3_LOADSYNC = /\(0, proto_loader_1\.loadSync\)\(`\$\{__dirname\}\/\.\.\/proto\/rpc\.proto`,/;

class BuildError extends Error {}

function fail(message) {
  throw new BuildError(message);
}

function parseArgs(argv) {
  const opts = { entry: 'src/main.ts', protoOnly: false, sea: true };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--entry') opts.entry = argv[++i] ?? fail('--entry needs a file');
    else if (a === '--proto-only') opts.protoOnly = true;
    else if (a === '--no-sea') opts.sea = false;
    else fail(`unknown option '${a}' (known: --entry <file>, --proto-only, --no-sea)`);
  }
  return opts;
}

function step(name) {
  const t0 = performance.now();
  process.stdout.write(`build: ${name} ... `);
  return (detail = '') => process.stdout.write(`ok ${detail}(${Math.round(performance.now() - t0)} ms)\n`);
}

function run(cmd, args, what) {
  const r = spawnSync(cmd, args, { cwd: ROOT, encoding: 'utf8' });
  if (r.error) fail(`${what}: cannot run '${cmd}': ${r.error.message}`);
  if (r.status !== 0) fail(`${what}: '${cmd} ${args.join(' ')}' exited ${r.status ?? r.signal}\n${r.stdout}${r.stderr}`);
  return r;
}

/** Step 1: rpc.proto (+ kv.proto, auth.proto) -> protobufjs JSON, checked by loading it back. */
function generateDescriptor() {
  const done = step('etcd proto descriptor');
  const protobuf = require('protobufjs');
  const protoFile = require.resolve('etcd3/proto/rpc.proto');
  const root = new protobuf.Root();
  root.loadSync(protoFile, { keepCase: true });
  root.resolveAll();
  const json = root.toJSON({ keepComments: false });
  // Load it back the way etcd3 will, and make sure the services it uses are all there.
  const { fromJSON } = require('@grpc/proto-loader');
  const def = fromJSON(json, { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true });
  for (const svc of ['KV', 'Watch', 'Lease', 'Cluster', 'Maintenance', 'Auth']) {
    if (!def[`etcdserverpb.${svc}`]) fail(`descriptor from ${protoFile} has no service etcdserverpb.${svc}`);
  }
  if (!def['etcdserverpb.RangeRequest']?.type?.field?.some((f) => f.name === 'sort_order')) {
    fail('descriptor lost snake_case field names (keepCase)');
  }
  mkdirSync(BUILD_DIR, { recursive: true });
  writeFileSync(DESCRIPTOR, `${JSON.stringify(json)}\n`);
  done(`${relative(ROOT, DESCRIPTOR)}, ${Math.round(statSync(DESCRIPTOR).size / 1024)} KiB `);
}

/**
 * The esbuild plugin for step 2. Afterwards `state.rewrote` tells whether etcd3 was bundled and
 * `state.importMeta` lists the places that use import.meta.
 */
function etcdProtoPlugin(state) {
  return {
    name: 'routecat-etcd-proto',
    setup(build) {
      build.onLoad({ filter: /[\\/]etcd3[\\/]lib[\\/]connection-pool\.js$/ }, (args) => {
        const source = readFileSync(args.path, 'utf8');
        if (!ETCD3_LOADSYNC.test(source)) {
          return {
            errors: [{
              text: `etcd3's loadSync(rpc.proto) call not found in ${args.path}: etcd3 changed, update ETCD3_LOADSYNC in scripts/build.mjs`,
            }],
          };
        }
        state.rewrote = true;
        const contents = source.replace(ETCD3_LOADSYNC, `(0, proto_loader_1.fromJSON)(require(${JSON.stringify(DESCRIPTOR)}),`);
        return { contents, loader: 'js' };
      });
      build.onEnd((result) => {
        // import.meta is empty in CommonJS (esbuild rewrites it to {} and warns): anything that
        // needs it would break at run time. Collected here, reported by checkBundle().
        for (const w of result.warnings) {
          if (w.id === 'empty-import-meta') state.importMeta.push(w.location ? `${w.location.file}:${w.location.line}` : w.text);
        }
      });
    },
  };
}

/** Step 2: tsup -> dist/routecat.cjs. */
async function bundle(entry) {
  const done = step(`bundle ${entry}`);
  if (!existsSync(join(ROOT, entry))) fail(`entry ${entry} does not exist`);
  const { build } = await import('tsup');
  const state = { rewrote: false, importMeta: [] };
  rmSync(BUNDLE, { force: true });
  await build({
    config: false,
    entry: { routecat: entry },
    outDir: DIST_DIR,
    format: ['cjs'],
    outExtension: () => ({ js: '.cjs' }),
    platform: 'node',
    target: 'node20',
    noExternal: [/.*/],
    removeNodeProtocol: false,
    splitting: false,
    treeshake: false,
    minify: true,
    sourcemap: false,
    dts: false,
    clean: false,
    shims: false,
    silent: true,
    tsconfig: join(ROOT, 'tsconfig.json'),
    esbuildPlugins: [etcdProtoPlugin(state)],
    esbuildOptions(o) {
      o.legalComments = 'none';
    },
  });
  if (!existsSync(BUNDLE)) fail(`tsup produced no ${relative(ROOT, BUNDLE)}`);
  done(`${relative(ROOT, BUNDLE)}, ${(statSync(BUNDLE).size / 1048576).toFixed(2)} MB `);
  return state;
}

/** Step 3: what would break only inside the SEA, found now. */
function checkBundle(state) {
  const done = step('check bundle');
  const code = readFileSync(BUNDLE, 'utf8');
  const problems = [];
  const around = (i) => code.slice(Math.max(0, i - 60), i + 60).replace(/\s+/g, ' ');
  for (const m of code.matchAll(/(?<![\w$.])import\s*\(/g)) {
    problems.push(`dynamic import() left in the bundle (fails under the SEA code cache): ...${around(m.index)}...`);
  }
  for (const m of code.matchAll(/\bimport\.meta\b/g)) problems.push(`import.meta left in the bundle: ...${around(m.index)}...`);
  for (const where of state.importMeta) problems.push(`import.meta is empty in CommonJS, used at ${where} (shim it or avoid it)`);
  for (const m of code.matchAll(/proto\/rpc\.proto/g)) problems.push(`a path to rpc.proto is left in the bundle: ...${around(m.index)}...`);
  if (problems.length > 0) fail(`bundle check failed:\n  ${problems.join('\n  ')}`);
  done(state.rewrote ? 'etcd3 bundled with its protos inlined ' : 'etcd3 not imported by this entry ');
}

/** Step 4: the single executable. */
function makeSea() {
  const done = step('single executable');
  const config = JSON.parse(readFileSync(SEA_CONFIG, 'utf8'));
  if (resolve(ROOT, config.main) !== BUNDLE) fail(`${relative(ROOT, SEA_CONFIG)}: main must be ${relative(ROOT, BUNDLE)}`);
  const blob = resolve(ROOT, config.output);
  mkdirSync(dirname(blob), { recursive: true });
  rmSync(blob, { force: true });
  run(process.execPath, ['--experimental-sea-config', SEA_CONFIG], 'SEA blob');
  if (!existsSync(blob)) fail(`node --experimental-sea-config wrote no ${relative(ROOT, blob)}`);

  rmSync(BINARY, { force: true }); // unlink first: the old binary may be running
  copyFileSync(process.execPath, BINARY);
  chmodSync(BINARY, 0o755);
  const strip = spawnSync('strip', ['--strip-all', BINARY], { encoding: 'utf8' });
  if (strip.error || strip.status !== 0) {
    process.stdout.write(`\nbuild: WARNING: 'strip --strip-all' failed (${strip.error?.message ?? strip.stderr.trim()}); the binary stays unstripped and larger\n`);
  }
  const postject = join(ROOT, 'node_modules', '.bin', 'postject');
  if (!existsSync(postject)) fail('node_modules/.bin/postject missing: run npm ci');
  run(postject, [BINARY, 'NODE_SEA_BLOB', blob, '--sentinel-fuse', SEA_FUSE], 'postject');
  chmodSync(BINARY, 0o755);
  done(`${relative(ROOT, BINARY)} `);
}

/** Step 5: size, a working `version`, and its median start time. */
function measure() {
  const size = statSync(BINARY).size / 1048576;
  const check = spawnSync(BINARY, ['version'], { encoding: 'utf8', env: {} });
  if (check.status !== 0) fail(`dist/routecat version exited ${check.status ?? check.signal}: ${check.stderr}`);
  if (/experimental/i.test(check.stderr)) fail(`dist/routecat version printed a warning: ${check.stderr.trim()}`);
  const times = [];
  for (let i = 0; i < 11; i++) {
    const t0 = performance.now();
    spawnSync(BINARY, ['version'], { env: {}, stdio: 'ignore' });
    times.push(performance.now() - t0);
  }
  times.sort((a, b) => a - b);
  const median = times[Math.floor(times.length / 2)];
  console.log(`build: ${check.stdout.trim()}`);
  console.log(`build: dist/routecat size: ${size.toFixed(1)} MB`);
  console.log(`build: 'dist/routecat version' start time: median ${median.toFixed(0)} ms of ${times.length} runs (min ${times[0].toFixed(0)} ms, max ${times[times.length - 1].toFixed(0)} ms)`);
}

async function buildAll() {
  const opts = parseArgs(process.argv.slice(2));
  generateDescriptor();
  if (opts.protoOnly) return;
  const state = await bundle(opts.entry);
  checkBundle(state);
  if (!opts.sea) return;
  makeSea();
  measure();
}

buildAll().catch((err) => {
  process.stdout.write('\n');
  if (err instanceof BuildError) console.error(`build: FAILED: ${err.message}`);
  else if (Array.isArray(err?.errors)) console.error(`build: FAILED: bundling: ${err.errors.length} error(s), shown above`);
  else console.error(err);
  process.exitCode = 1;
});
