import fs from 'fs';
import os from 'os';
import path from 'path';
import { main } from './main';
import { parseHeader } from './generate';
import { ck } from '../../src/generated/pkcs11-constants';

const ROOT = path.resolve(__dirname, '../..');
const HEADER = '/usr/include/p11-kit-1/p11-kit/pkcs11.h';
const EXTRAS = 'tools/constgen/pkcs11-extra.h';
const COMMITTED = path.join(ROOT, 'src/generated/pkcs11-constants.ts');

describe('src/generated/pkcs11-constants.ts', () => {
  let dir: string;
  let stderr: jest.SpyInstance;

  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'constgen-'));
    stderr = jest.spyOn(process.stderr, 'write').mockImplementation(() => true);
  });

  afterEach(() => {
    stderr.mockRestore();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('equals a fresh generation from the installed pkcs11.h (run `npm run generate:constants` if this fails)', () => {
    const out = path.join(dir, 'c.ts');
    expect(main([HEADER, EXTRAS, out], ROOT)).toBe(0);
    expect(fs.readFileSync(out, 'utf8')).toBe(fs.readFileSync(COMMITTED, 'utf8'));
    expect(main(['--check', HEADER, EXTRAS, 'src/generated/pkcs11-constants.ts'], ROOT)).toBe(0);
  });

  it('--check rejects a stale file', () => {
    const stale = path.join(dir, 'stale.ts');
    fs.writeFileSync(stale, fs.readFileSync(COMMITTED, 'utf8').replace('CKR_OK: 0x0,', 'CKR_OK: 0x1,'));
    expect(main(['--check', HEADER, EXTRAS, stale], ROOT)).toBe(1);
  });

  it('evaluates the expression forms of the header', () => {
    const c = parseHeader(
      [
        '#define CKA_A (0x10UL)',
        '#define CKF_B (1UL << 30)',
        '#define CKA_C (CKF_B | 0x211UL)',
        '#define CKM_V ((unsigned long) (1UL << 31))',
        '#define CKM_W (CKM_V + 2)',
        '#define CKG_X 0x00000001UL',
      ].join('\n'),
      'h.h',
    );
    expect(c.map((x) => [x.name, x.value])).toEqual([
      ['CKA_A', 0x10n],
      ['CKF_B', 0x40000000n],
      ['CKA_C', 0x40000211n],
      ['CKM_V', 0x80000000n],
      ['CKM_W', 0x80000002n],
      ['CKG_X', 1n],
    ]);
  });

  it('refuses a value it cannot evaluate, with file:line', () => {
    expect(() => parseHeader('\n#define CKM_X (CKM_UNKNOWN + 1)', 'h.h')).toThrow("h.h:2: cannot evaluate CKM_X: unknown name 'CKM_UNKNOWN'");
    expect(() => parseHeader('#define CKM_X 1\n#define CKM_X 2', 'h.h')).toThrow('h.h:2: CKM_X redefined with another value');
  });

  it('corrects the numbers p11-kit gets wrong (OASIS pkcs11t.h values)', () => {
    expect(ck.CKR_PIN_TOO_WEAK).toBe(0x1b8);
    expect(ck.CKR_PUBLIC_KEY_INVALID).toBe(0x1b9);
    expect(ck.CKR_UNWRAPPING_KEY_HANDLE_INVALID).toBe(0xf0);
  });

  it('is typed: a misspelt name does not compile (checked by npm run typecheck)', () => {
    // @ts-expect-error CKR_TYPO is not a PKCS#11 constant
    expect(ck.CKR_TYPO).toBeUndefined();
  });
});
