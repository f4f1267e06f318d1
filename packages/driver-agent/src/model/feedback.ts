// The driver's feedback in QubesDB, /qubes-vif/<vif>/{ip,mac,domid,state,detail,generation}
// (docs/contracts.md): the values written for a record, and the records read back at
// restart. Read-back values are untrusted like any QubesDB value (the qube itself and dom0
// can write there) and validated again.
import { parseVifName } from '@qubes-net/common';
import { InputError } from './input-error.js';
import { validateVifEvent, type VifSpec } from './vif-event.js';
import type { VifRecord, VifStatus } from './planner.js';

export const VIF_PREFIX = '/qubes-vif/';
export const DNS_UPSTREAM_KEY = '/qubes-dns-upstream';
/** QubesDB values are limited to 3071 bytes; a detail never needs that much. */
export const MAX_DETAIL = 400;

export function vifKey(vif: string, field: string): string {
  return `${VIF_PREFIX}${vif}/${field}`;
}

/** Key → value pairs for a record; `state` comes last so a reader that waits on it sees the rest. */
export function recordEntries(rec: VifRecord): Array<[string, string]> {
  const v = rec.spec.vif;
  const ips = rec.state === 'online' ? [...rec.spec.ipv4, ...rec.spec.ipv6].join(' ') : '';
  return [
    [vifKey(v, 'ip'), ips],
    [vifKey(v, 'mac'), rec.state === 'online' ? rec.spec.mac ?? '' : ''],
    [vifKey(v, 'domid'), String(rec.spec.domid)],
    [vifKey(v, 'detail'), rec.detail.length > MAX_DETAIL ? rec.detail.slice(0, MAX_DETAIL) + '…' : rec.detail],
    [vifKey(v, 'generation'), String(rec.generation)],
    [vifKey(v, 'state'), rec.state],
  ];
}

export interface StoredVif {
  spec: VifSpec;
  state: VifStatus;
  detail: string;
  generation: number;
}

/** Parses the multiread of VIF_PREFIX. Invalid entries are reported and left out. */
export function parseStoredVifs(entries: ReadonlyMap<string, string>): { vifs: Map<string, StoredVif>; errors: InputError[]; maxGeneration: number } {
  const byVif = new Map<string, Map<string, string>>();
  const errors: InputError[] = [];
  for (const [path, value] of entries) {
    const rest = path.slice(VIF_PREFIX.length);
    const slash = rest.indexOf('/');
    const vif = slash < 0 ? rest : rest.slice(0, slash);
    const field = slash < 0 ? '' : rest.slice(slash + 1);
    let m = byVif.get(vif);
    if (!m) byVif.set(vif, (m = new Map()));
    m.set(field, value);
  }
  const vifs = new Map<string, StoredVif>();
  let maxGeneration = 0;
  for (const [vif, fields] of byVif) {
    const gen = fields.get('generation') ?? '';
    if (/^(0|[1-9]\d{0,14})$/.test(gen)) maxGeneration = Math.max(maxGeneration, Number(gen));
    const ids = parseVifName(vif);
    if (!ids) {
      errors.push(new InputError('qubesdb', `${VIF_PREFIX}${vif}`, vif, 'entry for something that is not a vif name'));
      continue;
    }
    const state = fields.get('state');
    if (state !== 'online' && state !== 'offline' && state !== 'error') {
      errors.push(new InputError('qubesdb', vifKey(vif, 'state'), state ?? '', 'not online|offline|error'));
      continue;
    }
    if (fields.get('domid') !== String(ids.domid)) {
      errors.push(new InputError('qubesdb', vifKey(vif, 'domid'), fields.get('domid') ?? '', `does not match the vif name ${vif}`));
      continue;
    }
    const check = validateVifEvent({ op: 'online', vif, ips: fields.get('ip') ?? '', mac: fields.get('mac') ?? '' });
    if (!check.ok) {
      errors.push(new InputError('qubesdb', check.error.key.replace('$XENBUS_PATH', `${VIF_PREFIX}${vif}`), check.error.value, check.error.reason));
      continue;
    }
    vifs.set(vif, { spec: check.spec, state, detail: fields.get('detail') ?? '', generation: /^\d{1,15}$/.test(gen) ? Number(gen) : 0 });
  }
  return { vifs, errors, maxGeneration };
}
