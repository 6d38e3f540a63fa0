import fs from 'fs';
import os from 'os';
import path from 'path';
import { main } from './main';

const ROOT = path.resolve(__dirname, '../..');
const COMMITTED = path.join(ROOT, 'src/generated/pkcs11_rpc.ts');

describe('src/generated/pkcs11_rpc.ts', () => {
  let dir: string;
  let stderr: jest.SpyInstance;

  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'xdrgen-'));
    stderr = jest.spyOn(process.stderr, 'write').mockImplementation(() => true);
  });

  afterEach(() => {
    stderr.mockRestore();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('equals a fresh generation from rpc/pkcs11.x (run `npm run generate` if this fails)', () => {
    const out = path.join(dir, 'pkcs11_rpc.ts');
    expect(main(['rpc/pkcs11.x', out], ROOT)).toBe(0);
    expect(fs.readFileSync(out, 'utf8')).toBe(fs.readFileSync(COMMITTED, 'utf8'));
  });

  it('--check accepts the committed file and rejects a stale one', () => {
    expect(main(['--check', 'rpc/pkcs11.x', 'src/generated/pkcs11_rpc.ts'], ROOT)).toBe(0);
    const stale = path.join(dir, 'stale.ts');
    fs.writeFileSync(stale, fs.readFileSync(COMMITTED, 'utf8').replace('PKCS11_PROG = 4', 'PKCS11_PROG = 5'));
    expect(main(['--check', path.join(ROOT, 'rpc/pkcs11.x'), stale], ROOT)).toBe(1);
    expect(fs.readFileSync(stale, 'utf8')).toContain('PKCS11_PROG = 5');
  });

  it('reports errors with file:line:column and a non-zero exit', () => {
    const bad = path.join(dir, 'bad.x');
    fs.writeFileSync(bad, 'struct s {\n  foo x;\n};\n');
    expect(main([bad, path.join(dir, 'out.ts')], dir)).toBe(1);
    expect(stderr).toHaveBeenCalledWith("xdrgen: bad.x:2:3: unknown type 'foo'\n");
    expect(fs.existsSync(path.join(dir, 'out.ts'))).toBe(false);
    expect(main(['only-one-arg'], dir)).toBe(2);
  });
});
