import { execFileSync } from 'child_process';
import path from 'path';
import {
  CALL_FIELDS,
  callFieldsOf,
  PROCEDURES,
  px_bytes_retCodec,
  SlabSink,
  xdrEncode,
  xdrEncodeFramed,
} from '../../src/generated/pkcs11_rpc';
import type { CallName, ProcedureDef } from '../../src/generated/pkcs11_rpc';
import { ck } from '../../src/pkcs11/constants';
import { OBJECT_ARG_FIELDS, OBJECT_RESULT_FIELDS, TEMPLATE_ARG_FIELDS } from '../../src/server/layers/object-fields';
import { fillSuccessFrame } from '../../src/server/transport/rpc-message';
import { FRAMED_REPLY_PREFIX_SIZE } from '../../src/server/transport/types';
import { createSoftHsm, SOFTHSM_MODULE, USER_PIN } from './helpers/softhsm';

/** The field names of a struct value's type, in order, as copyArgs reads them. */
function fieldsRead(copy: (v: unknown) => unknown): string[] {
  const seen: string[] = [];
  copy(new Proxy({}, { get: (_t, k) => (typeof k === 'string' && seen.push(k), 0) }));
  return seen;
}

describe('CALL_FIELDS (generated from the .x types and rpc/pkcs11-fields.json)', () => {
  const byName = new Map<CallName, ProcedureDef>(PROCEDURES.map((d) => [d.name, d]));

  it('names the same object argument fields, with the same CK_RV, as the name table', () => {
    for (const name of byName.keys()) {
      const f = callFieldsOf(name);
      const fields = byName.get(name)!.args === undefined ? [] : fieldsRead((v) => f.copyArgs(v));
      const expected = fields
        .filter((n) => OBJECT_ARG_FIELDS.has(n))
        .map((n) => ({ name: n, invalidRv: OBJECT_ARG_FIELDS.get(n)!.rv, zeroAllowed: OBJECT_ARG_FIELDS.get(n)!.zeroAllowed }));
      const got = f.args.object.map((o) => ({ name: o.name, invalidRv: o.invalidRv, zeroAllowed: o.zeroAllowed }));
      expect({ name, got }).toEqual({ name, got: expected });
      expect({ name, session: f.args.session.map((s) => s.name) }).toEqual({ name, session: fields.includes('session') ? ['session'] : [] });
      const templates = fields.filter((n) => (TEMPLATE_ARG_FIELDS as readonly string[]).includes(n));
      expect({ name, templates: f.args.template.map((t) => t.name) }).toEqual({ name, templates });
      expect({ name, mechanism: f.args.mechanism.map((m) => m.name) }).toEqual({ name, mechanism: fields.includes('mechanism') ? ['mechanism'] : [] });
    }
  });

  it('names the result fields that carry new object handles, and the handle list of C_FindObjects', () => {
    for (const [name, def] of byName) {
      const zero = def.errorRet(0);
      const fields = typeof zero === 'object' && zero !== null ? Object.keys(zero) : [];
      const expected = fields.filter((n) => (OBJECT_RESULT_FIELDS as readonly string[]).includes(n));
      expect({ name, got: callFieldsOf(name).result.object.map((o) => o.name) }).toEqual({ name, got: expected });
    }
    expect(CALL_FIELDS.C_FindObjects.result.objectList.map((o) => o.name)).toEqual(['objects']);
    expect(CALL_FIELDS.C_OpenSession.result.session.map((o) => o.name)).toEqual(['session']);
    expect(CALL_FIELDS.C_GetAttributeValue.result.template.map((o) => o.name)).toEqual(['template']);
  });

  it('carries the PKCS#11 numbers of the CK_RVs it names', () => {
    for (const name of byName.keys()) {
      for (const o of [...callFieldsOf(name).args.object, ...callFieldsOf(name).result.object]) {
        const named = (o as { invalidRv: number }).invalidRv;
        expect([OBJECT_ARG_FIELDS.get(o.name)?.rv ?? ck.CKR_OBJECT_HANDLE_INVALID, named]).toEqual([named, named]);
      }
    }
    expect(CALL_FIELDS.C_WrapKey.args.object.map((o) => o.invalidRv)).toEqual([ck.CKR_WRAPPING_KEY_HANDLE_INVALID, ck.CKR_KEY_HANDLE_INVALID]);
    expect(CALL_FIELDS.px_UnwrapKeyTyped.args.object.map((o) => o.invalidRv)).toEqual([ck.CKR_UNWRAPPING_KEY_HANDLE_INVALID]);
  });

  it('copies leave the caller\'s object unchanged', () => {
    const a = { session: 5, data: Buffer.from('x') };
    const c = CALL_FIELDS.C_Sign.copyArgs(a);
    CALL_FIELDS.C_Sign.args.session[0].set(c, 9);
    expect([a.session, c.session, c.data]).toEqual([5, 9, a.data]);
  });
});

describe('xdrEncodeFramed', () => {
  it('reserves the prefix, and a frame is never written by a later encoding, across slab boundaries', () => {
    const frames: [Buffer, Buffer][] = [];
    for (let i = 0; i < 400; i++) {
      const v = { rv: i, data: Buffer.alloc((i * 37) % 3000, i & 0xff) };
      const f = xdrEncodeFramed(px_bytes_retCodec, v, FRAMED_REPLY_PREFIX_SIZE);
      frames.push([f, Buffer.from(f.subarray(FRAMED_REPLY_PREFIX_SIZE))]);
      // Buffer.equals: jest's toEqual walks a Buffer byte by byte.
      expect(f.subarray(FRAMED_REPLY_PREFIX_SIZE).equals(xdrEncode(px_bytes_retCodec, v))).toBe(true);
    }
    // A message larger than a slab, then small ones again.
    const big = xdrEncodeFramed(px_bytes_retCodec, { rv: 0, data: Buffer.alloc(200_000, 7) }, FRAMED_REPLY_PREFIX_SIZE);
    expect(big.length).toBe(FRAMED_REPLY_PREFIX_SIZE + 8 + 4 + 200_000);
    xdrEncodeFramed(px_bytes_retCodec, { rv: 1, data: Buffer.alloc(10) }, FRAMED_REPLY_PREFIX_SIZE);
    expect(frames.filter(([f, copy]) => !f.subarray(FRAMED_REPLY_PREFIX_SIZE).equals(copy)).length).toBe(0);
  });

  it('a failed encoding leaves nothing behind', () => {
    const s = new SlabSink(64);
    s.begin(4);
    s.writeUint32(1);
    s.abort();
    s.begin(0);
    s.writeUint32(2);
    expect(s.end()).toEqual(Buffer.from([0, 0, 0, 2]));
    expect(() => xdrEncodeFramed(px_bytes_retCodec, { rv: 0, data: 'no' as unknown as Buffer }, 28)).toThrow(/expected a Buffer/);
    expect(xdrEncodeFramed(px_bytes_retCodec, { rv: 0, data: Buffer.alloc(0) }, 28).length).toBe(28 + 12);
  });

  it('fillSuccessFrame writes the record mark and the accepted SUCCESS header in place', () => {
    const f = xdrEncodeFramed(px_bytes_retCodec, { rv: 0, data: Buffer.from('abcd') }, FRAMED_REPLY_PREFIX_SIZE);
    expect(fillSuccessFrame(f, 0x01020304)).toBe(true);
    expect(f.readUInt32BE(0)).toBe((0x80000000 | (f.length - 4)) >>> 0);
    expect([...Array(6).keys()].map((i) => f.readUInt32BE(4 + 4 * i))).toEqual([0x01020304, 1, 0, 0, 0, 0]);
    expect(fillSuccessFrame(Buffer.alloc(27), 1)).toBe(false);
    expect(fillSuccessFrame(Buffer.alloc(30), 1)).toBe(false);
  });
});

/**
 * Runs in a child process on the compiled daemon (dist/, as the daemon tests do): SoftHSM2 reads
 * SOFTHSM2_CONF from the real environment, which jest's sandboxed process.env does not reach. The real
 * module is called synchronously (pkcs11js's C_GetSessionInfo) by a backend that has nothing to wait for,
 * which is what the layer stack becomes once its layers and backend answer without awaiting.
 */
const PROBE = `
const path = require('path');
const { createHook } = require('async_hooks');
const p = require('pkcs11js');
const dist = (f) => require(path.join(process.env.ROOT, 'dist', f));
const rpc = dist('src/generated/pkcs11_rpc.js');
const { Pkcs11Dispatcher } = dist('src/server/dispatch/dispatcher.js');
const { AppRegistry } = dist('src/server/dispatch/connection-state.js');
const m = new p.PKCS11();
m.load(process.env.MODULE);
m.C_Initialize();
const slot = m.C_GetSlotList(true).find((id) => (m.C_GetTokenInfo(id).flags & p.CKF_TOKEN_INITIALIZED) !== 0);
const session = m.C_OpenSession(slot, p.CKF_SERIAL_SESSION);
class SyncBackend extends rpc.Pkcs11Passthrough {
  C_GetSessionInfo(_c, a) {
    // Session 3: the same module call, answered after a turn of the event loop (a call that waits).
    if (a.session === 3) return new Promise((resolve) => setImmediate(() => resolve(this.C_GetSessionInfo(_c, { session: 1 }))));
    if (a.session !== 1) return { rv: p.CKR_SESSION_HANDLE_INVALID, info: { slotID: 0, state: 0, flags: 0, deviceError: 0 } };
    const i = m.C_GetSessionInfo(session);
    return { rv: 0, info: { slotID: 0, state: i.state, flags: i.flags, deviceError: i.deviceError } };
  }
}
const d = new Pkcs11Dispatcher({ id: 1, transport: 'unix', remote: 'probe' }, new SyncBackend(undefined), () => undefined, new AppRegistry(0));
const def = rpc.PROCEDURES.find((x) => x.name === 'C_GetSessionInfo');
const header = { xid: 9, rpcvers: 2, prog: rpc.PKCS11_PROG, vers: rpc.PKCS11_V3, proc: def.proc, credFlavor: 0, cred: Buffer.alloc(0), verfFlavor: 0 };
const args = [1, 1, 2].map((s) => rpc.xdrEncode(def.args, { session: s }));
let promises = 0;
const hook = createHook({ init: (_id, type) => { if (type === 'PROMISE') promises += 1; } });
hook.enable();
const outs = args.map((a) => d.handleCall(header, a));
hook.disable();
const results = outs.map((o) => ({
  promise: o instanceof Promise,
  kind: o.kind,
  rv: o.kind === 'success_framed' ? rpc.xdrDecode(def.ret, o.frame.subarray(${FRAMED_REPLY_PREFIX_SIZE})).rv : null,
}));
// A call behind one that waits starts after it, and the replies come in arrival order.
const order = [];
const waiting = d.handleCall(header, rpc.xdrEncode(def.args, { session: 3 }));
const behind = d.handleCall(header, rpc.xdrEncode(def.args, { session: 2 }));
const queued = { waiting: waiting instanceof Promise, behind: behind instanceof Promise };
Promise.all([waiting.then(() => order.push('waiting')), behind.then(() => order.push('behind'))]).then(() => {
  const after = d.handleCall(header, args[0]);
  m.C_Finalize();
  process.stdout.write(JSON.stringify({ promises, results, queued, order, afterIsPromise: after instanceof Promise }));
});
`;

describe('dispatcher over a stack that answers without waiting', () => {
  it('answers a framed reply directly, creating no promise; queues only behind a call in flight', () => {
    const hsm = createSoftHsm(['sync']);
    try {
      const out = execFileSync(process.execPath, ['-e', PROBE], {
        env: { ...hsm.env, ROOT: path.resolve(__dirname, '../..'), MODULE: SOFTHSM_MODULE },
      });
      const r = JSON.parse(out.toString()) as Record<string, unknown>;
      expect(r).toEqual({
        queued: { waiting: true, behind: true },
        order: ['waiting', 'behind'],
        // Once nothing is in flight, calls answer directly again.
        afterIsPromise: false,
        promises: 0,
        results: [
          { promise: false, kind: 'success_framed', rv: ck.CKR_OK },
          { promise: false, kind: 'success_framed', rv: ck.CKR_OK },
          { promise: false, kind: 'success_framed', rv: ck.CKR_SESSION_HANDLE_INVALID },
        ],
      });
    } finally {
      hsm.cleanup();
    }
  });
});

/**
 * The whole in-process stack (createPkcs11Stack over real SoftHSM2: connection, arch, filter, handle and
 * login layers, router, pkcs11js backend), in a child process on dist/ for the same reason as above.
 * C_GetSessionInfo calls pkcs11js synchronously, so from the call bytes to the framed reply no layer
 * has anything to wait for.
 */
const STACK_PROBE = `
const path = require('path');
const { createHook } = require('async_hooks');
const p = require('pkcs11js');
const dist = (f) => require(path.join(process.env.ROOT, 'dist', f));
const rpc = dist('src/generated/pkcs11_rpc.js');
const { createPkcs11Stack } = dist('src/server/serve.js');
const settings = { listen: [], modules: [{ alias: 'softhsm', path: process.env.MODULE }], defaultAlias: 'softhsm', trace: false, workers: 0, maxRecordSize: 1 << 20 };
const stack = createPkcs11Stack(settings, () => undefined, 0);
const d = stack.createDispatcher({ id: 1, transport: 'unix', remote: 'probe' });
const defOf = (name) => rpc.PROCEDURES.find((x) => x.name === name);
const header = (def) => ({ xid: 9, rpcvers: 2, prog: rpc.PKCS11_PROG, vers: rpc.PKCS11_V3, proc: def.proc, credFlavor: 0, cred: Buffer.alloc(0), verfFlavor: 0 });
const decode = (def, o) => rpc.xdrDecode(def.ret, o.frame.subarray(${FRAMED_REPLY_PREFIX_SIZE}));
async function call(name, args) {
  const def = defOf(name);
  return decode(def, await d.handleCall(header(def), rpc.xdrEncode(def.args, args)));
}
(async () => {
  await call('C_Initialize', undefined);
  const slots = (await call('C_GetSlotList', { tokenPresent: 1, count: 4 })).slotList;
  const session = (await call('C_OpenSession', { slotID: slots[0], flags: p.CKF_SERIAL_SESSION | p.CKF_RW_SESSION })).session;
  const login = await call('C_Login', { session, userType: p.CKU_USER, pin: Buffer.from(process.env.PIN) });
  const def = defOf('C_GetSessionInfo');
  const args = [session, session, session + 16].map((s) => rpc.xdrEncode(def.args, { session: s }));
  let promises = 0;
  const hook = createHook({ init: (_id, type) => { if (type === 'PROMISE') promises += 1; } });
  hook.enable();
  const outs = args.map((a) => d.handleCall(header(def), a));
  hook.disable();
  const sessionInfoPromises = promises;
  const results = outs.map((o) => {
    const r = o instanceof Promise ? null : decode(def, o);
    return { promise: o instanceof Promise, rv: r && r.rv, state: r && r.rv === 0 ? r.info.state : null };
  });
  // A session object created, then found: the handle layer records its owner and asks the module for
  // CKA_TOKEN, all while the call runs; the search sifts the module's answer the same way.
  const ul = (v) => { const b = Buffer.alloc(8); b.writeBigUInt64LE(BigInt(v)); return b; };
  const template = [
    { type: p.CKA_CLASS, value: ul(p.CKO_DATA), valueLen: 8 },
    { type: p.CKA_TOKEN, value: Buffer.from([0]), valueLen: 1 },
    { type: p.CKA_LABEL, value: Buffer.from('hot'), valueLen: 3 },
  ];
  const steps = [
    ['C_CreateObject', { session, template }],
    ['C_FindObjectsInit', { session, template: [template[2]] }],
    ['C_FindObjects', { session, maxObjectCount: 10 }],
    ['C_FindObjectsFinal', { session }],
  ].map(([name, a]) => [defOf(name), rpc.xdrEncode(defOf(name).args, a)]);
  promises = 0;
  hook.enable();
  const objectOuts = steps.map(([sd, a]) => d.handleCall(header(sd), a));
  hook.disable();
  const objects = objectOuts.map((o, i) => (o instanceof Promise ? 'promise' : decode(steps[i][0], o)));
  const created = objects[0].object;
  const objectCalls = { promises, rvs: objects.map((r) => (typeof r === 'number' ? r : r.rv)), found: objects[2].objects, createdIsNumber: typeof created === 'number', created };
  await d.close();
  stack.finalize();
  process.stdout.write(JSON.stringify({ login, promises: sessionInfoPromises, results, objectCalls }));
})().catch((e) => { process.stderr.write(String(e && e.stack)); process.exit(1); });
`;

describe('the full layer stack over a module call that answers synchronously', () => {
  it('answers C_GetSessionInfo (and its CK_RV failure), C_CreateObject and a search without creating a promise', () => {
    const hsm = createSoftHsm(['stack']);
    try {
      const out = execFileSync(process.execPath, ['-e', STACK_PROBE], {
        env: { ...hsm.env, ROOT: path.resolve(__dirname, '../..'), MODULE: SOFTHSM_MODULE, PIN: USER_PIN },
      });
      const r = JSON.parse(out.toString()) as { objectCalls: { created: number } };
      expect(r).toEqual({
        login: ck.CKR_OK,
        promises: 0,
        results: [
          { promise: false, rv: ck.CKR_OK, state: ck.CKS_RW_USER_FUNCTIONS },
          { promise: false, rv: ck.CKR_OK, state: ck.CKS_RW_USER_FUNCTIONS },
          // An unknown virtual handle: the handle layer's synchronous throw is the call's CK_RV.
          { promise: false, rv: ck.CKR_SESSION_HANDLE_INVALID, state: null },
        ],
        objectCalls: {
          promises: 0,
          rvs: [ck.CKR_OK, ck.CKR_OK, ck.CKR_OK, ck.CKR_OK],
          found: [r.objectCalls.created],
          createdIsNumber: true,
          created: r.objectCalls.created,
        },
      });
    } finally {
      hsm.cleanup();
    }
  });
});
