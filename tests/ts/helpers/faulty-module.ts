import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { ROOT } from './daemon';
import { SOFTHSM_MODULE } from './softhsm';

const DIR = path.join(ROOT, 'tests', 'fixtures', 'faulty-module');

/** Builds the fault-injection wrapper (tests/fixtures/faulty-module) if its source changed. */
export function buildFaultyModule(): string {
  execFileSync('make', ['-s', '-C', DIR], { stdio: 'inherit' });
  return path.join(DIR, 'build', 'libfaulty-module.so');
}

/** Options of an injected fault. */
export interface FaultOptions {
  /** The first `after` calls of the function still reach the module; the fault applies from the next one on. */
  after?: number;
}

/**
 * One module instance of its own, in `dir`: a copy of the wrapper over a copy
 * of SoftHSM2 (distinct files, so the process loads a separate instance of
 * each) serving the token store of `softhsm2Conf`. `fn` is a PKCS#11 function
 * name ("C_Sign") or "*" for every function. One fault per function: a new
 * one replaces the old; a function's own fault takes precedence over "*".
 */
export interface FaultyModule {
  /** The library to configure as a module. */
  path: string;
  /** The control file the wrapper reads before every call. */
  control: string;
  /** From now on `fn` answers `rv` without reaching SoftHSM2. */
  fail(fn: string, rv: number, options?: FaultOptions): void;
  /** From now on a call of `fn` kills the calling process with SIGSEGV. */
  crash(fn: string, options?: FaultOptions): void;
  /** From now on a call of `fn` calls abort() in the calling process. */
  abort(fn: string, options?: FaultOptions): void;
  /** From now on a call of `fn` blocks until `release(fn)` or `heal()`, then reaches SoftHSM2. */
  hang(fn: string, options?: FaultOptions): void;
  /**
   * The token looks absent: C_GetSlotList(present) lists no slot, C_GetSlotInfo lacks
   * CKF_TOKEN_PRESENT, slot calls answer CKR_TOKEN_NOT_PRESENT, session calls CKR_DEVICE_REMOVED.
   */
  removeToken(): void;
  /** Undoes removeToken() (SoftHSM2's sessions are still there: only the answers changed). */
  insertToken(): void;
  /** Stops injecting the fault of `fn`. */
  release(fn: string): void;
  /** Stops injecting faults. */
  heal(): void;
}

export function faultyModule(dir: string, softhsm2Conf: string): FaultyModule {
  fs.mkdirSync(dir, { recursive: true });
  const lib = path.join(dir, 'libfaulty-module.so');
  const target = path.join(dir, 'libsofthsm2.so');
  const control = path.join(dir, 'faults');
  fs.copyFileSync(buildFaultyModule(), lib);
  fs.copyFileSync(SOFTHSM_MODULE, target);
  fs.writeFileSync(`${lib}.conf`, `target ${target}\ncontrol ${control}\nsofthsm2_conf ${softhsm2Conf}\n`);
  // Function -> action text; "*" lines go last so that a function's own line is the first match.
  const faults = new Map<string, string>();
  let removed = false;
  const write = () => {
    const lines = [...faults].sort(([a], [b]) => Number(a === '*') - Number(b === '*')).map(([f, a]) => `${f} ${a}\n`);
    if (removed) lines.push('* removed\n');
    // Written to a temporary name and renamed: a reader sees the old file or the new one, never a partial one.
    fs.writeFileSync(`${control}.tmp`, lines.join(''));
    fs.renameSync(`${control}.tmp`, control);
  };
  const set = (fn: string, action: string, options?: FaultOptions) => {
    if (!/^(C_\w+|\*)$/.test(fn)) throw new Error(`faultyModule: not a function name: ${fn}`);
    faults.set(fn, options?.after === undefined ? action : `${action} after ${options.after}`);
    write();
  };
  return {
    path: lib,
    control,
    fail: (fn, rv, options) => set(fn, `0x${rv.toString(16)}`, options),
    crash: (fn, options) => set(fn, 'crash', options),
    abort: (fn, options) => set(fn, 'abort', options),
    hang: (fn, options) => set(fn, 'hang', options),
    removeToken() {
      removed = true;
      write();
    },
    insertToken() {
      removed = false;
      write();
    },
    release(fn) {
      faults.delete(fn);
      write();
    },
    heal() {
      faults.clear();
      removed = false;
      write();
    },
  };
}
