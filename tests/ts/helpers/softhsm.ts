import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export const SOFTHSM_MODULE = ['/usr/lib/softhsm/libsofthsm2.so', '/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so'].find((p) =>
  fs.existsSync(p),
)!;
export const USER_PIN = '1234';
export const SO_PIN = '123456';

export interface SoftHsmStore {
  dir: string;
  conf: string;
  env: NodeJS.ProcessEnv;
  cleanup(): void;
}

/** A fresh SoftHSM2 store in a temp dir with the given tokens initialized (user PIN 1234, SO PIN 123456). */
export function createSoftHsm(labels: string[] = ['test']): SoftHsmStore {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'p11pd-hsm-'));
  const tokens = path.join(dir, 'tokens');
  fs.mkdirSync(tokens);
  const conf = path.join(dir, 'softhsm2.conf');
  fs.writeFileSync(conf, `directories.tokendir = ${tokens}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n`);
  const env = { ...process.env, SOFTHSM2_CONF: conf };
  for (const label of labels) {
    execFileSync('softhsm2-util', ['--init-token', '--free', '--label', label, '--pin', USER_PIN, '--so-pin', SO_PIN], {
      env,
      stdio: 'ignore',
    });
  }
  return { dir, conf, env, cleanup: () => fs.rmSync(dir, { recursive: true, force: true }) };
}
