// The uplink through NetworkManager (issue 15): keyfile rendering (pure), its store, nmcli.
export { renderUplinkKeyfile, connectionId, connectionUuid, keyfileName, validIfname, NM_CONNECTIONS_DIR, type UplinkConnectionInput, type KeyfileResult } from './keyfile.js';
export { writeKeyfile, readKeyfile, keyfilePath, uuidOf, KEYFILE_MODE } from './keyfile-store.js';
export { chooseNetworkManager, networkManagerRunning, DEFAULT_NM_PATHS, NM_SERVICE_KEY, type NetworkManagerPaths, type NmChoice } from './nmcli.js';
export { applyViaNetworkManager, nmKernelLines, removeNetworkManagerConnection, networkManagerStatus, type NmApplyInput, type NmApplyResult, type NmStatus } from './apply-nm.js';
