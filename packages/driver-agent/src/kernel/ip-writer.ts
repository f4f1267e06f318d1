// Applies ip-batch lines with one `ip -force -batch -` process and attributes each failing
// line (ip reports "Command failed -:N") to the vif it belongs to.
//
// `-force` does not always go on: some iproute2 commands (a failing `neigh` change, for
// one) exit the whole process. To know how far a batch got, each vif's group of lines is
// followed by a sentinel `link show dev lo`, whose output line proves the group before it
// ran to its end. If the batch stopped early, the group it stopped in is reported failed and
// the groups after it are applied again in a new batch.
import { runProcess as run } from './process.js';
import type { IpLine } from '../model/planner.js';

export interface IpFailure extends IpLine {
  message: string;
}

const SENTINEL = 'link show dev lo';

/** Parses ip's stderr: the messages printed before each "Command failed -:N". */
export function parseBatchErrors(stderr: string): Map<number, string> {
  const out = new Map<number, string>();
  let pending: string[] = [];
  for (const line of stderr.split('\n')) {
    const m = /^Command failed -:(\d+)\s*$/.exec(line.trim());
    if (m) {
      out.set(Number(m[1]), pending.join('; ').trim() || 'failed');
      pending = [];
    } else if (line.trim()) {
      pending.push(line.trim());
    }
  }
  return out;
}

/** The message ip printed after the last "Command failed" (what made it exit), if any. */
function trailingMessage(stderr: string): string {
  const tail = stderr.split(/Command failed -:\d+\s*\n?/).pop() ?? '';
  return tail.split('\n').map((l) => l.trim()).filter(Boolean).join('; ') || 'ip -batch stopped';
}

function groupsOf(lines: readonly IpLine[]): IpLine[][] {
  const groups: IpLine[][] = [];
  for (const l of lines) {
    const last = groups[groups.length - 1];
    if (last && last[0]!.vif === l.vif) last.push(l);
    else groups.push([l]);
  }
  return groups;
}

export async function applyIpLines(lines: readonly IpLine[], timeoutMs = 10_000): Promise<IpFailure[]> {
  if (lines.length === 0) return [];
  for (const l of lines) if (l.line.includes('\n')) throw new Error(`ip batch line contains a newline: ${JSON.stringify(l.line)}`);
  const groups = groupsOf(lines);
  const text: string[] = [];
  const lineAt = new Map<number, IpLine>();
  for (const g of groups) {
    for (const l of g) {
      text.push(l.line);
      lineAt.set(text.length, l);
    }
    text.push(SENTINEL);
  }
  const res = await run('ip', ['-force', '-batch', '-'], { input: text.join('\n') + '\n', allowFailure: true, timeoutMs });
  const failures: IpFailure[] = [];
  for (const [n, message] of parseBatchErrors(res.stderr)) {
    const l = lineAt.get(n);
    if (l) failures.push({ ...l, message });
  }
  const completed = (res.stdout.match(/^\d+: lo[:@]/gm) ?? []).length;
  if (completed >= groups.length) return failures;
  // Stopped inside group `completed`: its lines are failed as far as we know.
  const message = trailingMessage(res.stderr);
  const stuck = groups[completed]!;
  for (const l of stuck) if (!failures.some((f) => f.line === l.line && f.vif === l.vif)) failures.push({ ...l, message });
  return [...failures, ...(await applyIpLines(groups.slice(completed + 1).flat(), timeoutMs))];
}
