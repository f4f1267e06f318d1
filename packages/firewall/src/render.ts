// `qubes-net-firewall render <ip>`: the transaction the daemon would apply for one qube, from
// QubesDB (or a rules file), with names resolved the same way, without applying anything.
import { readFile } from 'node:fs/promises';
import type { QubesDB } from '@qubes-net/qubesdb';
import { FIREWALL_PREFIX, parseQubeEntries, parseTarget } from './model/parse.js';
import { compileQube, outcomeSummary, qubeRemovalScript, qubeUpdateScript, type HostResolution } from './model/compile.js';
import type { DnsServers } from './model/resolv-conf.js';
import type { Family } from './model/skeleton.js';
import type { ParsedQube } from './model/rules.js';

export interface RenderInput {
  ip: string;
  /** Relative key ('policy', '0000') → rule string, instead of QubesDB. */
  rules?: Record<string, string>;
  db?: QubesDB;
  servers: DnsServers;
  resolve(host: string, family: Family, servers: readonly string[]): Promise<HostResolution>;
}

export async function readRulesFile(path: string): Promise<Record<string, string>> {
  const data: unknown = JSON.parse(await readFile(path, 'utf8'));
  if (!data || typeof data !== 'object' || Array.isArray(data)) throw new Error('rules file must be a JSON object of key → rule string');
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(data)) {
    if (typeof v !== 'string') throw new Error(`rules file: value of ${JSON.stringify(k)} is not a string`);
    out[k] = v;
  }
  return out;
}

/** The nft text (with comment lines explaining the outcome), or an error message. */
export async function renderQube(input: RenderInput): Promise<{ ok: true; text: string } | { ok: false; error: string }> {
  const target = parseTarget(input.ip);
  if (!target) return { ok: false, error: `not a canonical IPv4/IPv6 address: ${JSON.stringify(input.ip)}` };
  let parsed: ParsedQube;
  if (input.rules) {
    parsed = parseQubeEntries(target, new Map(Object.entries(input.rules).map(([k, v]) => [`${FIREWALL_PREFIX}${target.addr}/${k}`, v])));
  } else {
    if (!input.db) return { ok: false, error: 'no QubesDB and no rules file' };
    const marker = await input.db.read(FIREWALL_PREFIX + target.addr);
    if (marker === undefined) {
      return { ok: true, text: `# no rules for ${target.addr} in QubesDB: the daemon removes its chain (forward policy drop applies)\n${qubeRemovalScript(target.addr, target.family)}` };
    }
    parsed = parseQubeEntries(target, await input.db.multiread(`${FIREWALL_PREFIX}${target.addr}/`));
  }
  const resolved = new Map<string, HostResolution>();
  if (parsed.ok) {
    const servers = [...input.servers.v4, ...input.servers.v6];
    for (const r of parsed.rules) if (r.dst?.kind === 'host' && !resolved.has(r.dst.name)) resolved.set(r.dst.name, await input.resolve(r.dst.name, target.family, servers));
  }
  const compiled = compileQube(parsed, resolved);
  const head = [`# ${target.addr}: ${outcomeSummary(compiled).replace(/\n/g, ' ')}`];
  for (const n of compiled.notes) head.push(`# note: ${n}`);
  for (const [h, a] of compiled.hosts) head.push(`# ${h} -> ${a.join(' ') || '(no address)'}`);
  return { ok: true, text: head.join('\n') + '\n' + qubeUpdateScript(compiled) };
}
