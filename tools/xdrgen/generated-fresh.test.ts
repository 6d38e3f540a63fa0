import fs from 'fs';
import os from 'os';
import path from 'path';
import { main } from './main';

const ROOT = path.resolve(__dirname, '../..');
const FILES = ['pkcs11_rpc_codecs.ts', 'pkcs11_calls.ts', 'pkcs11_rpc.ts'];
const committed = (f: string): string => path.join(ROOT, 'src/generated', f);
/** The arguments of `npm run generate` after the tool's own path, with the output files in `dir`. */
const args = (dir: string): string[] => ['--fields', 'rpc/pkcs11-fields.json', 'rpc/pkcs11.x', ...FILES.map((f) => path.join(dir, f))];

describe('src/generated/pkcs11_{rpc_codecs,calls,rpc}.ts', () => {
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

  it('equal a fresh generation from rpc/pkcs11.x and rpc/pkcs11-fields.json (run `npm run generate` if this fails)', () => {
    expect(main(args(dir), ROOT)).toBe(0);
    for (const f of FILES) expect(fs.readFileSync(path.join(dir, f), 'utf8')).toBe(fs.readFileSync(committed(f), 'utf8'));
  });

  it('npm run generate:xdr writes exactly these files', () => {
    const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { scripts: Record<string, string> };
    expect(pkg.scripts['generate:xdr']).toContain(`main.js ${args('src/generated').join(' ')}`);
  });

  it('--check accepts the committed files and rejects a stale one', () => {
    expect(main(['--check', ...args(path.join(ROOT, 'src/generated'))], ROOT)).toBe(0);
    for (const f of FILES) fs.copyFileSync(committed(f), path.join(dir, f));
    const stale = path.join(dir, 'pkcs11_calls.ts');
    fs.writeFileSync(stale, fs.readFileSync(stale, 'utf8').replace('PKCS11_PROG = 4', 'PKCS11_PROG = 5'));
    expect(main(['--check', ...args(dir)], ROOT)).toBe(1);
    expect(fs.readFileSync(stale, 'utf8')).toContain('PKCS11_PROG = 5');
    expect(stderr).toHaveBeenCalledWith(expect.stringContaining('pkcs11_calls.ts is stale'));
  });

  it('reports errors with file:line:column and a non-zero exit', () => {
    const bad = path.join(dir, 'bad.x');
    fs.writeFileSync(bad, 'struct s {\n  foo x;\n};\n');
    expect(main([bad, path.join(dir, 'out.ts')], dir)).toBe(1);
    expect(stderr).toHaveBeenCalledWith("xdrgen: bad.x:2:3: unknown type 'foo'\n");
    expect(fs.existsSync(path.join(dir, 'out.ts'))).toBe(false);
    expect(main(['only-one-arg'], dir)).toBe(2);
    expect(main(['--fields'], dir)).toBe(2);
  });

  it('refuses a field roles file that names an unknown type or role', () => {
    const x = path.join(dir, 'a.x');
    fs.writeFileSync(x, 'typedef hyper h;\n');
    const roles = path.join(dir, 'roles.json');
    fs.writeFileSync(roles, '{ "nope": { "role": "session" } }');
    expect(main(['--fields', roles, x, path.join(dir, 'out.ts')], dir)).toBe(1);
    expect(stderr).toHaveBeenCalledWith("xdrgen: roles.json: field roles: type 'nope' is not declared in the .x\n");
    fs.writeFileSync(roles, '{ "h": { "role": "handle" } }');
    expect(main(['--fields', roles, x, path.join(dir, 'out.ts')], dir)).toBe(1);
    expect(stderr).toHaveBeenCalledWith("xdrgen: roles.json: field roles: type 'h': unknown role 'handle'\n");
    fs.writeFileSync(roles, '{ "h": { "role": "object" } }');
    expect(main(['--fields', roles, x, path.join(dir, 'out.ts')], dir)).toBe(1);
    fs.writeFileSync(roles, '[');
    expect(main(['--fields', roles, x, path.join(dir, 'out.ts')], dir)).toBe(1);
  });
});
