// The firewall's view of its tables in the kernel, read through the one nft writer.
import { createNftWriter, type NftWriter } from '@qubes-net/common/kernel';
import { FIREWALL_TABLE, DISPATCH_MAP, DNS_SET, FORWARD_CHAIN, FORWARD_RULE_COMMENT, nftFamily, type Family } from '../model/skeleton.js';

export type ApplyResult = { ok: true } | { ok: false; error: string };

export interface ChainInfo {
  name: string;
  rules: number;
}

export interface FamilyState {
  present: boolean;
  forwardPolicy?: string;
  forwardHook?: boolean;
  /** Whether `forward` holds our rules (added once by the firewall; see model/skeleton.ts). */
  forwardRules: boolean;
  /** Source address → chain its dispatch element jumps to. */
  dispatch: Map<string, string>;
  chains: Map<string, ChainInfo>;
  dnsAddr: string[];
}

/** A writer bound to a namespace (tests, lab) or to our own. */
export function firewallNftWriter(opts: { netns?: string; noLibrary?: boolean } = {}): NftWriter {
  const inner = createNftWriter(opts.netns || opts.noLibrary ? { noLibrary: true } : {});
  if (!opts.netns) return inner;
  const netns = opts.netns;
  return {
    apply: (tx, o = {}) => inner.apply(tx, { ...o, netns }),
    list: (what) => inner.list(what, { netns }),
  };
}

/** What our table of `family` holds now (chains with rule counts, dispatch, dns-addr). */
export async function readFamilyState(family: Family, nft: NftWriter | { netns?: string } = {}): Promise<FamilyState> {
  const writer = 'list' in nft ? nft : firewallNftWriter(nft);
  const state: FamilyState = { present: false, forwardRules: false, dispatch: new Map(), chains: new Map(), dnsAddr: [] };
  const json = await writer.list(['table', nftFamily(family), FIREWALL_TABLE]);
  if (!json) return state;
  state.present = true;
  for (const item of json.nftables) {
    if (item.chain) {
      state.chains.set(item.chain.name, { name: item.chain.name, rules: 0 });
      if (item.chain.name === FORWARD_CHAIN) {
        state.forwardPolicy = item.chain.policy;
        state.forwardHook = item.chain.hook === 'forward';
      }
    } else if (item.rule) {
      const c = state.chains.get(item.rule.chain);
      if (c) c.rules++;
      if (item.rule.chain === FORWARD_CHAIN && item.rule.comment === FORWARD_RULE_COMMENT) state.forwardRules = true;
    } else if (item.map?.name === DISPATCH_MAP) {
      for (const el of item.map.elem ?? []) {
        if (Array.isArray(el) && typeof el[0] === 'string') {
          const target = el[1]?.jump?.target ?? el[1]?.goto?.target;
          state.dispatch.set(el[0], String(target ?? '?'));
        }
      }
    } else if (item.set?.name === DNS_SET) {
      for (const el of item.set.elem ?? []) if (typeof el === 'string') state.dnsAddr.push(el);
    }
  }
  return state;
}
