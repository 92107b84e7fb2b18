/**
 * Entry point of the binary (bundled to CommonJS and made a Node SEA). Everything lives in
 * src/cli/main.ts; this file only wires the process to it.
 */
import { main } from './cli/main.ts';

function readStdin(): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    process.stdin.on('data', (c: Buffer) => chunks.push(c));
    process.stdin.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    process.stdin.on('error', reject);
  });
}

const argv = [process.argv0 && !process.argv0.endsWith('node') ? process.argv0 : (process.argv[1] ?? 'routecat'), ...process.argv.slice(2)];
main(argv, process.env, {
  out: (t) => process.stdout.write(t.endsWith('\n') ? t : `${t}\n`),
  err: (t) => process.stderr.write(t.endsWith('\n') ? t : `${t}\n`),
  readStdin,
}).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`routecat: ${String(err)}\n`);
    process.exitCode = 1;
  },
);
