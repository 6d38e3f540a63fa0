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

/**
 * One module instance of its own, in `dir`: a copy of the wrapper over a copy
 * of SoftHSM2 (distinct files, so the process loads a separate instance of
 * each) serving the token store of `softhsm2Conf`.
 */
export interface FaultyModule {
  /** The library to configure as a module. */
  path: string;
  /** From now on `fn` answers `rv` without reaching SoftHSM2. */
  fail(fn: string, rv: number): void;
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
  const faults = new Map<string, number>();
  const write = () => fs.writeFileSync(control, [...faults].map(([f, rv]) => `${f} 0x${rv.toString(16)}\n`).join(''));
  return {
    path: lib,
    fail(fn, rv) {
      faults.set(fn, rv);
      write();
    },
    heal() {
      faults.clear();
      write();
    },
  };
}
