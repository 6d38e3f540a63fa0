import { ProxyError } from '../errors';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

/** Where Debian's softhsm2 package puts the module (multiarch path first on newer releases). */
const SOFTHSM_CANDIDATES = ['/usr/lib/softhsm/libsofthsm2.so', '/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so'];

export const EMBEDDED_TOKEN_LABEL = 'pkcs11proxyd';
/** Demo credentials of the embedded token, printed at startup; never use this token for real keys. */
export const EMBEDDED_USER_PIN = '1234';
export const EMBEDDED_SO_PIN = '12345678';

export class EmbeddedDefaultError extends ProxyError {
  readonly code = 'EMBEDDED_DEFAULT';
}

export interface EmbeddedDefault {
  stateDir: string;
  serverConf: string;
  filterConf: string;
  socketPath: string;
  softhsmConf: string;
  softhsmModule: string;
  createdToken: boolean;
}

export function findSoftHsm(): string | null {
  return SOFTHSM_CANDIDATES.find((p) => fs.existsSync(p)) ?? null;
}

function writeIfMissing(file: string, text: string): void {
  if (!fs.existsSync(file)) fs.writeFileSync(file, text, { mode: 0o600 });
}

/**
 * Prepares the no-configuration setup in `stateDir` (the checkout's var/ by
 * default): a SoftHSM2 store with one token, created on first run only, and
 * Caml Crush style configuration files that later runs reuse (edit them to
 * change the defaults). Sets SOFTHSM2_CONF for this process and its workers.
 */
export function prepareEmbeddedDefault(stateDir: string): EmbeddedDefault {
  const softhsmModule = findSoftHsm();
  if (!softhsmModule) throw new EmbeddedDefaultError(`SoftHSM2 not found (looked in ${SOFTHSM_CANDIDATES.join(', ')}); install the softhsm2 package`);
  fs.mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  const tokenDir = path.join(stateDir, 'tokens');
  fs.mkdirSync(tokenDir, { recursive: true, mode: 0o700 });
  const softhsmConf = path.join(stateDir, 'softhsm2.conf');
  writeIfMissing(softhsmConf, `directories.tokendir = ${tokenDir}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n`);
  process.env.SOFTHSM2_CONF = softhsmConf;

  let createdToken = false;
  if (fs.readdirSync(tokenDir).length === 0) {
    try {
      execFileSync(
        'softhsm2-util',
        ['--init-token', '--free', '--label', EMBEDDED_TOKEN_LABEL, '--pin', EMBEDDED_USER_PIN, '--so-pin', EMBEDDED_SO_PIN],
        { env: process.env, stdio: ['ignore', 'ignore', 'pipe'] },
      );
    } catch (e) {
      throw new EmbeddedDefaultError(`softhsm2-util --init-token failed: ${(e as { stderr?: Buffer }).stderr?.toString() ?? String(e)}`);
    }
    createdToken = true;
  }

  const socketPath = path.join(stateDir, 'pkcs11proxyd.sock');
  const filterConf = path.join(stateDir, 'filter.conf');
  writeIfMissing(
    filterConf,
    `(* Written by pkcs11proxyd for the embedded default; edit freely. *)\nmodules = [("softhsm", "${softhsmModule}")]\n`,
  );
  const serverConf = path.join(stateDir, 'pkcs11proxyd.conf');
  writeIfMissing(
    serverConf,
    `(* Written by pkcs11proxyd for the embedded default; edit freely. *)
netplex {
  service {
    name = "pkcs11proxyd";
    protocol {
      name = "rpc_pkcs11";
      address {
        type = "local";
        path = "${socketPath}";
      };
    };
    processor {
      type = "rpc_pkcs11";
      filter_config = "${filterConf}";
    };
  };
};
`,
  );
  return { stateDir, serverConf, filterConf, socketPath, softhsmConf, softhsmModule, createdToken };
}
