import { createHash } from 'node:crypto';
import path from 'node:path';
import * as p from 'pkcs11js';
import type { BackendContext } from '../../src/bindings/backend';
import { LoadedModule, Pkcs11jsBackend } from '../../src/bindings/pkcs11js-backend';
import type { CallName } from '../../src/generated/pkcs11_rpc';
import { rvOf } from '../../src/pkcs11/errors';
import { DEFAULT_APP_LIMITS } from '../../src/server/settings';
import { mech } from './helpers/attrs';
import { startDaemon } from './helpers/daemon';
import { faultyModule } from './helpers/faulty-module';
import { startInProcess } from './helpers/in-process';
import type { ArgsOf, Pkcs11Caller, RetOf } from './helpers/in-process';
import { P11Client } from './helpers/p11-client';
import { createSoftHsm, USER_PIN } from './helpers/softhsm';

/**
 * One table of calls and expected answers, run against the module directly
 * (the pkcs11js backend), the in-process layer stack and the daemon. A step
 * builds its arguments from what earlier steps returned.
 */
interface Ctx {
  slot: number;
  session: number;
}
interface Step {
  call: CallName;
  args: (c: Ctx) => unknown;
  rv: number;
  /** Where the module seen through pkcs11js answers differently, and why. */
  moduleRv?: number;
  check?: (r: Record<string, unknown>, c: Ctx) => void;
}

const RW = p.CKF_SERIAL_SESSION | p.CKF_RW_SESSION;
const ABC_SHA256 = createHash('sha256').update('abc').digest();
const state = (want: number) => (r: Record<string, unknown>) => expect((r.info as { state: number }).state).toBe(want);

const TABLE: Step[] = [
  { call: 'C_GetSessionInfo', args: () => ({ session: 0xdead0 }), rv: p.CKR_SESSION_HANDLE_INVALID },
  { call: 'C_OpenSession', args: (c) => ({ slotID: c.slot, flags: RW }), rv: p.CKR_OK, check: (r, c) => (c.session = r.session as number) },
  { call: 'C_GetSessionInfo', args: (c) => ({ session: c.session }), rv: p.CKR_OK, check: state(2) },
  { call: 'C_Login', args: (c) => ({ session: c.session, userType: p.CKU_USER, pin: Buffer.from('0000') }), rv: p.CKR_PIN_INCORRECT },
  { call: 'C_Login', args: (c) => ({ session: c.session, userType: p.CKU_USER, pin: Buffer.from(USER_PIN) }), rv: p.CKR_OK },
  { call: 'C_GetSessionInfo', args: (c) => ({ session: c.session }), rv: p.CKR_OK, check: state(3) },
  { call: 'C_Login', args: (c) => ({ session: c.session, userType: p.CKU_USER, pin: Buffer.from(USER_PIN) }), rv: p.CKR_USER_ALREADY_LOGGED_IN },
  { call: 'C_GenerateRandom', args: (c) => ({ session: c.session, length: 32 }), rv: p.CKR_OK, check: (r) => expect((r.data as Buffer).length).toBe(32) },
  { call: 'C_DigestInit', args: (c) => ({ session: c.session, mechanism: mech(p.CKM_SHA256) }), rv: p.CKR_OK },
  { call: 'C_Digest', args: (c) => ({ session: c.session, data: Buffer.from('abc') }), rv: p.CKR_OK, check: (r) => expect(r.data).toEqual(ABC_SHA256) },
  { call: 'C_Logout', args: (c) => ({ session: c.session }), rv: p.CKR_OK },
  // SoftHSM2 answers a second C_Logout with CKR_OK; the daemon's virtual login knows the caller holds none.
  { call: 'C_Logout', args: (c) => ({ session: c.session }), rv: p.CKR_USER_NOT_LOGGED_IN, moduleRv: p.CKR_OK },
  { call: 'C_CloseSession', args: (c) => ({ session: c.session }), rv: p.CKR_OK },
  { call: 'C_CloseSession', args: (c) => ({ session: c.session }), rv: p.CKR_SESSION_HANDLE_INVALID },
];

type Call = (name: CallName, args: unknown) => Promise<Record<string, unknown>>;

async function runTable(call: Call, direct = false): Promise<void> {
  const slots = (await call('C_GetSlotList', { tokenPresent: 1, count: 4 })).slotList as number[];
  const ctx: Ctx = { slot: slots[0], session: 0 };
  for (const step of TABLE) {
    const r = await call(step.call, step.args(ctx));
    const rv = direct && step.moduleRv !== undefined ? step.moduleRv : step.rv;
    expect({ call: step.call, rv: r.rv }).toEqual({ call: step.call, rv });
    if (step.check) step.check(r, ctx);
  }
}

/** Results as records: calls answering only a CK_RV become { rv }. */
function viaCaller(c: Pkcs11Caller): Call {
  return async (name, args) => {
    const r = (await c.call(name, args as ArgsOf<typeof name>)) as RetOf<typeof name>;
    return typeof r === 'number' ? { rv: r } : (r as unknown as Record<string, unknown>);
  };
}

test('the module directly (pkcs11js backend)', async () => {
  const store = createSoftHsm(['conformance']);
  const backend = new Pkcs11jsBackend(new LoadedModule('m', faultyModule(path.join(store.dir, 'module'), store.conf).path), DEFAULT_APP_LIMITS);
  const ctx: BackendContext = { appId: 1, alias: 'm' };
  try {
    await runTable(async (name, args) => {
      try {
        const r = (await (backend[name] as (c: BackendContext, a: unknown) => Promise<unknown>).call(backend, ctx, args)) as unknown;
        return typeof r === 'number' ? { rv: r } : (r as Record<string, unknown>);
      } catch (e) {
        return { rv: rvOf(e) };
      }
    }, true);
  } finally {
    backend.finalize();
    store.cleanup();
  }
});

test('the in-process layer stack', async () => {
  const store = createSoftHsm(['conformance']);
  const stack = startInProcess([{ alias: 'm', path: faultyModule(path.join(store.dir, 'module'), store.conf).path }]);
  try {
    const c = await stack.open();
    await runTable(viaCaller(c));
    await c.close();
  } finally {
    stack.finalize();
    store.cleanup();
  }
});

test('the daemon', async () => {
  const d = await startDaemon();
  try {
    const c = await P11Client.open({ path: d.socketPath });
    await runTable(viaCaller(c));
    await c.close();
  } finally {
    await d.stop();
  }
});
