/**
 * Reads the documents of a manifest: multi-document YAML, JSON, and `List` objects (whose items
 * are expanded). Each document keeps where it came from (file, document index, item index) so an
 * error can name it. Parsing only: validation is the model's job.
 */
import { parseAllDocuments } from 'yaml';

export interface ManifestDoc {
  readonly file: string;
  /** 1-based index of the YAML document in the file. */
  readonly index: number;
  /** 1-based index in a List's items, when the document was a List. */
  readonly item?: number;
  readonly doc: unknown;
}

export interface ManifestProblem {
  readonly file: string;
  readonly index: number;
  readonly message: string;
}

export function describeOrigin(d: { file: string; index: number; item?: number }): string {
  return `${d.file}: document ${d.index}${d.item !== undefined ? `, item ${d.item}` : ''}`;
}

function isList(doc: unknown): doc is { items: unknown } {
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) return false;
  const kind = (doc as { kind?: unknown }).kind;
  return typeof kind === 'string' && kind.endsWith('List') && 'items' in doc;
}

/** Splits manifest text into documents; YAML syntax errors are returned per document, not thrown. */
export function parseManifest(text: string, file: string): { docs: ManifestDoc[]; problems: ManifestProblem[] } {
  const docs: ManifestDoc[] = [];
  const problems: ManifestProblem[] = [];
  const parsed = parseAllDocuments(text, { uniqueKeys: true });
  const all = Array.isArray(parsed) ? parsed : [parsed];
  let index = 0;
  for (const yamlDoc of all) {
    index++;
    if (yamlDoc.errors.length > 0) {
      problems.push({ file, index, message: `not valid YAML or JSON: ${yamlDoc.errors[0].message.split('\n')[0]}` });
      continue;
    }
    const value: unknown = yamlDoc.toJS({ maxAliasCount: 100 });
    if (value === null || value === undefined) {
      index--; // an empty document (e.g. a trailing '---') is not counted
      continue;
    }
    if (isList(value)) {
      if (!Array.isArray(value.items)) {
        problems.push({ file, index, message: `${String((value as unknown as { kind: string }).kind)}: field items: expected a list` });
        continue;
      }
      value.items.forEach((item, i) => docs.push({ file, index, item: i + 1, doc: item }));
      continue;
    }
    docs.push({ file, index, doc: value });
  }
  return { docs, problems };
}
