// The lab's side of a network qube's agent socket (docs/runtime-shape.md): readiness
// (`status`, which under the watcher's activation also starts the agent) and, as
// NetworkManager's dispatcher hook would, `sync` after the uplink's DNS changed.
import type { Qube } from '@qubes-net/netns';
import { controlRequest, DEFAULT_AGENT_SOCKET, type Reply } from '@qubes-net/common/control';

export function agentSocketPath(q: Qube): string {
  return q.hostPath(DEFAULT_AGENT_SOCKET);
}

export function sendAgentRequest(q: Qube, request: Record<string, unknown>, timeoutMs = 30_000): Promise<Reply> {
  return controlRequest(agentSocketPath(q), request, { timeoutMs });
}
