/**
 * `routecat ctl`: calicoctl's habits over the etcd datastore. apply | create | replace | delete |
 * get | validate. Each document is validated and written on its own (one etcd transaction), so a
 * rejected document writes nothing and the others still go in; any rejection makes the exit 1.
 */
import { readFileSync } from 'node:fs';
import { cac } from 'cac';
import { UsageError, ValidationError, errorMessage } from '../errors.ts';
import { lookupKind, DEFAULT_NAMESPACE, KINDS, type KindInfo } from '../model/kinds.ts';
import type { Resource } from '../model/resource.ts';
import { validateResource } from '../model/validate.ts';
import type { ResolvedConfig } from '../config/resolve.ts';
import { formatConfig } from '../config/resolve.ts';
import { addParamOptions, loadConfig } from './options.ts';
import { describeOrigin, parseManifest, type ManifestDoc } from './manifest.ts';
import { formatResources, OUTPUT_FORMATS, type OutputFormat } from './output.ts';
import type { Io } from './main.ts';
import { etcdOptionsFromConfig } from './etcd-config.ts';

type FileVerb = 'apply' | 'create' | 'replace' | 'delete' | 'validate';

const PAST: Record<FileVerb, string> = { apply: 'applied', create: 'created', replace: 'replaced', delete: 'deleted', validate: 'validated' };

interface Store {
  create(r: Resource): Promise<Resource>;
  update(r: Resource): Promise<Resource>;
  apply(r: Resource): Promise<{ resource: Resource; action: string }>;
  delete(k: KindInfo, name: string, namespace?: string, resourceVersion?: string): Promise<Resource>;
  get(k: KindInfo, name: string, namespace?: string): Promise<Resource>;
  list(k: KindInfo, namespace?: string): Promise<Resource[]>;
}

interface Session {
  store: Store;
  close(): void;
}

async function openStore(config: ResolvedConfig): Promise<Session> {
  const { connectEtcd } = await import('../datastore/etcd.ts');
  const { ResourceStore } = await import('../datastore/resource-store.ts');
  const client = connectEtcd(etcdOptionsFromConfig(config));
  return { store: new ResourceStore(client), close: () => client.close() };
}

/** What a delete document needs: a known kind and a name (the spec is ignored). */
function deletionTarget(doc: unknown): { kind: KindInfo; name: string; namespace?: string; resourceVersion?: string } {
  const d = (doc ?? {}) as { kind?: unknown; metadata?: { name?: unknown; namespace?: unknown; resourceVersion?: unknown } };
  const kind = typeof d.kind === 'string' ? lookupKind(d.kind) : undefined;
  const name = typeof d.metadata?.name === 'string' ? d.metadata.name : '';
  if (!kind) throw new ValidationError(String(d.kind ?? ''), name, 'kind', d.kind === undefined ? 'missing required field' : `unknown kind '${String(d.kind)}'`);
  if (!name) throw new ValidationError(kind.kind, '', 'metadata.name', 'missing required field');
  const ns = typeof d.metadata?.namespace === 'string' ? d.metadata.namespace : undefined;
  return {
    kind,
    name,
    namespace: kind.namespaced ? (ns ?? DEFAULT_NAMESPACE) : undefined,
    resourceVersion: typeof d.metadata?.resourceVersion === 'string' ? d.metadata.resourceVersion : undefined,
  };
}

async function readSource(file: string, io: Io): Promise<string> {
  if (file === '-') return io.readStdin();
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    throw new UsageError(`cannot read ${file}: ${errorMessage(err)}`);
  }
}

async function runFileVerb(verb: FileVerb, files: string[], config: ResolvedConfig, io: Io): Promise<number> {
  if (files.length === 0) throw new UsageError(`${verb} needs -f FILE (or -f - for standard input)`);
  let failures = 0;
  const docs: ManifestDoc[] = [];
  for (const file of files) {
    const parsed = parseManifest(await readSource(file, io), file === '-' ? '<stdin>' : file);
    for (const p of parsed.problems) {
      io.err(`Failed to ${verb}: ${p.file}: document ${p.index}: ${p.message}`);
      failures++;
    }
    docs.push(...parsed.docs);
  }
  // Validate everything first: a bad document is reported and never written.
  const ready: Array<{ origin: ManifestDoc; resource?: Resource; target?: ReturnType<typeof deletionTarget> }> = [];
  for (const origin of docs) {
    try {
      if (verb === 'delete') ready.push({ origin, target: deletionTarget(origin.doc) });
      else ready.push({ origin, resource: validateResource(origin.doc) });
    } catch (err) {
      io.err(`Failed to ${verb}: ${describeOrigin(origin)}: ${errorMessage(err)}`);
      failures++;
    }
  }
  if (verb === 'validate') {
    if (ready.length > 0) io.out(`Successfully validated ${ready.length} resource(s)`);
    return failures > 0 ? 1 : 0;
  }
  let done = 0;
  if (ready.length > 0) {
    const session = await openStore(config);
    try {
      for (const item of ready) {
        try {
          if (verb === 'delete' && item.target) {
            const t = item.target;
            await session.store.delete(t.kind, t.name, t.namespace, t.resourceVersion);
          } else if (item.resource) {
            if (verb === 'apply') await session.store.apply(item.resource);
            else if (verb === 'create') await session.store.create(item.resource);
            else await session.store.update(item.resource);
          }
          done++;
        } catch (err) {
          io.err(`Failed to ${verb}: ${describeOrigin(item.origin)}: ${errorMessage(err)}`);
          failures++;
        }
      }
    } finally {
      session.close();
    }
  }
  if (done > 0) io.out(`Successfully ${PAST[verb]} ${done} resource(s)`);
  return failures > 0 ? 1 : 0;
}

interface GetOptions {
  namespace?: string;
  allNamespaces?: boolean;
  output?: string;
}

async function runGet(kindName: string | undefined, name: string | undefined, opts: GetOptions, config: ResolvedConfig, io: Io): Promise<number> {
  if (!kindName) throw new UsageError(`get needs a kind: one of ${KINDS.map((k) => k.plural).join(', ')}`);
  const kind = lookupKind(kindName);
  if (!kind) throw new UsageError(`unknown resource kind '${kindName}'; known kinds: ${KINDS.map((k) => k.plural).join(', ')}`);
  const format = (opts.output ?? 'table') as OutputFormat;
  if (!OUTPUT_FORMATS.includes(format)) throw new UsageError(`-o ${String(opts.output)}: expected one of ${OUTPUT_FORMATS.join(', ')}`);
  if (opts.allNamespaces && name) throw new UsageError('a resource name cannot be combined with -A/--all-namespaces');
  const namespace = kind.namespaced ? (opts.allNamespaces ? undefined : (opts.namespace ?? DEFAULT_NAMESPACE)) : undefined;
  const session = await openStore(config);
  try {
    const resources = name ? [await session.store.get(kind, name, namespace)] : await session.store.list(kind, namespace);
    io.out(formatResources(kind, resources, format, name !== undefined));
    return 0;
  } finally {
    session.close();
  }
}

interface ExplainOptions {
  protocol?: string;
  port?: string | number;
  sourcePort?: string | number;
  output?: string;
}

/** `ctl explain SRC DST`: the verdict and the tiers, policies and rules that decide it. */
async function runExplain(src: string | undefined, dst: string | undefined, opts: ExplainOptions, config: ResolvedConfig, io: Io): Promise<number> {
  if (!src || !dst) throw new UsageError('explain needs a source and a destination: workload endpoint (NAMESPACE/NAME), host endpoint name, or IP');
  const port = (v: unknown, what: string): number | undefined => {
    if (v === undefined) return undefined;
    const n = Number(v);
    if (!Number.isInteger(n) || n < 0 || n > 65535) throw new UsageError(`--${what} ${String(v)}: expected a port number 0-65535`);
    return n;
  };
  const protocol = String(opts.protocol ?? 'tcp').toLowerCase();
  const { connectEtcd } = await import('../datastore/etcd.ts');
  const { RESOURCE_PREFIX } = await import('../datastore/keys.ts');
  const { explainFlow, formatExplanation } = await import('../policy/explain.ts');
  const client = connectEtcd(etcdOptionsFromConfig(config));
  try {
    const kvs = await client.getAll().prefix(RESOURCE_PREFIX).strings();
    const resources = Object.entries(kvs).map(([key, value]) => ({ key, value }));
    const result = explainFlow(resources, {
      src,
      dst,
      protocol: /^\d+$/.test(protocol) ? Number(protocol) : (protocol as 'tcp'),
      dstPort: port(opts.port, 'port'),
      srcPort: port(opts.sourcePort, 'source-port'),
    });
    io.out(opts.output === 'json' ? JSON.stringify(result, null, 2) : formatExplanation(result));
    return 0;
  } finally {
    client.close();
  }
}

async function runDeleteByName(kindName: string, name: string | undefined, opts: GetOptions, config: ResolvedConfig, io: Io): Promise<number> {
  const kind = lookupKind(kindName);
  if (!kind) throw new UsageError(`unknown resource kind '${kindName}'`);
  if (!name) throw new UsageError(`delete ${kindName} needs a NAME (or use -f FILE)`);
  const session = await openStore(config);
  try {
    await session.store.delete(kind, name, kind.namespaced ? (opts.namespace ?? DEFAULT_NAMESPACE) : undefined);
    io.out(`Successfully deleted 1 '${kind.kind}' resource(s)`);
    return 0;
  } catch (err) {
    io.err(`Failed to delete ${kind.kind} '${name}': ${errorMessage(err)}`);
    return 1;
  } finally {
    session.close();
  }
}

function fileList(v: unknown): string[] {
  if (v === undefined) return [];
  return (Array.isArray(v) ? v : [v]).map(String);
}

/** The option parser reads a lone `-` as a flag; `-f -` (standard input) must stay a value. */
function stdinSpelling(args: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    if ((args[i] === '-f' || args[i] === '--filename') && args[i + 1] === '-') {
      out.push('--filename=-');
      i++;
    } else out.push(args[i]!);
  }
  return out;
}

export async function runCtl(args: readonly string[], env: Record<string, string | undefined>, io: Io): Promise<number> {
  const cli = cac('routecat ctl');
  addParamOptions(cli, 'ctl');
  let result: Promise<number> = Promise.resolve(0);
  let config: ResolvedConfig | undefined;
  const cfg = (options: Record<string, unknown>): ResolvedConfig => (config ??= loadConfig('ctl', options, env));
  const fileCommand = (verb: FileVerb, summary: string) =>
    cli
      .command(verb === 'delete' ? 'delete [kind] [name]' : verb, summary)
      .option('-f, --filename <file>', 'manifest file (YAML or JSON, multi-document, List objects); - reads standard input')
      .option('-n, --namespace <ns>', 'namespace, for namespaced kinds (default: default)')
      .action((kindOrOpts: unknown, name?: unknown, opts?: Record<string, unknown>) => {
        const options = (verb === 'delete' ? opts : kindOrOpts) as Record<string, unknown>;
        const c = cfg(options);
        if (verb === 'delete' && typeof kindOrOpts === 'string' && options.filename === undefined) {
          result = runDeleteByName(kindOrOpts, name as string | undefined, options as GetOptions, c, io);
        } else {
          result = runFileVerb(verb, fileList(options.filename), c, io);
        }
      });
  fileCommand('apply', 'create or update resources from a file');
  fileCommand('create', 'create resources from a file (fails for ones that exist)');
  fileCommand('replace', 'replace existing resources from a file (fails for ones that do not exist)');
  fileCommand('delete', 'delete resources named in a file, or KIND NAME');
  fileCommand('validate', 'check resources from a file without writing anything');
  cli
    .command('get [kind] [name]', 'print resources: a table, or YAML/JSON that apply accepts')
    .option('-n, --namespace <ns>', 'namespace, for namespaced kinds (default: default)')
    .option('-A, --all-namespaces', 'every namespace')
    .option('-o, --output <format>', `output format: ${OUTPUT_FORMATS.join('|')} (default: table)`)
    .action((kind: string | undefined, name: string | undefined, opts: Record<string, unknown>) => {
      result = runGet(kind, name, opts as GetOptions, cfg(opts), io);
    });
  cli
    .command('explain [source] [destination]', 'the verdict for a flow and the tiers, policies and rules that decide it (both ends)')
    .option('-p, --protocol <proto>', 'tcp, udp, icmp, icmpv6, sctp or a number (default: tcp)')
    .option('--port <port>', 'destination port')
    .option('--source-port <port>', 'source port')
    .option('-o, --output <format>', 'text (default) or json')
    .action((source: string | undefined, destination: string | undefined, opts: Record<string, unknown>) => {
      result = runExplain(source, destination, opts as ExplainOptions, cfg(opts), io);
    });
  cli
    .command('ipam [action] [...ips]', 'block IPAM: show [--show-blocks] [--ip ADDR] | check | release --ip ADDR...')
    .option('--show-blocks', 'show: list every block with its affinity and use')
    .option('--ip <addr>', 'show: one address\'s allocation; release: the address to release (repeatable)')
    .action((action: string | undefined, ips: string[], opts: Record<string, unknown>) => {
      const c = cfg(opts);
      result = import('../ipam/ctl-ipam.ts').then((m) =>
        m.runIpamCtl({ action, ips: [...fileList(opts.ip), ...ips], showBlocks: opts.showBlocks === true }, etcdOptionsFromConfig(c), io),
      );
    });
  cli.help();
  let parsed;
  try {
    parsed = cli.parse(['routecat', 'ctl', ...stdinSpelling(args)], { run: false });
  } catch (err) {
    throw new UsageError(errorMessage(err));
  }
  if (parsed.options.help) return 0;
  if (parsed.options.printConfig) {
    io.out(formatConfig(cfg(parsed.options)));
    return 0;
  }
  if (!cli.matchedCommand) {
    if (args.length === 0) {
      cli.outputHelp();
      return 0;
    }
    throw new UsageError(`unknown ctl command '${args[0]}'; run 'routecat ctl --help'`);
  }
  await cli.runMatchedCommand();
  return result;
}
