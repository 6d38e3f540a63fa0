/** ONC RPC (RFC 5531) server transport. Knows nothing of PKCS#11. */
export * from './types';
export * from './errors';
export { RpcServer } from './rpc-server';
export { RpcConnection, DEFAULT_MAX_PENDING_CALLS } from './rpc-connection';
export { DEFAULT_MAX_RECORD_SIZE, RecordAssembler, frameRecord } from './record-marking';
export { parseCall, parseAuthSysCred, encodeReply, RPC_VERSION, MAX_AUTH_BYTES } from './rpc-message';
export type { AuthSysParams, ParsedCall, RpcReply } from './rpc-message';
