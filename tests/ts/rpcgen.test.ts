import { spawnSync } from 'child_process';
import fs from 'fs';
import os from 'os';
import path from 'path';

const X_FILE = path.resolve(__dirname, '../../rpc/pkcs11.x');

/* rpc/pkcs11.x is also the input of the C client's rpcgen stubs; it must stay valid for rpcgen. */
describe('rpcgen accepts rpc/pkcs11.x', () => {
  let dir: string;

  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rpcgen-'));
    fs.copyFileSync(X_FILE, path.join(dir, 'pkcs11.x'));
  });

  afterAll(() => {
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('rpcgen -N -M exits 0 and writes the header', () => {
    const res = spawnSync('rpcgen', ['-N', '-M', 'pkcs11.x'], { cwd: dir, encoding: 'utf8' });
    expect(res.error).toBeUndefined();
    expect(res.stderr).toBe('');
    expect(res.status).toBe(0);
    const header = fs.readFileSync(path.join(dir, 'pkcs11.h'), 'utf8');
    expect(header).toContain('#define PKCS11_PROG 4');
    expect(header).toContain('#define PKCS11_V3 3');
    expect(header).toMatch(/struct px_attribute \{/);
    for (const f of ['pkcs11_xdr.c', 'pkcs11_clnt.c']) expect(fs.existsSync(path.join(dir, f))).toBe(true);
  });

  it('the generated XDR routines compile against libtirpc', () => {
    const res = spawnSync('cc', ['-c', '-Wall', '-I/usr/include/tirpc', 'pkcs11_xdr.c', '-o', 'pkcs11_xdr.o'], {
      cwd: dir,
      encoding: 'utf8',
    });
    expect(res.error).toBeUndefined();
    expect(res.status).toBe(0);
  });
});
