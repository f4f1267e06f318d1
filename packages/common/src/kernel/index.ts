// The one kernel-writing layer (docs/runtime-shape.md): typed nft transactions, one nft
// writer, one `ip -batch` writer, one process runner, and an in-memory fake kernel for tests.
// Imported as `@qubes-net/common/kernel`; the common index does not pull it in.
export {
  NftTransaction,
  NftValidationError,
  nftElement,
  nftQuoted,
  checkRuleExpr,
  renderOp,
  type NftFamily,
  type NftTableRef,
  type NftChainType,
  type NftHook,
  type NftPolicy,
  type NftBaseChain,
  type NftAtom,
  type NftVerdict,
  type NftElement,
  type NftElementValue,
  type NftSetFlag,
  type NftSetSpec,
  type NftMapSpec,
  type NftDataType,
  type NftOp,
  type NftRuleOptions,
} from './nft-transaction.js';
export { createNftWriter, nftWriterUsesLibrary, type NftWriter, type NftWriterOptions, type NftApplyOptions, type NftApplyResult, type NftJson } from './nft-writer.js';
export { IpBatchWriter, ipBatchLine, type IpBatchOptions, type IpBatchResult } from './ip-batch.js';
export { runProcess, ProcessError, hookScopeArgv, underSystemd, HOOK_SCOPE_PREFIX, type ProcessOptions, type ProcessResult } from './process.js';
export { FakeKernel, type FakeTable, type FakeChain, type FakeSet, type FakeRule } from './fake-kernel.js';
