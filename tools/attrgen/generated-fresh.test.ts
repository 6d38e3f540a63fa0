import fs from 'fs';
import os from 'os';
import path from 'path';
import * as pkcs11js from 'pkcs11js';
import { main } from './main';
import { parseTable } from './table';

const ROOT = path.resolve(__dirname, '../..');
const TABLE = 'rpc/attributes.table';
const TS_OUT = 'src/generated/attribute-shapes.ts';
const C_OUT = 'client/src/attribute_shapes.gen.h';

describe('attrgen outputs', () => {
  let dir: string;
  let stderr: jest.SpyInstance;

  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'attrgen-'));
    stderr = jest.spyOn(process.stderr, 'write').mockImplementation(() => true);
  });

  afterEach(() => {
    stderr.mockRestore();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('equal a fresh generation from rpc/attributes.table (run `npm run generate` if this fails)', () => {
    const ts = path.join(dir, 'a.ts');
    const h = path.join(dir, 'a.h');
    expect(main([TABLE, ts, h], ROOT)).toBe(0);
    expect(fs.readFileSync(ts, 'utf8')).toBe(fs.readFileSync(path.join(ROOT, TS_OUT), 'utf8'));
    expect(fs.readFileSync(h, 'utf8')).toBe(fs.readFileSync(path.join(ROOT, C_OUT), 'utf8'));
  });

  it('--check accepts the committed files and names a stale one', () => {
    expect(main(['--check', TABLE, TS_OUT, C_OUT], ROOT)).toBe(0);
    const stale = path.join(dir, 'stale.h');
    fs.writeFileSync(stale, fs.readFileSync(path.join(ROOT, C_OUT), 'utf8').replace('0x40000600UL', '0x40000601UL'));
    expect(main(['--check', TABLE, TS_OUT, stale], ROOT)).toBe(1);
    expect(stderr).toHaveBeenCalledWith(expect.stringContaining('stale.h is stale'));
  });

  it.each([
    ['CKA_X 0x1 ulong\nCKA_Y 0x1 bool\n', 'bad.table:2:7: 0x1 already defined on line 1'],
    ['CKA_X 0x1 ulong\nCKA_X 0x2 bool\n', 'bad.table:2:1: CKA_X already defined on line 1'],
    ['  CKA_X 0x1 pointer\n', "bad.table:1:13: unknown shape 'pointer' (one of ulong, bool, bytes, date, ulongs, template)"],
    ['CKA_X 0x123456789 bytes\n', "bad.table:1:7: '0x123456789' is not an attribute type literal"],
    ['CKA_X 0x1\n', 'bad.table:1:1: expected NAME VALUE SHAPE, got 2 fields'],
  ])('rejects %j with file:line:column', (text, message) => {
    const bad = path.join(dir, 'bad.table');
    fs.writeFileSync(bad, text);
    expect(main([bad, path.join(dir, 'o.ts'), path.join(dir, 'o.h')], dir)).toBe(1);
    expect(stderr).toHaveBeenCalledWith(`attrgen: ${message}\n`);
    expect(fs.existsSync(path.join(dir, 'o.ts'))).toBe(false);
  });
});

describe('rpc/attributes.table', () => {
  const entries = parseTable(fs.readFileSync(path.join(ROOT, TABLE), 'utf8'), TABLE);
  const p11 = pkcs11js as unknown as Record<string, unknown>;

  it('gives each type the value the OASIS headers give it (as mirrored by pkcs11js)', () => {
    const known = entries.filter((e) => typeof p11[e.name] === 'number');
    expect(known.length).toBeGreaterThan(90);
    for (const e of known) expect([e.name, e.type]).toEqual([e.name, p11[e.name]]);
  });

  it('nests exactly the CK_ATTRIBUTE-array types and marks CKA_ALLOWED_MECHANISMS a CK_ULONG array', () => {
    const arrayBit = entries.filter((e) => (e.type & 0x40000000) !== 0).map((e) => [e.name, e.shape]);
    expect(arrayBit).toEqual([
      ['CKA_WRAP_TEMPLATE', 'template'],
      ['CKA_UNWRAP_TEMPLATE', 'template'],
      ['CKA_DERIVE_TEMPLATE', 'template'],
      ['CKA_ALLOWED_MECHANISMS', 'ulongs'],
    ]);
  });
});
