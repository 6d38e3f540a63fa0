import * as p from 'pkcs11js';
import {
  ARCH_BE32,
  ARCH_BE64,
  ARCH_LE32,
  ARCH_LE64,
  archLayout,
  AttributeShapeError,
  checkAttributeValue,
  convertAttributeCapacity,
  convertAttributeLength,
  convertAttributeValue,
} from './arch';
import type { ArchLayout } from './arch';

/* Expected bytes are written out by hand per layout, not produced by the code under test. */
const LE64 = archLayout(ARCH_LE64)!;
const LE32 = archLayout(ARCH_LE32)!;
const BE64 = archLayout(ARCH_BE64)!;
const BE32 = archLayout(ARCH_BE32)!;
const hex = (s: string): Buffer => Buffer.from(s.replace(/ /g, ''), 'hex');

/** CKO_PRIVATE_KEY (3), CKM_RSA_PKCS_PSS (0x0d) then CKM_SHA256_RSA_PKCS_PSS (0x43), and ~0 per layout. */
const LAYOUTS: ReadonlyArray<{ name: string; a: ArchLayout; three: string; mechs: string; unavailable: string }> = [
  { name: 'LE64', a: LE64, three: '0300000000000000', mechs: '0d00000000000000 4300000000000000', unavailable: 'ffffffffffffffff' },
  { name: 'LE32', a: LE32, three: '03000000', mechs: '0d000000 43000000', unavailable: 'ffffffff' },
  { name: 'BE64', a: BE64, three: '0000000000000003', mechs: '000000000000000d 0000000000000043', unavailable: 'ffffffffffffffff' },
  { name: 'BE32', a: BE32, three: '00000003', mechs: '0000000d 00000043', unavailable: 'ffffffff' },
];
const PAIRS = LAYOUTS.flatMap((from) => LAYOUTS.map((to) => [`${from.name} -> ${to.name}`, from, to] as const));

describe.each(PAIRS)('%s', (_n, from, to) => {
  it('CK_ULONG (CKA_CLASS, CKA_MODULUS_BITS): value and length re-encoded', () => {
    expect(convertAttributeValue(p.CKA_CLASS, hex(from.three), from.a, to.a)).toEqual(hex(to.three));
    expect(convertAttributeValue(p.CKA_MODULUS_BITS, hex(from.three), from.a, to.a)).toEqual(hex(to.three));
    expect(convertAttributeLength(p.CKA_CLASS, from.a.ulongSize, from.a, to.a)).toBe(to.a.ulongSize);
    expect(convertAttributeValue(p.CKA_VALUE_LEN, hex(from.unavailable), from.a, to.a)).toEqual(hex(to.unavailable));
  });

  it('CK_ULONG array (CKA_ALLOWED_MECHANISMS): each element re-encoded, in order', () => {
    expect(convertAttributeValue(p.CKA_ALLOWED_MECHANISMS, hex(from.mechs), from.a, to.a)).toEqual(hex(to.mechs));
    expect(convertAttributeLength(p.CKA_ALLOWED_MECHANISMS, 2 * from.a.ulongSize, from.a, to.a)).toBe(2 * to.a.ulongSize);
    expect(convertAttributeValue(p.CKA_ALLOWED_MECHANISMS, Buffer.alloc(0), from.a, to.a)).toEqual(Buffer.alloc(0));
  });

  it('output buffer sizes are capacities in whole CK_ULONGs', () => {
    const u = from.a.ulongSize;
    expect(convertAttributeCapacity(p.CKA_ALLOWED_MECHANISMS, 2 * u + 1, from.a, to.a)).toBe(
      from.a.ulongSize === to.a.ulongSize && from.a.littleEndian === to.a.littleEndian ? 2 * u + 1 : 2 * to.a.ulongSize,
    );
    expect(convertAttributeCapacity(p.CKA_CLASS, u, from.a, to.a)).toBe(to.a.ulongSize);
    expect(convertAttributeCapacity(p.CKA_LABEL, 5, from.a, to.a)).toBe(5);
    expect(convertAttributeCapacity(p.CKA_CLASS, -1, from.a, to.a)).toBe(-1);
  });

  it.each([
    ['CK_BBOOL', p.CKA_SENSITIVE, hex('01')],
    ['bytes', p.CKA_LABEL, Buffer.from('label\0x')],
    ['bytes (unlisted vendor type)', 0x80000001, hex('0300000000000000')],
    ['CK_DATE', p.CKA_START_DATE, Buffer.from('20261201')],
  ])('%s passes as it is', (_s, type, v) => {
    expect(convertAttributeValue(type, v, from.a, to.a)).toBe(v);
    expect(convertAttributeLength(type, v.length, from.a, to.a)).toBe(v.length);
    expect(() => checkAttributeValue(type, v, from.a)).not.toThrow();
  });
});

describe.each(LAYOUTS)('values sent in $name', ({ a, three, mechs }) => {
  it('a CK_ULONG of its size and a whole CK_ULONG array are accepted', () => {
    expect(() => checkAttributeValue(p.CKA_CLASS, hex(three), a)).not.toThrow();
    expect(() => checkAttributeValue(p.CKA_ALLOWED_MECHANISMS, hex(mechs), a)).not.toThrow();
  });

  it('a CK_ULONG of another size or a partial CK_ULONG array is refused', () => {
    const other = Buffer.alloc(a.ulongSize === 8 ? 4 : 8);
    expect(() => checkAttributeValue(p.CKA_KEY_TYPE, other, a)).toThrow(AttributeShapeError);
    expect(() => checkAttributeValue(p.CKA_ALLOWED_MECHANISMS, Buffer.alloc(a.ulongSize + 2), a)).toThrow(
      expect.objectContaining({ code: 'ATTRIBUTE_SHAPE', type: p.CKA_ALLOWED_MECHANISMS }),
    );
  });

  it.each([
    ['CKA_WRAP_TEMPLATE', p.CKA_WRAP_TEMPLATE],
    ['CKA_UNWRAP_TEMPLATE', p.CKA_UNWRAP_TEMPLATE],
    ['CKA_DERIVE_TEMPLATE', p.CKA_DERIVE_TEMPLATE],
  ])(
    'a nested template (%s) is refused unless empty (its bytes are client pointers)',
    (_n, type) => {
      expect(() => checkAttributeValue(type, Buffer.alloc(3 * a.ulongSize), a)).toThrow(AttributeShapeError);
      expect(() => checkAttributeValue(type, Buffer.alloc(0), a)).not.toThrow();
    },
  );
});
