import path from 'node:path';
import * as p from 'pkcs11js';
import {
  PKCS11_PROG,
  PKCS11_V3,
  Pkcs11Passthrough,
  PROCEDURES,
  PX_ARCH_LITTLE_ENDIAN_64,
  xdrDecode,
  xdrEncode,
  xdrEncodeFramed,
} from '../src/generated/pkcs11_rpc';
import type {
  C_GetSessionInfo_ret,
  CallName,
  Pkcs11Calls,
  ProcedureDef,
  px_bytes_ret,
  px_rv,
  px_session_data_args,
  px_session_mechanism_key_args,
} from '../src/generated/pkcs11_rpc';
import { AppRegistry } from '../src/server/dispatch/connection-state';
import type { ConnectionState } from '../src/server/dispatch/connection-state';
import { Pkcs11Dispatcher } from '../src/server/dispatch/dispatcher';
import { frameRecord } from '../src/server/transport/record-marking';
import { encodeReply, fillSuccessFrame, parseCall } from '../src/server/transport/rpc-message';
import { FRAMED_REPLY_PREFIX_SIZE } from '../src/server/transport/types';
import type { CallOutcome, RpcCallHeader } from '../src/server/transport/types';
import { createHook } from 'async_hooks';
import { createPkcs11Stack } from '../src/server/serve';
import { installAuditSinks } from '../src/server/audit-sinks';
import { enableMetrics } from '../src/server/metrics/registry';
import { bool, bytes, ecKeyPairTemplates, mech, query, ulong } from '../tests/ts/helpers/attrs';
import { createSoftHsm, SOFTHSM_MODULE, USER_PIN } from '../tests/ts/helpers/softhsm';

/**
 * `npm run bench:dispatch`: what the daemon itself costs per call, without
 * sockets. Each operation runs from the call record to the reply record: the
 * RPC header parsed, arguments decoded, the whole layer stack, the result
 * encoded and framed as the transport writes it; and then straight through
 * pkcs11js on the same SoftHSM2 token. The difference is our per-call
 * overhead above the module. Single process, one connection, warm.
 * Env: BENCH_MS per workload (default 2000); BENCH_STACK_ONLY=1 runs only the first table;
 * BENCH_FILTER=FILE runs the stack with that filter.conf (e.g. filter.conf.example plus a key);
 * BENCH_ONLY=TEXT runs only the first table's rows whose name contains TEXT (e.g. under --cpu-prof).
 */
const MS = Number(process.env.BENCH_MS ?? 2000);
const ONLY = process.env.BENCH_ONLY;
const BY_NAME = new Map<CallName, ProcedureDef>(PROCEDURES.map((d) => [d.name, d]));

/** A prepared call: header and argument bytes built once. */
interface Prepared {
  header: RpcCallHeader;
  args: Buffer;
  /** The whole call message (RPC header, AUTH_NONE, arguments), as the transport reads it. */
  record: Buffer;
  def: ProcedureDef;
}

function prepare(name: CallName, args: unknown): Prepared {
  const def = BY_NAME.get(name)!;
  const header: RpcCallHeader = { xid: 1, rpcvers: 2, prog: PKCS11_PROG, vers: PKCS11_V3, proc: def.proc, credFlavor: 0, cred: Buffer.alloc(0), verfFlavor: 0 };
  const encoded = xdrEncode(def.args, args);
  const head = Buffer.alloc(40);
  [header.xid, 0, 2, PKCS11_PROG, PKCS11_V3, def.proc, 0, 0, 0, 0].forEach((v, i) => head.writeUInt32BE(v, 4 * i));
  return { header, args: encoded, record: Buffer.concat([head, encoded]), def };
}

/** The result bytes of a SUCCESS outcome. */
function body(name: string, out: CallOutcome): Buffer {
  if (out.kind === 'success') return out.body;
  if (out.kind === 'success_framed') return out.frame.subarray(FRAMED_REPLY_PREFIX_SIZE);
  throw new Error(`${name}: ${out.kind}`);
}

async function send(d: Pkcs11Dispatcher, c: Prepared, expectRv: number | null = 0): Promise<{ rv: number } & Record<string, unknown>> {
  const out: CallOutcome = await callOnce(d, c);
  const r = xdrDecode(c.def.ret, body(c.def.name, out)) as number | ({ rv: number } & Record<string, unknown>);
  const res = typeof r === 'number' ? { rv: r } : r;
  if (expectRv !== null && res.rv !== expectRv) throw new Error(`${c.def.name}: CK_RV 0x${res.rv.toString(16)}`);
  return res;
}

/** The bench's calls answered by the module synchronously; handles are the bench's own fixed numbers. */
class SyncBackend extends Pkcs11Passthrough<ConnectionState> {
  private readonly sigOut = Buffer.alloc(128);
  private readonly encOut = Buffer.alloc(4096 + 16);

  constructor(
    private readonly m: p.PKCS11,
    private readonly session: Buffer,
    private readonly ecKey: Buffer,
    private readonly aesKey: Buffer,
  ) {
    super(undefined as unknown as Pkcs11Calls<ConnectionState>);
  }

  C_GetSessionInfo(): C_GetSessionInfo_ret {
    const i = this.m.C_GetSessionInfo(this.session);
    return { rv: 0, info: { slotID: 0, state: i.state, flags: i.flags, deviceError: i.deviceError } };
  }

  C_SignInit(_c: ConnectionState, a: px_session_mechanism_key_args): px_rv {
    this.m.C_SignInit(this.session, { mechanism: a.mechanism.mechanism }, this.ecKey);
    return 0;
  }

  C_Sign(_c: ConnectionState, a: px_session_data_args): px_bytes_ret {
    return { rv: 0, data: Buffer.from(this.m.C_Sign(this.session, a.data, this.sigOut)) };
  }

  C_EncryptInit(_c: ConnectionState, a: px_session_mechanism_key_args): px_rv {
    this.m.C_EncryptInit(this.session, { mechanism: a.mechanism.mechanism, parameter: a.mechanism.parameter }, this.aesKey);
    return 0;
  }

  C_Encrypt(_c: ConnectionState, a: px_session_data_args): px_bytes_ret {
    return { rv: 0, data: Buffer.from(this.m.C_Encrypt(this.session, a.data, this.encOut)) };
  }
}

/** One call as the transport makes it: the record parsed, then handed to the dispatcher. */
function callOnce(d: Pkcs11Dispatcher, c: Prepared): CallOutcome | Promise<CallOutcome> {
  const parsed = parseCall(c.record);
  if (parsed.kind !== 'call') throw new Error(`${c.def.name}: ${parsed.kind}`);
  return d.handleCall(parsed.header, parsed.args, parsed.reader);
}

/** The reply record as the transport builds it for the socket (rpc-connection.ts complete()). */
function replyFrame(xid: number, o: CallOutcome): Buffer {
  return o.kind === 'success_framed' && fillSuccessFrame(o.frame, xid)
    ? o.frame
    : frameRecord(encodeReply({ kind: 'accepted', xid, outcome: o }));
}

/**
 * Promises created per call (async_hooks PROMISE inits) over `n` calls of `calls`, run as the transport
 * runs them: a synchronous outcome is not awaited. Counts every promise the dispatcher, the layers and
 * the backend make.
 */
async function promisesPerCall(d: Pkcs11Dispatcher, calls: Prepared[], n = 200): Promise<number> {
  let count = 0;
  const hook = createHook({
    init(_id, type) {
      if (type === 'PROMISE') count += 1;
    },
  });
  let awaited = 0;
  hook.enable();
  for (let i = 0; i < n; i++) {
    for (const c of calls) {
      const out = callOnce(d, c);
      if (out instanceof Promise) {
        awaited += 1;
        await out;
      }
    }
  }
  hook.disable();
  // Each `await` above makes one promise of the bench's own (the async function's continuation).
  return (count - awaited) / (n * calls.length);
}

/**
 * CPU µs (user + system, all threads of the process) per operation of `op`: the best of 10 windows over MS
 * after a warm-up. The machine is shared: CPU time leaves out the time other processes hold the cores,
 * and the best window is the least disturbed.
 */
async function timeOp(op: () => unknown): Promise<number> {
  const until = (ms: number) => process.hrtime.bigint() + BigInt(Math.round(ms * 1_000_000));
  for (const end = until(Math.min(300, MS / 4)); process.hrtime.bigint() < end; ) await op();
  let best = Infinity;
  for (let w = 0; w < 10; w++) {
    let n = 0;
    const c0 = process.cpuUsage();
    for (const end = until(MS / 10); process.hrtime.bigint() < end; n++) await op();
    const c = process.cpuUsage(c0);
    best = Math.min(best, (c.user + c.system) / n);
  }
  return best;
}

async function main(): Promise<void> {
  const hsm = createSoftHsm(['bench']);
  process.env.SOFTHSM2_CONF = hsm.conf;
  // BENCH_AUDIT=1: an audit file sink (audit layer in the stack); BENCH_METRICS=1: the metrics layer on top.
  if (process.env.BENCH_AUDIT === '1') installAuditSinks({ file: path.join(hsm.dir, 'audit.log'), stderr: false }, 0, () => undefined);
  if (process.env.BENCH_METRICS === '1') enableMetrics(0);
  const stack = createPkcs11Stack(
    {
      listen: [],
      modules: [{ alias: 'softhsm', path: SOFTHSM_MODULE }],
      defaultAlias: 'softhsm',
      trace: false,
      workers: 0,
      maxRecordSize: 1 << 20,
      // BENCH_FILTER=FILE: the stack runs that filter.conf (its `modules` must name the alias softhsm).
      ...(process.env.BENCH_FILTER ? { filterFile: process.env.BENCH_FILTER } : {}),
    },
    () => undefined,
    0,
  );
  try {
    const d = stack.createDispatcher({ id: 1, transport: 'unix', remote: 'bench' });
    // Answers the daemon's own architecture, not a CK_RV.
    await send(d, prepare('C_SetupArch', { arch: PX_ARCH_LITTLE_ENDIAN_64 }), null);
    await send(d, prepare('C_Initialize', undefined));
    const slot = (await send(d, prepare('C_GetSlotList', { tokenPresent: 1, count: 4 }))).slotList as number[];
    const s = (await send(d, prepare('C_OpenSession', { slotID: slot[0], flags: p.CKF_SERIAL_SESSION | p.CKF_RW_SESSION }))).session as number;
    await send(d, prepare('C_Login', { session: s, userType: p.CKU_USER, pin: Buffer.from(USER_PIN) }));
    const ec = await send(d, prepare('C_GenerateKeyPair', { session: s, mechanism: mech(p.CKM_EC_KEY_PAIR_GEN), ...ecKeyPairTemplates('bench-ec', false) }));
    const aesTemplate = [ulong(p.CKA_CLASS, p.CKO_SECRET_KEY), ulong(p.CKA_KEY_TYPE, p.CKK_AES), ulong(p.CKA_VALUE_LEN, 32), bool(p.CKA_TOKEN, false), bool(p.CKA_ENCRYPT, true), bytes(p.CKA_LABEL, 'bench-aes')];
    const aes = await send(d, prepare('C_GenerateKey', { session: s, mechanism: mech(p.CKM_AES_KEY_GEN), template: aesTemplate }));

    // The same module, driven directly: the stack's C_Initialize already ran in this process.
    const m = new p.PKCS11();
    m.load(SOFTHSM_MODULE);
    try {
      m.C_Initialize({ flags: p.CKF_OS_LOCKING_OK });
    } catch {
      /* CKR_CRYPTOKI_ALREADY_INITIALIZED */
    }
    const rs = m.C_OpenSession(m.C_GetSlotList(true)[0], p.CKF_SERIAL_SESSION | p.CKF_RW_SESSION);
    const find = (cls: number, label: string): Buffer => {
      m.C_FindObjectsInit(rs, [{ type: p.CKA_CLASS, value: cls }, { type: p.CKA_LABEL, value: label }]);
      const [h] = m.C_FindObjects(rs, 1);
      m.C_FindObjectsFinal(rs);
      return h;
    };
    const rawEc = find(p.CKO_PRIVATE_KEY, 'bench-ec');
    const rawAes = find(p.CKO_SECRET_KEY, 'bench-aes');
    const digest = Buffer.alloc(32, 1);
    const block = Buffer.alloc(4096, 2);
    const iv = Buffer.alloc(16, 3);
    const sigOut = Buffer.alloc(128);
    const encOut = Buffer.alloc(4096 + 16);

    const info = prepare('C_GetSessionInfo', { session: s });
    const signInit = prepare('C_SignInit', { session: s, mechanism: mech(p.CKM_ECDSA), key: ec.privateKey });
    const sign = prepare('C_Sign', { session: s, data: digest });
    const encInit = prepare('C_EncryptInit', { session: s, mechanism: mech(p.CKM_AES_CBC, iv), key: aes.object });
    const enc = prepare('C_Encrypt', { session: s, data: block });
    // The C benchmark's getattr and find workloads (bench/c/bench.c), on the session key pair made above.
    const getLabel = prepare('C_GetAttributeValue', { session: s, object: ec.privateKey, template: [query(p.CKA_LABEL, 64)] });
    const findInit = prepare('C_FindObjectsInit', { session: s, template: [ulong(p.CKA_CLASS, p.CKO_PRIVATE_KEY), bytes(p.CKA_LABEL, 'bench-ec')] });
    const findObjects = prepare('C_FindObjects', { session: s, maxObjectCount: 4 });
    const findFinal = prepare('C_FindObjectsFinal', { session: s });
    const label = Buffer.alloc(64);

    const rows: Array<[string, number, number, number, number]> = [];
    const row = async (name: string, calls: Prepared[], viaStack: () => unknown, raw: () => unknown): Promise<void> => {
      if (ONLY !== undefined && !name.includes(ONLY)) return;
      const a = await timeOp(viaStack);
      const b = await timeOp(raw);
      rows.push([name, calls.length, a, b, await promisesPerCall(d, calls)]);
    };
    /** Runs `calls` in order as the transport does, awaiting only promised outcomes, up to the reply record. */
    const run = (calls: Prepared[]) => async (): Promise<void> => {
      for (const c of calls) {
        const o = callOnce(d, c);
        replyFrame(c.header.xid, o instanceof Promise ? await o : o);
      }
    };
    await row('C_GetSessionInfo', [info], run([info]), () => m.C_GetSessionInfo(rs));
    await row('C_GetAttributeValue (CKA_LABEL)', [getLabel], run([getLabel]), () => m.C_GetAttributeValue(rs, rawEc, [{ type: p.CKA_LABEL, value: label }]));
    await row('find (Init+FindObjects+Final)', [findInit, findObjects, findFinal], run([findInit, findObjects, findFinal]), () => {
      m.C_FindObjectsInit(rs, [{ type: p.CKA_CLASS, value: p.CKO_PRIVATE_KEY }, { type: p.CKA_LABEL, value: 'bench-ec' }]);
      m.C_FindObjects(rs, 4);
      m.C_FindObjectsFinal(rs);
    });
    await row('ECDSA P-256 (SignInit+Sign)', [signInit, sign], run([signInit, sign]), () => {
      m.C_SignInit(rs, { mechanism: p.CKM_ECDSA }, rawEc);
      m.C_Sign(rs, digest, sigOut);
    });
    await row('AES-CBC 4 KiB (EncryptInit+Encrypt)', [encInit, enc], run([encInit, enc]), () => {
      m.C_EncryptInit(rs, { mechanism: p.CKM_AES_CBC, parameter: iv }, rawAes);
      m.C_Encrypt(rs, block, encOut);
    });

    // The dispatcher and codecs over a backend that calls the module synchronously, with no layers:
    // the floor of the RPC codec layer, and what the stack costs once nothing in it awaits.
    const sync = new SyncBackend(m, rs, rawEc, rawAes);
    const ds = new Pkcs11Dispatcher({ id: 2, transport: 'unix', remote: 'bench-sync' }, sync, () => undefined, new AppRegistry(0));
    const dsRun = (calls: Prepared[]) => (): void => {
      for (const c of calls) {
        const o = callOnce(ds, c);
        if (o instanceof Promise) throw new Error('the synchronous backend made a promise');
        replyFrame(c.header.xid, o);
      }
    };
    const syncRows: Array<[string, Prepared[]]> = [
      ['C_GetSessionInfo', [info]],
      ['ECDSA P-256 (SignInit+Sign)', [signInit, sign]],
      ['AES-CBC 4 KiB (EncryptInit+Encrypt)', [encInit, enc]],
    ];
    const syncResults: Array<[string, number, number, number]> = [];
    const more = process.env.BENCH_STACK_ONLY !== '1';
    for (const [name, calls] of more ? syncRows : []) {
      syncResults.push([name, calls.length, await timeOp(dsRun(calls)), await promisesPerCall(ds, calls)]);
    }

    // One reply's encoding: into the shared slab (what the dispatcher does) or into the reusable sink, then
    // copied into a Buffer of its own (the earlier way, before the header was prepended).
    const encodeRows: Array<[string, number, number]> = [];
    const infoRet = BY_NAME.get('C_GetSessionInfo')!.ret;
    const infoValue = { rv: 0, info: { slotID: 1, state: 2, flags: 4, deviceError: 0 } };
    const bytesRet = BY_NAME.get('C_Encrypt')!.ret;
    const bytesValue = { rv: 0, data: Buffer.alloc(4096, 5) };
    const encodings = [['C_GetSessionInfo_ret', infoRet, infoValue], ['px_bytes_ret 4 KiB', bytesRet, bytesValue]] as const;
    for (const [name, codec, value] of more ? encodings : []) {
      const loop = (f: () => unknown) => (): void => {
        for (let i = 0; i < 1000; i++) f();
      };
      const slab = (await timeOp(loop(() => xdrEncodeFramed(codec, value, FRAMED_REPLY_PREFIX_SIZE)))) / 1000;
      const copied = (await timeOp(loop(() => xdrEncode(codec, value)))) / 1000;
      encodeRows.push([name, slab, copied]);
    }
    m.C_CloseSession(rs);

    console.log(`In-process CPU cost per operation (µs, best of 10 windows), ${MS} ms per cell`);
    console.log('operation                            | calls | daemon stack | pkcs11js direct | overhead per call | promises per call');
    for (const [name, calls, a, b, promises] of rows) {
      console.log(
        `${name.padEnd(36)} | ${String(calls).padStart(5)} | ${a.toFixed(1).padStart(12)} | ${b.toFixed(1).padStart(15)} | ` +
          `${((a - b) / calls).toFixed(1).padStart(17)} | ${promises.toFixed(1).padStart(17)}`,
      );
    }
    if (!more) return;
    console.log('\nDispatcher over a synchronous backend (pkcs11js called directly, no layers): the RPC codec floor');
    console.log('operation                            | calls | µs per op | promises per call');
    for (const [name, calls, a, promises] of syncResults) {
      console.log(`${name.padEnd(36)} | ${String(calls).padStart(5)} | ${a.toFixed(1).padStart(9)} | ${promises.toFixed(1).padStart(17)}`);
    }
    console.log('\nOne reply encoded (µs): into the shared slab with the header room in front | reusable sink + copy out');
    for (const [name, slab, copied] of encodeRows) {
      console.log(`${name.padEnd(36)} | ${slab.toFixed(3).padStart(9)} | ${copied.toFixed(3).padStart(9)}`);
    }
  } finally {
    stack.finalize();
    hsm.cleanup();
  }
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
