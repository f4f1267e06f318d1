// Setting a qube's firewall rules (qvm-firewall): dom0 saves them and, when the qube is
// connected, reloads them in its provider (rm, rules, commit marker); the provider's firewall
// reports through /qubes-firewall-applied/<ip>.
import { parseFirewallRule, defaultFirewall, type FirewallRule } from '../dom0/firewall-rules.js';
import type { Feedback } from '../runtime/qdb-ops.js';
import type { Lab } from '../runtime/lab.js';

/** Parses qvm-firewall-style rule strings; an empty list means "reset to the default". */
export function parseRuleList(rules: readonly (string | Record<string, unknown>)[]): FirewallRule[] {
  if (rules.length === 0) return defaultFirewall();
  return rules.map((r) => parseFirewallRule(r));
}

export async function setFirewall(lab: Lab, name: string, rules: FirewallRule[]): Promise<Map<string, Feedback>> {
  const spec = lab.spec(name);
  spec.firewall = rules;
  lab.progress({ qube: name, step: 'firewall set', detail: `${rules.length} rule(s)` });
  const gens = await lab.firewallGenerations(name);
  await lab.pushFirewall(name);
  const applied = await lab.waitFirewallApplied(name, gens);
  await lab.saveState();
  return applied;
}
