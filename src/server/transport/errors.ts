import { ProxyError } from '../../errors';
/** Errors of the ONC RPC transport. Callers and tests check `code`, never the message. */

export class RpcError extends ProxyError {
  constructor(
    readonly code: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** A record's announced size (sum of its fragments so far plus the next one) exceeds the limit. */
export class RpcRecordTooLargeError extends RpcError {
  constructor(
    readonly size: number,
    readonly limit: number,
  ) {
    super('RPC_ERR_RECORD_TOO_LARGE', `record of at least ${size} bytes exceeds limit ${limit}`);
  }
}

/** A read ran past the end of the message. */
export class RpcTruncatedError extends RpcError {
  constructor(what: string, offset: number, length: number) {
    super('RPC_ERR_TRUNCATED', `truncated message: ${what} at offset ${offset} of ${length}`);
  }
}

/** A counted field is longer than its XDR bound. */
export class RpcFieldTooLongError extends RpcError {
  constructor(what: string, length: number, max: number) {
    super('RPC_ERR_FIELD_TOO_LONG', `${what} length ${length} exceeds ${max}`);
  }
}

/** msg_type is not CALL: the peer is not an RPC client. */
export class RpcNotACallError extends RpcError {
  constructor(readonly msgType: number) {
    super('RPC_ERR_NOT_A_CALL', `msg_type ${msgType} is not CALL`);
  }
}

/** Bytes left over after a structure that must fill its container. */
export class RpcTrailingBytesError extends RpcError {
  constructor(what: string, extra: number) {
    super('RPC_ERR_TRAILING_BYTES', `${extra} trailing bytes after ${what}`);
  }
}

export class RpcOptionError extends RpcError {
  constructor(message: string) {
    super('RPC_ERR_BAD_OPTION', message);
  }
}

/** Binding a listener failed for a reason not covered by a more specific class; `cause` holds it. */
export class RpcListenError extends RpcError {
  constructor(
    readonly address: string,
    cause: unknown,
  ) {
    super('RPC_ERR_LISTEN', `cannot listen on ${address}: ${getErrorMessage(cause)}`, { cause });
  }
}

/** The TCP address is taken, or a live server already answers on the socket path. */
export class RpcAddressInUseError extends RpcError {
  constructor(readonly address: string) {
    super('RPC_ERR_ADDRESS_IN_USE', `address in use: ${address}`);
  }
}

/** The socket path exists and is not a socket, so it is not removed. */
export class RpcSocketPathError extends RpcError {
  constructor(readonly path: string) {
    super('RPC_ERR_SOCKET_PATH', `${path} exists and is not a socket`);
  }
}

/** A user or group name given for a socket file does not resolve. */
export class RpcUnknownPrincipalError extends RpcError {
  constructor(kind: 'user' | 'group', name: string) {
    super('RPC_ERR_UNKNOWN_PRINCIPAL', `unknown ${kind} ${JSON.stringify(name)}`);
  }
}

export class RpcServerClosedError extends RpcError {
  constructor() {
    super('RPC_ERR_SERVER_CLOSED', 'server is closed');
  }
}

export function getErrorMessage(e: unknown): string {
  if (e instanceof Error) return e.message;
  return String(e);
}

/** The errno-style or RpcError code of a caught value, if any. */
export function getErrorCode(e: unknown): string | undefined {
  if (typeof e === 'object' && e !== null && 'code' in e) {
    const code = (e as { code: unknown }).code;
    if (typeof code === 'string') return code;
  }
  return undefined;
}
