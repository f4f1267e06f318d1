// "qubes-firewall on" as upstream's units decide it (issue 16.7): the service flag file that
// qubes-sysinit writes (it includes each qube type's defaults), QubesDB's explicit value only as
// the fallback; "on"/"off" override both.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { QubesDB } from '@qubes-net/qubesdb/api';
import { firewallEnabled } from '@qubes-net/network-agent';

/** Only `read` is used; a fake for this pure decision. */
function db(values: Record<string, string>, fail = false): QubesDB {
  return { read: async (k: string) => { if (fail) throw new Error('qubesdb down'); return values[k]; } } as unknown as QubesDB;
}

test('auto: the flag file wins (a sys-firewall default with no QubesDB key), QubesDB "1" is the fallback, anything else is off', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'qn-fw-service-'));
  try {
    assert.equal(await firewallEnabled('auto', dir, db({})), false);
    assert.equal(await firewallEnabled('auto', dir, db({ '/qubes-service/qubes-firewall': '1' })), true);
    assert.equal(await firewallEnabled('auto', dir, db({ '/qubes-service/qubes-firewall': '0' })), false);
    assert.equal(await firewallEnabled('auto', dir, db({}, true)), false, 'QubesDB unreachable and no flag file: off');
    writeFileSync(join(dir, 'qubes-firewall'), '');
    assert.equal(await firewallEnabled('auto', dir, db({})), true, 'flag file without any QubesDB key');
    assert.equal(await firewallEnabled('auto', dir, db({}, true)), true);
    assert.equal(await firewallEnabled('off', dir, db({ '/qubes-service/qubes-firewall': '1' })), false);
    assert.equal(await firewallEnabled('on', join(dir, 'absent'), db({})), true);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
