/**
 * Entry point of a module helper process (see helper-backend.ts): loads one
 * module with Pkcs11jsBackend, as a worker would, and answers the worker's
 * calls over fd 3 (protocol.ts). It exits when the channel closes (the
 * worker finalized the backend or died), and the kernel kills it when the
 * worker dies (PR_SET_PDEATHSIG), also while a module call blocks its event
 * loop.
 */
import net from 'node:net';
import { CALL_INVOKERS, isPromise, px_rvCodec, xdrDecode, xdrEncodeFramed } from '../../generated/pkcs11_rpc';
import type { ProcedureDef } from '../../generated/pkcs11_rpc';
import { declarePlainParameterMechanisms } from '../../pkcs11/mechanism-shapes';
import { errorMessage, pkcs11RvOf } from '../../pkcs11/errors';
import { createLogger, envLogFormat, envLogLevel } from '../../server/log';
import { privilegeAddon } from '../../server/supervision/native-privilege';
import { dropPrivileges } from '../../server/supervision/privilege';
import type { BackendContext } from '../backend';
import { LoadedModule, Pkcs11jsBackend } from '../pkcs11js-backend';
import { CONTROL_ID, FrameReader, frameOf, HEADER_SIZE, HELPER_CALLS, HELPER_ENV, STATUS_FAILED, STATUS_RV, STATUS_VALUE, writeHeader } from './protocol';
import type { HelperStartup } from './protocol';

function main(): void {
  const cfg = JSON.parse(process.env[HELPER_ENV] ?? 'null') as HelperStartup | null;
  if (cfg === null) {
    process.stderr.write(`pkcs11proxyd helper: started without ${HELPER_ENV}\n`);
    process.exit(2);
  }
  // Before the module is loaded (its C_Initialize may hang too), and again after the privilege drop.
  if (privilegeAddon().killWithParent() !== cfg.parentPid) process.exit(2);
  const log = createLogger(envLogLevel(cfg.logLevel), `[helper ${cfg.alias} ${process.pid}] `, envLogFormat(cfg.logFormat), cfg.workerIndex);
  declarePlainParameterMechanisms(cfg.plainParameterMechanisms);
  const channel = new net.Socket({ fd: 3, readable: true, writable: true });
  const failStart = (reason: string): void => {
    log('error', reason);
    channel.end(frameOf(CONTROL_ID, STATUS_FAILED, 0, Buffer.from(reason, 'utf8')), () => process.exit(3));
  };
  let backend: Pkcs11jsBackend;
  try {
    backend = new Pkcs11jsBackend(new LoadedModule(cfg.alias, cfg.path), cfg.limits);
    // The module is loaded (its files opened with the worker's rights at start-up): now give root up as the worker does.
    if (cfg.privilege !== null) dropPrivileges(cfg.privilege, `helper ${cfg.alias}`, log);
    // After the drop (a credential change clears it); a worker that died before this leaves another parent.
    if (privilegeAddon().killWithParent() !== cfg.parentPid) process.exit(2);
  } catch (e) {
    failStart(errorMessage(e));
    return;
  }
  const contexts = new Map<number, BackendContext>();
  const contextOf = (appId: number): BackendContext => {
    let c = contexts.get(appId);
    if (c === undefined) {
      if (contexts.size >= 4096) contexts.clear();
      c = Object.freeze({ appId, alias: cfg.alias });
      contexts.set(appId, c);
    }
    return c;
  };
  const send = (frame: Buffer): void => {
    if (!channel.destroyed) channel.write(frame);
  };
  const answer = (id: number, def: ProcedureDef, v: unknown): void => {
    let frame: Buffer;
    try {
      frame = writeHeader(xdrEncodeFramed(def.ret, v, HEADER_SIZE), id, STATUS_VALUE, 0);
    } catch (e) {
      refuse(id, def, e);
      return;
    }
    send(frame);
  };
  const refuse = (id: number, def: ProcedureDef, e: unknown): void => {
    const rv = pkcs11RvOf(e);
    if (rv !== undefined && rv !== 0) {
      send(writeHeader(xdrEncodeFramed(px_rvCodec, rv, HEADER_SIZE), id, STATUS_RV, 0));
      return;
    }
    // Messages of this process's own errors name the call and the failure, never argument values.
    const message = `${def.name}: ${errorMessage(e)}`;
    log('error', `internal error: ${message}`);
    send(frameOf(id, STATUS_FAILED, 0, Buffer.from(message, 'utf8')));
  };
  const serve = (id: number, call: number, appId: number, payload: Buffer): void => {
    const def = HELPER_CALLS[call];
    if (def === undefined) {
      send(frameOf(id, STATUS_FAILED, 0, Buffer.from(`unknown call ${call}`, 'utf8')));
      return;
    }
    let r: unknown;
    try {
      r = CALL_INVOKERS[def.name](backend, contextOf(appId), xdrDecode(def.args, payload));
    } catch (e) {
      refuse(id, def, e);
      return;
    }
    if (isPromise(r)) r.then((v) => answer(id, def, v), (e: unknown) => refuse(id, def, e));
    else answer(id, def, r);
  };
  const reader = new FrameReader(serve);
  let done = false;
  const finish = (code: number): void => {
    if (done) return;
    done = true;
    backend.finalize();
    process.exit(code);
  };
  channel.on('data', (chunk: Buffer) => {
    try {
      reader.push(chunk);
    } catch (e) {
      log('error', `channel: ${errorMessage(e)}`);
      finish(4);
    }
  });
  channel.on('end', () => finish(0));
  channel.on('close', () => finish(0));
  channel.on('error', (e) => {
    log('warn', `channel: ${errorMessage(e)}`);
    finish(0);
  });
  process.on('SIGTERM', () => finish(0));
  // Ctrl-C reaches the whole process group: the worker decides when its helpers stop.
  process.on('SIGINT', () => undefined);
  send(frameOf(CONTROL_ID, STATUS_VALUE, 0, Buffer.alloc(0)));
  log('debug', `module ${cfg.path} loaded`);
}

main();
