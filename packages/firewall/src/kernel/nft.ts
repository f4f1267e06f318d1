// The firewall's nft writes and reads. Every change is one `nft -f` transaction.
import { nftApply, nftListJson, CommandError, type NftOptions } from '@qubes-net/common';
import { FIREWALL_TABLE, DISPATCH_MAP, FORWARD_CHAIN, nftFamily, type Family } from '../model/skeleton.js';

export type ApplyResult = { ok: true } | { ok: false; error: string };

/** Applies `script` atomically; failure is a value (nft's message), not an exception. */
export async function applyScript(script: string, opts: NftOptions = {}): Promise<ApplyResult> {
  try {
    await nftApply(script, opts);
    return { ok: true };
  } catch (e) {
    const msg = e instanceof CommandError ? e.stderr.trim() || e.message : String((e as Error)?.message ?? e);
    return { ok: false, error: msg };
  }
}

export interface ChainInfo {
  name: string;
  rules: number;
}

export interface FamilyState {
  present: boolean;
  forwardPolicy?: string;
  forwardHook?: boolean;
  /** Source address → chain its dispatch element jumps to. */
  dispatch: Map<string, string>;
  chains: Map<string, ChainInfo>;
  dnsAddr: string[];
}

/** What our table of `family` holds now (chains with rule counts, dispatch, dns-addr). */
export async function readFamilyState(family: Family, opts: NftOptions = {}): Promise<FamilyState> {
  const state: FamilyState = { present: false, dispatch: new Map(), chains: new Map(), dnsAddr: [] };
  const json = await nftListJson(['table', nftFamily(family), FIREWALL_TABLE], opts);
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
    } else if (item.map?.name === DISPATCH_MAP) {
      for (const el of item.map.elem ?? []) {
        if (Array.isArray(el) && typeof el[0] === 'string') {
          const target = el[1]?.jump?.target ?? el[1]?.goto?.target;
          state.dispatch.set(el[0], String(target ?? '?'));
        }
      }
    } else if (item.set?.name === 'dns-addr') {
      for (const el of item.set.elem ?? []) if (typeof el === 'string') state.dnsAddr.push(el);
    }
  }
  return state;
}
