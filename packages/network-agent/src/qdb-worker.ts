// The thread that makes the agent's QubesDB calls (see qubesdb-host.ts): libqubesdb's calls
// are synchronous and block while the daemon does not answer, so they run here, one at a
// time in arrival order, never on the main event loop.
import { parentPort, workerData } from 'node:worker_threads';
import { openQubesDB } from '@qubes-net/qubesdb/client';
import { QubesDBError } from '@qubes-net/qubesdb/api';

type Call = { id: number; op: 'read' | 'write' | 'rm' | 'list' | 'multiread' | 'close'; args: string[] };

const db = openQubesDB((workerData as { runDir?: string }).runDir ? { runDir: (workerData as { runDir: string }).runDir } : {});

parentPort!.on('message', (call: Call) => {
  void (async () => {
    try {
      let value: unknown;
      switch (call.op) {
        case 'read':
          value = await db.read(call.args[0]!);
          break;
        case 'write':
          await db.write(call.args[0]!, call.args[1]!);
          break;
        case 'rm':
          await db.rm(call.args[0]!);
          break;
        case 'list':
          value = await db.list(call.args[0]!);
          break;
        case 'multiread':
          value = await db.multiread(call.args[0]!);
          break;
        case 'close':
          await db.close();
          break;
      }
      parentPort!.postMessage({ id: call.id, ok: true, value });
    } catch (err) {
      const e = err as Error;
      parentPort!.postMessage({
        id: call.id,
        ok: false,
        error: e instanceof QubesDBError ? { op: e.op, path: e.path, errno: e.errno, message: e.message } : { op: call.op, path: call.args[0] ?? '', errno: 0, message: String(e?.message ?? e) },
      });
    }
  })();
});
