import { isPromise } from '../generated/pkcs11_rpc';
import type { C_GetAttributeValue_ret, MaybePromise, Pkcs11Calls } from '../generated/pkcs11_rpc';
import { CK_UNAVAILABLE_INFORMATION_WIRE, CKR_OK, ck } from '../pkcs11/constants';
import { Pkcs11Error } from '../pkcs11/errors';
import type { ConnectionState } from '../server/dispatch/connection-state';
import { attributeULong } from '../pkcs11/arch';

/**
 * Attribute values the filter reads itself, by type: a Buffer in the
 * module's (native) layout, or null when the object has no such attribute,
 * will not reveal it (CKR_ATTRIBUTE_SENSITIVE) or its value does not fit.
 */
export type AttributeValues = ReadonlyMap<number, Buffer | null>;

/**
 * Capacity offered for each attribute the filter reads. A request value of
 * N bytes asks the layers below for the value with an N-byte buffer (the
 * wire convention of C_GetAttributeValue_args); the buffer's bytes are never
 * read, so all requests share one.
 */
const CAPACITY = Buffer.alloc(8192);

/**
 * Attributes whose value can be cached per object: they never change after
 * creation (CKA_CLASS, CKA_KEY_TYPE, CKA_LOCAL, CKA_ALWAYS_SENSITIVE,
 * CKA_NEVER_EXTRACTABLE, CKA_TOKEN, CKA_PRIVATE) or change only through
 * C_SetAttributeValue/C_CopyObject, which the filter sees and which
 * invalidate the cache. A change made through another worker process
 * reaches this one as an IPC message (objectsChangedElsewhere): until it
 * arrives, a cached value can be stale. Every rule that limits how
 * attributes may change (sticky, conflicting, label/id on creation) is
 * checked on the modifying call with values read from the token (`read`,
 * never `cached`), so in that window the stale view is of an object at least
 * as restricted as the token's, except for a label or id that another
 * profile's policy lets its clients write.
 */

/** Bumped by every object change the filter sees in this process or hears of from another; a cache of another generation is empty. */
let generation = 1;
let announce: (() => void) | null = null;

/** Called with each change of a module object seen here (C_SetAttributeValue, C_DestroyObject), to tell the other workers. */
export function announceObjectChanges(f: (() => void) | null): void {
  announce = f;
}

/** Another worker changed a module object: every cache of this process is dropped. */
export function objectsChangedElsewhere(): void {
  generation += 1;
}

/** One application's cache: virtual object handle → attribute type → value. */
class AppCache {
  generation = 0;
  readonly objects = new Map<number, Map<number, Buffer | null>>();
}

const CACHE = Symbol('filter object attributes');

/**
 * Reads object attributes through the layer below the filter, so the
 * handle, ownership and login rules apply to the filter's own reads too.
 */
export class ObjectAttributes {
  constructor(private readonly next: Pkcs11Calls<ConnectionState>) {}

  /**
   * Values of `types` read from the token now. Throws Pkcs11Error when the
   * module refuses the read as a whole (bad handle, session closed...).
   */
  read(conn: ConnectionState, session: number, object: number, types: readonly number[]): MaybePromise<AttributeValues> {
    const r = this.next.C_GetAttributeValue(conn, {
      session,
      object,
      template: types.map((type) => ({ type, value: CAPACITY, valueLen: CAPACITY.length })),
    });
    return isPromise(r) ? r.then(valuesOf) : valuesOf(r);
  }

  /** As `read`, answered from this application's cache where it can be. */
  cached(conn: ConnectionState, session: number, object: number, types: readonly number[]): MaybePromise<AttributeValues> {
    const cache = this.cacheOf(conn);
    let entry = cache.objects.get(object);
    if (entry !== undefined) {
      let missing: number[] | null = null;
      for (const t of types) if (!entry.has(t)) (missing ??= []).push(t);
      if (missing === null) return entry;
      const known = entry;
      const r = this.read(conn, session, object, missing);
      const merge = (v: AttributeValues): AttributeValues => {
        for (const [t, x] of v) known.set(t, x);
        return known;
      };
      return isPromise(r) ? r.then(merge) : merge(r);
    }
    const r = this.read(conn, session, object, types);
    const store = (v: AttributeValues): AttributeValues => {
      entry = new Map(v);
      cache.objects.set(object, entry);
      return entry;
    };
    return isPromise(r) ? r.then(store) : store(r);
  }

  /**
   * Forgets cached values: of one object of this application, or (object
   * undefined) of every object of every application in this process. Called
   * after C_SetAttributeValue, C_CopyObject, C_DestroyObject, session close
   * and logout.
   */
  invalidate(conn: ConnectionState, object?: number): void {
    if (object === undefined) {
      generation += 1;
      return;
    }
    this.cacheOf(conn).objects.delete(object);
    // Another application may hold the same module object under its own handle, here or in another worker.
    generation += 1;
    announce?.();
  }

  private cacheOf(conn: ConnectionState): AppCache {
    const c = conn.stateFor(CACHE, () => new AppCache());
    if (c.generation !== generation) {
      c.objects.clear();
      c.generation = generation;
    }
    return c;
  }
}

function valuesOf(r: C_GetAttributeValue_ret): AttributeValues {
  if (r.rv !== CKR_OK && r.rv !== ck.CKR_ATTRIBUTE_SENSITIVE && r.rv !== ck.CKR_ATTRIBUTE_TYPE_INVALID && r.rv !== ck.CKR_BUFFER_TOO_SMALL) {
    throw new Pkcs11Error(r.rv, 'C_GetAttributeValue');
  }
  const out = new Map<number, Buffer | null>();
  for (const a of r.template) {
    out.set(a.type, a.valueLen === CK_UNAVAILABLE_INFORMATION_WIRE || a.value.length !== a.valueLen ? null : Buffer.from(a.value));
  }
  return out;
}

/** CK_BBOOL value of an attribute read by the filter; `dflt` when absent. */
export function boolOf(v: AttributeValues, type: number, dflt = false): boolean {
  const b = v.get(type);
  return b === undefined || b === null || b.length === 0 ? dflt : b[0] !== 0;
}

/** CK_ULONG value (native layout) of an attribute read by the filter; undefined when absent. */
export function ulongOf(v: AttributeValues, type: number): number | undefined {
  return attributeULong(v.get(type));
}
