/**
 * A Parsec client over the service's Unix socket. The service answers one
 * request per connection and then closes it, so every request opens its own
 * connection. Responses are bounded (maxResponseBytes, checked from the
 * header before the body is read) and every request has a deadline.
 */
import net from 'node:net';
import { create, fromBinary, toBinary } from '@bufbuild/protobuf';
import type { DescMessage, MessageInitShape, MessageShape } from '@bufbuild/protobuf';
import { ProxyError } from '../../errors';
import { AuthType, Opcode, PARSEC_CONTENT_PROTOBUF, PARSEC_HEADER_LENGTH, ParsecProtocolError, decodeHeader, encodeRequest } from './wire';
import type { OpcodeName } from './wire';
import { PARSEC_SUCCESS, statusName } from './status';

/** The service answered with a status other than Success. */
export class ParsecStatusError extends ProxyError {
  readonly code = 'PARSEC_STATUS';
  constructor(
    readonly status: number,
    readonly opcode: OpcodeName,
  ) {
    super(`Parsec ${opcode}: ${statusName(status)} (${status})`);
  }
}

/** The service could not be reached, did not answer in time, or answered outside the protocol. */
export class ParsecUnavailableError extends ProxyError {
  readonly code = 'PARSEC_UNAVAILABLE';
}

/** What goes in a request's authentication field. */
export type ParsecAuth =
  /** UnixPeerCredentials: the caller's uid, u32 little-endian (the service checks it against SO_PEERCRED). */
  | { readonly type: 'unix'; readonly uid: number }
  /** Direct: the application name, UTF-8. The service trusts it: see docs/parsec.md. */
  | { readonly type: 'direct'; readonly app: string }
  | { readonly type: 'none' };

export interface ParsecClientOptions {
  /** Path of the service's Unix socket. */
  readonly socket: string;
  /** Deadline of one request, connect to last byte. */
  readonly timeoutMs: number;
  /** Largest response (header, body and auth) accepted. */
  readonly maxResponseBytes: number;
}

function authBytes(a: ParsecAuth): { type: number; bytes: Buffer } {
  switch (a.type) {
    case 'unix': {
      const b = Buffer.alloc(4);
      b.writeUInt32LE(a.uid >>> 0);
      return { type: AuthType.UnixPeerCredentials, bytes: b };
    }
    case 'direct':
      return { type: AuthType.Direct, bytes: Buffer.from(a.app, 'utf8') };
    default:
      return { type: AuthType.NoAuth, bytes: Buffer.alloc(0) };
  }
}

export class ParsecClient {
  constructor(readonly options: ParsecClientOptions) {}

  /**
   * Sends one operation to `provider` and decodes its result. Throws
   * ParsecStatusError for a status other than Success, ParsecUnavailableError
   * when the service cannot be reached or breaks the protocol.
   */
  async call<O extends DescMessage, R extends DescMessage>(
    provider: number,
    opcode: OpcodeName,
    opSchema: O,
    op: MessageInitShape<O>,
    resultSchema: R,
    auth: ParsecAuth,
  ): Promise<MessageShape<R>> {
    const a = authBytes(auth);
    const body = toBinary(opSchema, create(opSchema, op));
    const request = encodeRequest(
      {
        provider,
        session: 0n,
        contentType: PARSEC_CONTENT_PROTOBUF,
        acceptType: PARSEC_CONTENT_PROTOBUF,
        authType: a.type,
        opcode: Opcode[opcode],
      },
      body,
      a.bytes,
    );
    const response = await this.exchange(request, opcode);
    const h = decodeHeader(response);
    if (h.opcode !== Opcode[opcode]) throw new ParsecUnavailableError(`Parsec ${opcode}: response for opcode ${h.opcode}`);
    if (h.status !== PARSEC_SUCCESS) throw new ParsecStatusError(h.status, opcode);
    if (h.contentType !== PARSEC_CONTENT_PROTOBUF) throw new ParsecUnavailableError(`Parsec ${opcode}: content type ${h.contentType}`);
    try {
      return fromBinary(resultSchema, response.subarray(PARSEC_HEADER_LENGTH, PARSEC_HEADER_LENGTH + h.bodyLength));
    } catch (e) {
      throw new ParsecUnavailableError(`Parsec ${opcode}: undecodable result: ${e instanceof Error ? e.message : String(e)}`);
    }
  }

  /** Writes the request, reads exactly one response (header, then body_len + auth_len bytes), closes. */
  private exchange(request: Buffer, opcode: OpcodeName): Promise<Buffer> {
    const { socket: path, timeoutMs, maxResponseBytes } = this.options;
    return new Promise<Buffer>((resolve, reject) => {
      const chunks: Buffer[] = [];
      let have = 0;
      let want = -1;
      let done = false;
      const sock = net.connect({ path });
      const finish = (err: Error | null, value?: Buffer): void => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        sock.destroy();
        if (err) reject(err);
        else resolve(value as Buffer);
      };
      const timer = setTimeout(
        () => finish(new ParsecUnavailableError(`Parsec ${opcode}: no response from ${path} within ${timeoutMs} ms`)),
        timeoutMs,
      );
      sock.on('connect', () => sock.write(request));
      sock.on('data', (d: Buffer) => {
        chunks.push(d);
        have += d.length;
        if (want < 0 && have >= PARSEC_HEADER_LENGTH) {
          let h;
          try {
            h = decodeHeader(Buffer.concat(chunks, have));
          } catch (e) {
            finish(new ParsecUnavailableError(`Parsec ${opcode}: ${(e as ParsecProtocolError).message}`));
            return;
          }
          want = PARSEC_HEADER_LENGTH + h.bodyLength + h.authLength;
          if (want > maxResponseBytes) {
            finish(new ParsecUnavailableError(`Parsec ${opcode}: response of ${want} bytes exceeds the limit of ${maxResponseBytes}`));
            return;
          }
        }
        if (want >= 0 && have >= want) finish(null, Buffer.concat(chunks, have).subarray(0, want));
      });
      sock.on('error', (e: NodeJS.ErrnoException) =>
        finish(new ParsecUnavailableError(`Parsec ${opcode}: ${path}: ${e.code ?? e.message}`)),
      );
      sock.on('close', () =>
        finish(new ParsecUnavailableError(`Parsec ${opcode}: ${path} closed the connection after ${have} bytes`)),
      );
    });
  }
}
