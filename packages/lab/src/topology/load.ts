// Reading a topology file (YAML, or JSON, which the YAML parser reads too) with line numbers
// for every error: syntax errors from the parser, field errors from validateTopology.
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { LineCounter, parseDocument, isNode, type Document } from 'yaml';
import { TopologyError, validateTopology, type FieldPath } from './validate.js';
import type { LabModel } from './model.js';

/** The topology shipped with the lab (sys-net, sys-firewall, work, personal, …). */
export const DEFAULT_TOPOLOGY_FILE = fileURLToPath(new URL('../../topologies/default.yaml', import.meta.url));

export function parseTopology(text: string, source = 'topology'): LabModel {
  const lineCounter = new LineCounter();
  const doc: Document = parseDocument(text, { lineCounter, prettyErrors: true, uniqueKeys: true, version: '1.2' });
  if (doc.errors.length) {
    throw new TopologyError(source, doc.errors.map((e) => ({
      path: '',
      ...(e.linePos ? { line: e.linePos[0].line } : {}),
      message: e.message.split('\n')[0]!.replace(/ at line \d+, column \d+:?$/, ''),
    })));
  }
  const lineOf = (path: FieldPath): number | undefined => {
    const node = path.length === 0 ? doc.contents : doc.getIn(path as Array<string | number>, true);
    if (!isNode(node) || !node.range) return undefined;
    return lineCounter.linePos(node.range[0]).line;
  };
  return validateTopology(doc.toJS({ maxAliasCount: 100 }), source, lineOf);
}

export async function loadTopologyFile(path: string): Promise<LabModel> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new TopologyError(path, [{ path: '', message: `cannot read: ${(err as Error).message}` }]);
  }
  return parseTopology(text, path);
}
