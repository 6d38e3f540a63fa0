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
import { CKR_OK, ck, constantName, rvName } from '../pkcs11/constants';
import { Pkcs11Error } from '../pkcs11/errors';
import type { ConnectionState } from '../server/dispatch/connection-state';
import { installGeneric, invoke, then } from '../server/layers/generic';
import { OBJECT_ARG_FIELDS, V3_CALL_OF_TYPED } from '../server/layers/object-fields';
import type { Logger } from '../server/log';
import { audit, auditEnabled } from '../server/audit';
import { connectionFields } from '../server/audit-fields';
import { countRefusal, processMetrics } from '../server/metrics/registry';
import type { HookAnswer, HookCall } from './hooks';
import { describeIdentity, policyFor } from './identity';
import { ObjectAttributes } from './object-attributes';
import { ADMIN_CALLS, INVALIDATING_CALLS, TEMPLATE_CALLS } from './policy';
import { idAllowed, labelAllowed } from './visibility';
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

/** Module answers one C_FindObjects may read to fill its page with visible objects. */
const MAX_FIND_ROUNDS = 100_000;
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
    this.dumpPolicy();
    installGeneric(this, FilterLayer.prototype, (name, conn, args) => {
      const policy = this.policyOf(conn);
      if (!policy.active.has(name)) return invoke(this.next, name, conn, args);
      return this.filtered(policy, name, conn, args, (a) => invoke(this.next, name, conn, a));
    });
  }

  /** The filter.conf in force (the authorisation layers read its tables). */
  get compiled(): CompiledFilter {
    return this.filter;
  }

  /** Replaces the policy (SIGHUP): each application rebinds at its next call. */
  reload(filter: CompiledFilter): void {
    this.filter = filter;
    this.dumpPolicy();
  }

  /**
   * debug = 3: the compiled policy of every alias, once per load. Rules
   * only: no hook state, never wrapping_format_key.
   */
  private dumpPolicy(): void {
    if (this.filter.debug < 3) return;
    const log = (msg: string): void => this.log('info', `${this.filter.logTag}: ${msg}`);
    log(`debug level ${this.filter.debug}, file ${this.filter.file || '(none)'}, log_subchannel: one logger, this tag on each line`);
    for (const p of this.filter.byAlias.values()) {
      const list = (xs: Iterable<string>): string => [...xs].join(', ') || '-';
      log(`alias '${p.alias}': forbidden_mechanisms: ${list([...p.forbiddenMechanisms].map((m) => constantName('CKM_', m)))}`);
      log(`alias '${p.alias}': forbidden_functions: ${list(p.forbiddenFunctions)}`);
      log(`alias '${p.alias}': allowed_labels: ${p.allowedLabels === null ? 'not filtered' : list(p.allowedLabels.map((x) => JSON.stringify(x.source)))}`);
      log(`alias '${p.alias}': allowed_ids: ${p.allowedIds === null ? 'not filtered' : list(p.allowedIds.map((x) => JSON.stringify(x.source)))}`);
      log(`alias '${p.alias}': enforce_ro_sessions: ${p.enforceRoSessions ? 'yes' : 'no'}, forbid_admin_operations: ${p.forbidAdminOperations ? 'yes' : 'no'}`);
      log(`alias '${p.alias}': remove_padding_oracles: ${list(p.paddingOracleOps)}`);
      const hooks = (m: AliasPolicy['pre']): string => list([...m].flatMap(([call, hs]) => hs.map((h) => `${call}:${h.action}`)));
      log(`alias '${p.alias}': filter_actions_pre: ${hooks(p.pre)}; filter_actions_post: ${hooks(p.post)}`);
    }
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
    // One call object for every hook; a new one only after a hook rewrote the arguments.
    let call: HookCall = { name: ctx.name, procedure: ctx.procedure, conn: ctx.conn, args, next: ctx.next, objects: ctx.objects, policy: ctx.policy };
    const step = (i: number): MaybePromise<HookAnswer> => {
      for (; i < hooks.length; i++) {
        if (call.args !== current) call = { ...call, args: current };
        let r: MaybePromise<HookAnswer>;
        try {
          r = hooks[i].hook(call);
        } catch (e) {
          this.hookRefused(hooks[i], ctx, e);
          throw e;
        }
        if (isPromise(r)) {
          const k = i;
          return r.then((ans) => {
            if (ans !== undefined && 'ret' in ans) return this.answered(hooks[k], ctx, ans);
            if (ans !== undefined) {
              current = ans.args;
              rewritten = true;
            }
            return step(k + 1);
          }, (e: unknown) => {
            this.hookRefused(hooks[k], ctx, e);
            throw e;
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
    // The audit trail and the refusal metric count refusals whatever `debug` says.
    if (this.filter.debug >= 1 || auditEnabled() || processMetrics() !== null) {
      const rv = (ans.ret as { rv?: unknown } | number);
      const code = typeof rv === 'number' ? rv : rv?.rv;
      if (code !== CKR_OK) this.refusal(ctx.conn, ctx.name, (ans as { rule?: string }).rule ?? `${h.action} (${h.where})`, Number(code));
    }
    return ans;
  }

  /** An action that refused by throwing its CK_RV: recorded in the audit trail and metrics (the log stays as it was). */
  private hookRefused(h: BoundHook, ctx: Omit<HookCall, 'args'>, e: unknown): void {
    if (!(e instanceof Pkcs11Error) || (!auditEnabled() && processMetrics() === null)) return;
    this.recordRefusal(ctx.conn, ctx.name, `${h.action} (${h.where})`, e.rv);
  }

  private recordRefusal(conn: ConnectionState, name: CallName, rule: string, rv: number): void {
    audit({ event: 'call_refused', ...connectionFields(conn), call: name, rv: rvName(rv), rule, enforced: !conn.filterDryRun });
    if (!conn.filterDryRun) countRefusal(name, rule, rv);
  }

  /**
   * Logs a refusal at debug >= 1 (Caml Crush's "positive match"): the call,
   * the CK_RV, the rule as `key (file:line:col)` and the client (connection
   * and peer identity). Never argument values: no PIN, label or key bytes.
   */
  refusal(conn: ConnectionState, name: CallName, rule: string, rv: number): void {
    this.recordRefusal(conn, name, rule, rv);
    if (this.filter.debug < 1) return;
    const what = conn.filterDryRun ? 'would be refused (shadow mode, not enforced)' : 'refused';
    this.log('info', `${this.filter.logTag}: ${name} ${what} with ${rvName(rv)} by ${rule} for alias '${conn.app.moduleAlias ?? ''}', connection ${conn.id} (${conn.identity.kind === 'unknown' ? '' : `${describeIdentity(conn.identity)}, `}${conn.peer})`);
  }

  /** debug >= 2 (Caml Crush's "negative match"): a rule looked at the call and let it pass. */
  private passed(conn: ConnectionState, name: CallName, what: string): void {
    this.log('info', `${this.filter.logTag}: ${name} passed ${what} for alias '${conn.app.moduleAlias ?? ''}', connection ${conn.id}`);
  }

  private refuse(conn: ConnectionState, name: CallName, rule: string, rv: number): never {
    this.refusal(conn, name, rule, rv);
    throw new Pkcs11Error(rv, name);
  }

  private staticChecks(policy: AliasPolicy, name: CallName, procedure: CallName, conn: ConnectionState, args: unknown): MaybePromise<void> {
    const at = policy.ruleAt;
    const verbose = this.filter.debug >= 2;
    if (policy.forbiddenFunctions.has(name)) this.refuse(conn, name, at.functions.get(name)!, ck.CKR_FUNCTION_NOT_SUPPORTED);
    const f = CALL_FIELDS[procedure];
    const objectsChecked = policy.allowedLabels !== null || policy.allowedIds !== null;
    const done = (): void => {
      if (policy.forbiddenMechanisms.size > 0 || policy.paddingOracleOps.size > 0) {
        for (const field of f.args.mechanism) {
          const m = (field.get(args as never) as px_mechanism).mechanism;
          if (policy.forbiddenMechanisms.has(m)) this.refuse(conn, name, at.mechanisms.get(m)!, ck.CKR_MECHANISM_INVALID);
          // Caml Crush, with remove_padding_oracles on unwrap, calls the module for an allowed mechanism without
          // checking the template's label/id or running post hooks: a bypass. Here every check runs.
          const kind = PADDING_KIND.get(name);
          if (kind !== undefined && policy.paddingOracleOps.has(kind) && PADDING_ORACLE_MECHANISMS.has(m)) {
            this.refuse(conn, name, at.padding.get(kind)!, ck.CKR_MECHANISM_INVALID);
          }
          if (verbose) this.passed(conn, name, `forbidden_mechanisms / remove_padding_oracles with ${constantName('CKM_', m)}`);
        }
        // Caml Crush refuses a forbidden mechanism's info before the post hooks run.
        if (name === 'C_GetMechanismInfo') {
          const type = (args as C_GetMechanismInfo_args).type;
          if (policy.forbiddenMechanisms.has(type)) this.refuse(conn, name, at.mechanisms.get(type)!, ck.CKR_MECHANISM_INVALID);
        }
      }
      if (objectsChecked && TEMPLATE_CALLS.has(name)) {
        // A template without CKA_LABEL / CKA_ID passes: Caml Crush checks only the values given.
        for (const field of f.args.template) {
          const bad = this.templateRefusal(policy, field.get(args as never) as px_attribute[]);
          if (bad !== null) this.refuse(conn, name, bad, ck.CKR_ATTRIBUTE_VALUE_INVALID);
        }
        if (verbose) this.passed(conn, name, 'allowed_labels / allowed_ids on the new values');
      }
      if (policy.forbidAdminOperations && ADMIN_CALLS.has(name)) {
        if (name === 'C_InitToken' || ADMIN_USERS.has((args as C_Login_args).userType)) {
          this.refuse(conn, name, at.admin, name === 'C_InitToken' ? ck.CKR_FUNCTION_NOT_SUPPORTED : ck.CKR_USER_TYPE_INVALID);
        }
        if (verbose) this.passed(conn, name, at.admin);
      }
    };
    if (!objectsChecked || f.args.object.length === 0) return done();
    // Objects the policy hides are answered as if they did not exist: the CK_RV
    // the handle layer gives an unknown handle in that field (CKR_KEY_HANDLE_INVALID
    // for C_SignInit's key...). Caml Crush answers CKR_OBJECT_HANDLE_INVALID
    // there (CKR_(UN)WRAPPING_KEY_HANDLE_INVALID for the wrapping keys); ours
    // cannot be told apart from a handle that does not exist.
    const session = f.args.session.length > 0 ? (f.args.session[0].get(args as never) as number) : 0;
    let pending: Promise<void> | null = null;
    for (const field of f.args.object) {
      const handle = field.get(args as never) as number;
      const spec = OBJECT_ARG_FIELDS.get(field.name);
      if (handle === 0 && spec?.zeroAllowed) continue;
      const rv = spec?.rv ?? ck.CKR_OBJECT_HANDLE_INVALID;
      const v = this.visible(policy, conn, session, handle);
      const check = (ok: boolean): void => {
        if (!ok) this.refuse(conn, name, this.objectRules(policy), rv);
        if (verbose) this.passed(conn, name, `${this.objectRules(policy)} for ${field.name}`);
      };
      if (isPromise(v)) pending = (pending ?? Promise.resolve()).then(() => v).then(check);
      else check(v);
    }
    return pending ? pending.then(done) : done();
  }

  private objectRules(policy: AliasPolicy): string {
    return [policy.ruleAt.labels, policy.ruleAt.ids].filter((x) => x !== '').join(' / ');
  }

  /**
   * True when the policy lets the client see the object: its CKA_LABEL
   * matches one allowed label pattern and the hex of its CKA_ID one allowed
   * id pattern (each test only when the policy has that list). An object
   * whose attributes cannot be read is hidden. A module error on the read
   * itself (bad handle) is the call's answer.
   *
   * Matching follows Caml Crush's Str: the label's bytes one per character
   * (latin1), the id as lowercase hex. Two deliberate differences: the end
   * of the pattern is the end of the value (Str's `$` also matches before a
   * newline, so "ok" would accept "ok\nanything"), and `.` does not match a
   * carriage return (JS line terminator; Str's `.` does).
   */
  visible(policy: AliasPolicy, conn: ConnectionState, session: number, handle: number): MaybePromise<boolean> {
    return then(this.objects.cached(conn, session, handle, LABEL_AND_ID), (v) => labelAllowed(policy, v.get(CKA_LABEL)) && idAllowed(policy, v.get(CKA_ID)));
  }

  /** A template may set CKA_LABEL / CKA_ID only to values the policy lets the client see: the rule refusing it, or null. */
  private templateRefusal(policy: AliasPolicy, template: readonly px_attribute[]): string | null {
    for (const a of template) {
      if (a.type === CKA_LABEL && !labelAllowed(policy, a.value)) return policy.ruleAt.labels;
      if (a.type === CKA_ID && !idAllowed(policy, a.value)) return policy.ruleAt.ids;
    }
    return null;
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
      // A post hook may have rewritten the type after the static check.
      if (policy.forbiddenMechanisms.has(req.type)) this.refuse(conn, 'C_GetMechanismInfo', policy.ruleAt.mechanisms.get(req.type)!, ck.CKR_MECHANISM_INVALID);
      return this.next.C_GetMechanismInfo(conn, req);
    }) as MaybePromise<C_GetMechanismInfo_ret>;
  }

  C_OpenSession(conn: ConnectionState, a: C_OpenSession_args): MaybePromise<C_OpenSession_ret> {
    const policy = this.policyOf(conn);
    if (!policy.active.has('C_OpenSession')) return this.next.C_OpenSession(conn, a);
    return this.filtered(policy, 'C_OpenSession', conn, a, (args) => {
      const req = args as C_OpenSession_args;
      // enforce_ro_sessions: the session is opened read-only whatever the client asked (Caml Crush clears
      // CKF_RW_SESSION rather than refusing); writes in it then fail with the module's CKR_SESSION_READ_ONLY.
      const flags = policy.enforceRoSessions ? req.flags & ~ck.CKF_RW_SESSION : req.flags;
      if (flags !== req.flags && this.filter.debug >= 1) {
        this.log('info', `${this.filter.logTag}: C_OpenSession opened read-only by ${policy.ruleAt.roSessions} for alias '${policy.alias}', connection ${conn.id} (${conn.peer})`);
      }
      return this.next.C_OpenSession(conn, { slotID: req.slotID, flags });
    }) as MaybePromise<C_OpenSession_ret>;
  }

  C_FindObjects(conn: ConnectionState, a: C_FindObjects_args): MaybePromise<C_FindObjects_ret> {
    const policy = this.policyOf(conn);
    if (!policy.active.has('C_FindObjects')) return this.next.C_FindObjects(conn, a);
    return this.filtered(policy, 'C_FindObjects', conn, a, (args) => this.findFiltered(policy, conn, args as C_FindObjects_args)) as MaybePromise<C_FindObjects_ret>;
  }

  /**
   * Asks the module until `maxObjectCount` visible objects are found or it
   * has no more. The client sees what Caml Crush's filter gives (it reads
   * the whole search at the first call and serves it from a copy): the
   * visible objects in module order, `maxObjectCount` at a time, then 0.
   */
  private findFiltered(policy: AliasPolicy, conn: ConnectionState, a: C_FindObjects_args): MaybePromise<C_FindObjects_ret> {
    // Nothing to filter in an empty answer; the module says whether a search is active.
    if (a.maxObjectCount === 0) return this.next.C_FindObjects(conn, a);
    const st: FindState = { out: [], hidden: 0, rounds: 0 };
    const ctx: HookCall = { name: 'C_FindObjects', procedure: 'C_FindObjects', conn, args: a, next: this.next, objects: this.objects, policy };
    const finish = (): C_FindObjects_ret => {
      if (st.hidden > 0 && this.filter.debug >= 1) {
        this.log('info', `${this.filter.logTag}: C_FindObjects hid ${st.hidden} object(s) by ${this.objectRules(policy)} for alias '${policy.alias}', connection ${conn.id} (${conn.peer})`);
      }
      return { rv: CKR_OK, objects: st.out, count: st.out.length };
    };
    // Pages until enough visible objects or the module has no more; without a promise while the cache answers.
    const loop = (): MaybePromise<C_FindObjects_ret> => {
      // A module that keeps answering full pages of hidden objects ends the answer early (Caml Crush stops at 100000 too).
      while (st.out.length < a.maxObjectCount && st.rounds++ < MAX_FIND_ROUNDS) {
        const want = a.maxObjectCount - st.out.length;
        const step = then(this.next.C_FindObjects(conn, { session: a.session, maxObjectCount: want }), (r) =>
          this.siftPage(policy, conn, ctx, st, r, want),
        );
        const next = (v: FindStep): MaybePromise<C_FindObjects_ret> => (v === 'more' ? loop() : v === 'done' ? finish() : v);
        if (isPromise(step)) return step.then(next);
        if (step !== 'more') return next(step);
      }
      return finish();
    };
    return loop();
  }

  /** Keeps the visible objects of one module answer; says whether to ask for more. */
  private siftPage(policy: AliasPolicy, conn: ConnectionState, ctx: HookCall, st: FindState, r: C_FindObjects_ret, want: number): MaybePromise<FindStep> {
    if (r.rv !== CKR_OK) return st.out.length > 0 ? 'done' : r;
    const more = (found: readonly number[]): FindStep => {
      for (const h of found) st.out.push(h);
      return r.objects.length < want ? 'done' : 'more';
    };
    let found: MaybePromise<readonly number[]> = r.objects;
    if (policy.allowedLabels !== null || policy.allowedIds !== null) {
      found = keepWhere(r.objects, (h) => {
        let v: MaybePromise<boolean>;
        try {
          v = this.visible(policy, conn, (ctx.args as C_FindObjects_args).session, h);
        } catch {
          v = false;
        }
        const count = (ok: boolean): boolean => {
          if (!ok) st.hidden++;
          return ok;
        };
        return isPromise(v) ? v.then(count, () => count(false)) : count(v);
      });
    }
    for (const f of policy.foundFilters) found = then(found, (list) => f.filter(ctx, list));
    return then(found, more);
  }
}

/** What C_FindObjects filtering has gathered so far. */
interface FindState {
  readonly out: number[];
  hidden: number;
  rounds: number;
}
/** After one page: ask again, answer what was gathered, or answer the module's error. */
type FindStep = 'more' | 'done' | C_FindObjects_ret;

/** The elements of `list` for which `keep` holds, in order; no promise unless `keep` makes one. */
function keepWhere(list: readonly number[], keep: (h: number) => MaybePromise<boolean>): MaybePromise<number[]> {
  const out: number[] = [];
  const from = (i: number): MaybePromise<number[]> => {
    for (; i < list.length; i++) {
      const k = keep(list[i]);
      if (isPromise(k)) {
        const at = i;
        return k.then((ok) => {
          if (ok) out.push(list[at]);
          return from(at + 1);
        });
      }
      if (k) out.push(list[i]);
    }
    return out;
  };
  return from(0);
}

/** The error result of a call, for hooks that refuse by answering. */
export function errorResult(name: CallName, rv: number): unknown {
  const f = ERROR_RET.get(name);
  return f ? f(rv) : rv;
}
