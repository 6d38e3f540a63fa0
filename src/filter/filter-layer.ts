import { CALL_FIELDS, PROCEDURES, Pkcs11Passthrough, isPromise } from '../generated/pkcs11_rpc';
import type {
  C_FindObjects_args,
  C_FindObjects_ret,
  C_GetMechanismInfo_args,
  C_GetMechanismInfo_ret,
  C_GetMechanismList_args,
  C_GetMechanismList_ret,
  C_Login_args,
  C_OpenSession_args,
  C_OpenSession_ret,
  CallName,
  MaybePromise,
  Pkcs11Calls,
  px_attribute,
  px_mechanism,
} from '../generated/pkcs11_rpc';
import { CKR_OK, ck } from '../pkcs11/constants';
import { Pkcs11Error } from '../pkcs11/errors';
import type { ConnectionState } from '../server/dispatch/connection-state';
import { installGeneric, invoke, then } from '../server/layers/generic';
import { OBJECT_ARG_FIELDS, V3_CALL_OF_TYPED } from '../server/layers/object-fields';
import type { Logger } from '../server/log';
import type { HookAnswer, HookCall } from './hooks';
import { describeIdentity, policyFor } from './identity';
import { ObjectAttributes } from './object-attributes';
import { INVALIDATING_CALLS, TEMPLATE_CALLS } from './policy';
import type { AliasPolicy, BoundHook, CompiledFilter, PaddingKind } from './policy';

const CKA_LABEL = ck.CKA_LABEL;
const CKA_ID = ck.CKA_ID;
const LABEL_AND_ID: readonly number[] = [CKA_LABEL, CKA_ID];

/** Mechanisms remove_padding_oracles refuses: PKCS#1 v1.5 (with and without hashing), raw RSA, and the CBC_PAD ciphers. */
const PADDING_ORACLE_MECHANISMS: ReadonlySet<number> = new Set(
  [
    'CKM_RSA_PKCS', 'CKM_MD2_RSA_PKCS', 'CKM_MD5_RSA_PKCS', 'CKM_SHA1_RSA_PKCS', 'CKM_RIPEMD128_RSA_PKCS',
    'CKM_RIPEMD160_RSA_PKCS', 'CKM_SHA256_RSA_PKCS', 'CKM_SHA384_RSA_PKCS', 'CKM_SHA512_RSA_PKCS', 'CKM_RC2_CBC_PAD',
    'CKM_DES_CBC_PAD', 'CKM_DES3_CBC_PAD', 'CKM_CDMF_CBC_PAD', 'CKM_CAST_CBC_PAD', 'CKM_CAST3_CBC_PAD',
    'CKM_CAST5_CBC_PAD', 'CKM_CAST128_CBC_PAD', 'CKM_RC5_CBC_PAD', 'CKM_IDEA_CBC_PAD', 'CKM_AES_CBC_PAD', 'CKM_RSA_X_509',
  ].map((n) => ck[n as keyof typeof ck] as number),
);

/** remove_padding_oracles operation kind of each call it applies to. */
const PADDING_KIND: ReadonlyMap<CallName, PaddingKind> = new Map<CallName, PaddingKind>([
  ['C_EncryptInit', 'encrypt'],
  ['C_SignInit', 'sign'],
  ['C_WrapKey', 'wrap'],
  ['C_UnwrapKey', 'unwrap'],
]);

/** User types forbid_admin_operations refuses at C_Login. */
const ADMIN_USERS: ReadonlySet<number> = new Set([ck.CKU_SO, ck.CKU_CONTEXT_SPECIFIC]);

/** What a shadow-mode dry run's module call answers: the call is not made. */
const DRY_RUN_REACHED = Object.freeze({ rv: CKR_OK });

const ERROR_RET = new Map(PROCEDURES.map((p) => [p.name, p.errorRet]));

/**
 * Policy enforcement point of the stack, between the CK_ULONG layout layer
 * (above: values here are in native layout) and the handle layer (below:
 * handles here are the client's virtual ones, and the filter's own reads go
 * through ownership and login rules). The policy is compiled once per
 * process (policy.ts); an application is bound to its alias's policy at its
 * first call after C_LoadModule. A call no rule of that policy looks at
 * goes straight down, without a promise.
 *
 * Order of one call, as in Caml Crush: pre hooks → forbidden function →
 * label/id of the objects named → forbidden mechanism → padding oracles →
 * templates (label/id of new objects) → read-only sessions, admin logins →
 * post hooks → the call → result filtering (mechanism lists, found objects).
 */
export class FilterLayer extends Pkcs11Passthrough<ConnectionState> {
  readonly objects: ObjectAttributes;

  constructor(
    next: Pkcs11Calls<ConnectionState>,
    private filter: CompiledFilter,
    private readonly log: Logger,
  ) {
    super(next);
    this.objects = new ObjectAttributes(next);
    installGeneric(this, FilterLayer.prototype, (name, conn, args) => {
      const policy = this.policyOf(conn);
      if (!policy.active.has(name)) return invoke(this.next, name, conn, args);
      return this.filtered(policy, name, conn, args, (a) => invoke(this.next, name, conn, a));
    });
  }

  /** Replaces the policy (SIGHUP): each application rebinds at its next call. */
  reload(filter: CompiledFilter): void {
    this.filter = filter;
  }

  policyOf(conn: ConnectionState): AliasPolicy {
    const app = conn.app;
    const bound = app.filterPolicy;
    if (bound !== null && bound.generation === this.filter.generation && bound.identity === conn.identity) return bound.policy;
    const alias = app.moduleAlias;
    const policy = alias === null ? undefined : policyFor(this.filter, conn.identity, alias);
    // Only aliases of `modules` can be loaded, and every one has a policy; a gap here is a bug: refuse.
    if (policy === undefined) throw new Pkcs11Error(alias === null ? ck.CKR_CRYPTOKI_NOT_INITIALIZED : ck.CKR_GENERAL_ERROR);
    app.filterPolicy = { generation: this.filter.generation, policy, identity: conn.identity };
    return policy;
  }

  /**
   * One call through the policy's checks and hooks. `call` performs the call
   * with the (possibly rewritten) arguments once every check passed.
   */
  private filtered(
    policy: AliasPolicy,
    procedure: CallName,
    conn: ConnectionState,
    args: unknown,
    call: (args: unknown) => MaybePromise<unknown>,
  ): MaybePromise<unknown> {
    if (policy.shadow !== undefined) return this.shadowed(policy.shadow, procedure, conn, args);
    const name = V3_CALL_OF_TYPED.get(procedure) ?? procedure;
    const ctx = { name, procedure, conn, next: this.next, objects: this.objects, policy };
    const pre = policy.pre.get(name);
    return then(pre ? this.runHooks(pre, ctx, args) : undefined, (a0) => {
      if (a0 !== undefined && 'ret' in a0) return a0.ret;
      const a1 = a0 !== undefined ? a0.args : args;
      return then(this.staticChecks(policy, name, procedure, conn, a1), () => {
        const post = policy.post.get(name);
        return then(post ? this.runHooks(post, ctx, a1) : undefined, (b) => {
          if (b !== undefined && 'ret' in b) return b.ret;
          const a2 = b !== undefined ? b.args : a1;
          return then(call(a2), (ret) => {
            if (INVALIDATING_CALLS.has(name)) this.invalidateAfter(name, conn, a2);
            return ret;
          });
        });
      });
    });
  }

  /**
   * Shadow mode: `enforcing` runs as a dry run up to the module call (its
   * refusals are logged as not enforced), then the call goes down with the
   * client's own arguments and its answer is returned unfiltered.
   */
  private shadowed(enforcing: AliasPolicy, procedure: CallName, conn: ConnectionState, args: unknown): MaybePromise<unknown> {
    const real = (): MaybePromise<unknown> => invoke(this.next, procedure, conn, args);
    const end = (): void => {
      conn.filterDryRun = false;
    };
    conn.filterDryRun = true;
    let dry: MaybePromise<unknown>;
    try {
      dry = this.filtered(enforcing, procedure, conn, args, () => DRY_RUN_REACHED);
    } catch {
      end();
      return real();
    }
    if (!isPromise(dry)) {
      end();
      return real();
    }
    return dry.then(
      () => {
        end();
        return real();
      },
      () => {
        end();
        return real();
      },
    );
  }

  /** Hooks in order; the first that answers with a result wins, argument rewrites carry on. */
  private runHooks(hooks: readonly BoundHook[], ctx: Omit<HookCall, 'args'>, args: unknown): MaybePromise<HookAnswer> {
    let current = args;
    let rewritten = false;
    const step = (i: number): MaybePromise<HookAnswer> => {
      for (; i < hooks.length; i++) {
        const r = hooks[i].hook({ ...ctx, args: current });
        if (isPromise(r)) {
          const k = i;
          return r.then((ans) => {
            if (ans !== undefined && 'ret' in ans) return this.answered(hooks[k], ctx, ans);
            if (ans !== undefined) {
              current = ans.args;
              rewritten = true;
            }
            return step(k + 1);
          });
        }
        if (r !== undefined && 'ret' in r) return this.answered(hooks[i], ctx, r);
        if (r !== undefined) {
          current = r.args;
          rewritten = true;
        }
      }
      return rewritten ? { args: current } : undefined;
    };
    return step(0);
  }

  private answered(h: BoundHook, ctx: Omit<HookCall, 'args'>, ans: { ret: unknown }): HookAnswer {
    if (this.filter.debug >= 1) {
      const rv = (ans.ret as { rv?: unknown } | number);
      const code = typeof rv === 'number' ? rv : rv?.rv;
      if (code !== CKR_OK) this.refusal(ctx.conn, ctx.name, (ans as { rule?: string }).rule ?? `${h.action} (${h.where})`, Number(code));
    }
    return ans;
  }

  /** Logs a refusal at debug >= 1: the rule, the call and the client, never argument values. */
  refusal(conn: ConnectionState, name: CallName, rule: string, rv: number): void {
    if (this.filter.debug < 1) return;
    const what = conn.filterDryRun ? 'would be refused (shadow mode, not enforced)' : 'refused';
    this.log('info', `filter: ${name} ${what} (rv 0x${rv.toString(16)}) by ${rule} for connection ${conn.id} (${describeIdentity(conn.identity)}, ${conn.peer})`);
  }

  private refuse(conn: ConnectionState, name: CallName, rule: string, rv: number): never {
    this.refusal(conn, name, rule, rv);
    throw new Pkcs11Error(rv, name);
  }

  private staticChecks(policy: AliasPolicy, name: CallName, procedure: CallName, conn: ConnectionState, args: unknown): MaybePromise<void> {
    if (policy.forbiddenFunctions.has(name)) this.refuse(conn, name, 'forbidden_functions', ck.CKR_FUNCTION_NOT_SUPPORTED);
    const f = CALL_FIELDS[procedure];
    const objectsChecked = policy.allowedLabels !== null || policy.allowedIds !== null;
    const done = (): void => {
      if (policy.forbiddenMechanisms.size > 0 || policy.paddingOracleOps.size > 0) {
        for (const field of f.args.mechanism) {
          const m = (field.get(args as never) as px_mechanism).mechanism;
          if (policy.forbiddenMechanisms.has(m)) this.refuse(conn, name, 'forbidden_mechanisms', ck.CKR_MECHANISM_INVALID);
          const kind = PADDING_KIND.get(name);
          if (kind !== undefined && policy.paddingOracleOps.has(kind) && PADDING_ORACLE_MECHANISMS.has(m)) {
            this.refuse(conn, name, 'remove_padding_oracles', ck.CKR_MECHANISM_INVALID);
          }
        }
      }
      if (objectsChecked && TEMPLATE_CALLS.has(name)) {
        for (const field of f.args.template) {
          if (!this.templateAllowed(policy, field.get(args as never) as px_attribute[])) {
            this.refuse(conn, name, 'allowed_labels/allowed_ids (new value)', ck.CKR_ATTRIBUTE_VALUE_INVALID);
          }
        }
      }
      if (policy.forbidAdminOperations && name === 'C_Login' && ADMIN_USERS.has((args as C_Login_args).userType)) {
        this.refuse(conn, name, 'forbid_admin_operations', ck.CKR_USER_TYPE_INVALID);
      }
    };
    if (!objectsChecked || f.args.object.length === 0) return done();
    // Objects the policy hides are answered as if they did not exist.
    const session = f.args.session.length > 0 ? (f.args.session[0].get(args as never) as number) : 0;
    let pending: Promise<void> | null = null;
    for (const field of f.args.object) {
      const handle = field.get(args as never) as number;
      const spec = OBJECT_ARG_FIELDS.get(field.name);
      if (handle === 0 && spec?.zeroAllowed) continue;
      const rv = spec?.rv ?? ck.CKR_OBJECT_HANDLE_INVALID;
      const v = this.visible(policy, conn, session, handle);
      const check = (ok: boolean): void => {
        if (!ok) this.refuse(conn, name, 'allowed_labels/allowed_ids', rv);
      };
      if (isPromise(v)) pending = (pending ?? Promise.resolve()).then(() => v).then(check);
      else check(v);
    }
    return pending ? pending.then(done) : done();
  }

  /**
   * True when the policy lets the client see the object: its CKA_LABEL
   * matches one allowed label pattern and the hex of its CKA_ID one allowed
   * id pattern (each test only when the policy has that list). An object
   * whose attributes cannot be read is hidden. A module error on the read
   * itself (bad handle) is the call's answer.
   */
  visible(policy: AliasPolicy, conn: ConnectionState, session: number, handle: number): MaybePromise<boolean> {
    return then(this.objects.cached(conn, session, handle, LABEL_AND_ID), (v) => {
      if (policy.allowedLabels !== null) {
        const label = v.get(CKA_LABEL);
        if (label === null || label === undefined) return false;
        const s = label.toString('utf8');
        if (!policy.allowedLabels.some((p) => p.regex.test(s))) return false;
      }
      if (policy.allowedIds !== null) {
        const id = v.get(CKA_ID);
        if (id === null || id === undefined) return false;
        const s = id.toString('hex');
        if (!policy.allowedIds.some((p) => p.regex.test(s))) return false;
      }
      return true;
    });
  }

  /** A template may set CKA_LABEL / CKA_ID only to values the policy lets the client see. */
  private templateAllowed(policy: AliasPolicy, template: readonly px_attribute[]): boolean {
    for (const a of template) {
      if (a.type === CKA_LABEL && policy.allowedLabels !== null) {
        const s = a.value.toString('utf8');
        if (!policy.allowedLabels.some((p) => p.regex.test(s))) return false;
      }
      if (a.type === CKA_ID && policy.allowedIds !== null) {
        const s = a.value.toString('hex');
        if (!policy.allowedIds.some((p) => p.regex.test(s))) return false;
      }
    }
    return true;
  }

  private invalidateAfter(name: CallName, conn: ConnectionState, args: unknown): void {
    if (name === 'C_SetAttributeValue' || name === 'C_DestroyObject') {
      this.objects.invalidate(conn, (args as { object: number }).object);
    } else {
      this.objects.invalidate(conn);
    }
  }

  // ---- calls whose answer the policy edits ----

  C_GetMechanismList(conn: ConnectionState, a: C_GetMechanismList_args): MaybePromise<C_GetMechanismList_ret> {
    const policy = this.policyOf(conn);
    if (!policy.active.has('C_GetMechanismList')) return this.next.C_GetMechanismList(conn, a);
    return this.filtered(policy, 'C_GetMechanismList', conn, a, (args) => {
      const req = args as C_GetMechanismList_args;
      if (policy.forbiddenMechanisms.size === 0) return this.next.C_GetMechanismList(conn, req);
      // The count the client sees is that of the filtered list, so always fetch the whole list.
      return then(this.next.C_GetMechanismList(conn, { slotID: req.slotID, count: 0 }), (sized) => {
        if (sized.rv !== CKR_OK) return sized;
        return then(this.next.C_GetMechanismList(conn, { slotID: req.slotID, count: sized.count }), (full) => {
          if (full.rv !== CKR_OK) return full;
          const list = full.mechanismList.filter((m) => !policy.forbiddenMechanisms.has(m));
          if (req.count === 0) return { rv: CKR_OK, mechanismList: [], count: list.length };
          if (req.count < list.length) return { rv: ck.CKR_BUFFER_TOO_SMALL, mechanismList: [], count: list.length };
          return { rv: CKR_OK, mechanismList: list, count: list.length };
        });
      });
    }) as MaybePromise<C_GetMechanismList_ret>;
  }

  C_GetMechanismInfo(conn: ConnectionState, a: C_GetMechanismInfo_args): MaybePromise<C_GetMechanismInfo_ret> {
    const policy = this.policyOf(conn);
    if (!policy.active.has('C_GetMechanismInfo')) return this.next.C_GetMechanismInfo(conn, a);
    return this.filtered(policy, 'C_GetMechanismInfo', conn, a, (args) => {
      const req = args as C_GetMechanismInfo_args;
      if (policy.forbiddenMechanisms.has(req.type)) this.refuse(conn, 'C_GetMechanismInfo', 'forbidden_mechanisms', ck.CKR_MECHANISM_INVALID);
      return this.next.C_GetMechanismInfo(conn, req);
    }) as MaybePromise<C_GetMechanismInfo_ret>;
  }

  C_OpenSession(conn: ConnectionState, a: C_OpenSession_args): MaybePromise<C_OpenSession_ret> {
    const policy = this.policyOf(conn);
    if (!policy.active.has('C_OpenSession')) return this.next.C_OpenSession(conn, a);
    return this.filtered(policy, 'C_OpenSession', conn, a, (args) => {
      const req = args as C_OpenSession_args;
      // enforce_ro_sessions: the session is opened read-only whatever the client asked (Caml Crush clears CKF_RW_SESSION).
      const flags = policy.enforceRoSessions ? req.flags & ~ck.CKF_RW_SESSION : req.flags;
      return this.next.C_OpenSession(conn, { slotID: req.slotID, flags });
    }) as MaybePromise<C_OpenSession_ret>;
  }

  C_FindObjects(conn: ConnectionState, a: C_FindObjects_args): MaybePromise<C_FindObjects_ret> {
    const policy = this.policyOf(conn);
    if (!policy.active.has('C_FindObjects')) return this.next.C_FindObjects(conn, a);
    return this.filtered(policy, 'C_FindObjects', conn, a, (args) => this.findFiltered(policy, conn, args as C_FindObjects_args)) as MaybePromise<C_FindObjects_ret>;
  }

  /** Asks the module until `maxObjectCount` visible objects are found or it has no more. */
  private async findFiltered(policy: AliasPolicy, conn: ConnectionState, a: C_FindObjects_args): Promise<C_FindObjects_ret> {
    const out: number[] = [];
    const ctx: HookCall = { name: 'C_FindObjects', procedure: 'C_FindObjects', conn, args: a, next: this.next, objects: this.objects, policy };
    while (out.length < a.maxObjectCount) {
      const want = a.maxObjectCount - out.length;
      const r = await this.next.C_FindObjects(conn, { session: a.session, maxObjectCount: want });
      if (r.rv !== CKR_OK) return out.length > 0 ? { rv: CKR_OK, objects: out, count: out.length } : r;
      let found: readonly number[] = r.objects;
      if (policy.allowedLabels !== null || policy.allowedIds !== null) {
        const kept: number[] = [];
        for (const h of found) {
          let ok: boolean;
          try {
            ok = await this.visible(policy, conn, a.session, h);
          } catch {
            ok = false;
          }
          if (ok) kept.push(h);
        }
        found = kept;
      }
      for (const f of policy.foundFilters) found = await f.filter(ctx, found);
      out.push(...found);
      if (r.objects.length < want) break;
    }
    return { rv: CKR_OK, objects: out, count: out.length };
  }
}

/** The error result of a call, for hooks that refuse by answering. */
export function errorResult(name: CallName, rv: number): unknown {
  const f = ERROR_RET.get(name);
  return f ? f(rv) : rv;
}
