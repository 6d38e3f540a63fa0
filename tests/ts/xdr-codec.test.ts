import {
  C_GetInfo_retCodec,
  C_GetSlotList_retCodec,
  C_Login_argsCodec,
  CALL_INVOKERS,
  CallName,
  Codec,
  hyperCodec,
  PKCS11_PROG,
  PKCS11_V3,
  Pkcs11Calls,
  Pkcs11Passthrough,
  PROCEDURES,
  PROCEDURES_BY_VERSION,
  px_attribute,
  px_attributeCodec,
  px_bytes_retCodec,
  px_infoCodec,
  px_rvCodec,
  px_session_data_args,
  px_session_data_argsCodec,
  px_templateCodec,
  px_ulongCodec,
  px_versionCodec,
  Reader,
  ReusableSink,
  voidCodec,
  XdrCodecError,
  XdrDecodeError,
  XdrEncodeError,
  xdrDecode,
  xdrEncode,
  PX_ARCH_LITTLE_ENDIAN_64,
  PX_ARCH_UNSUPPORTED,
} from '../../src/generated/pkcs11_rpc';

/* A test-only XDR writer, independent of the generated codecs: big-endian words built with BigInt. */
const u32 = (n: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0);
  return b;
};
const i64 = (n: number | bigint): Buffer => {
  const b = Buffer.alloc(8);
  b.writeBigInt64BE(BigInt(n));
  return b;
};
const padded = (bytes: Buffer, padByte = 0): Buffer =>
  Buffer.concat([bytes, Buffer.alloc((4 - (bytes.length % 4)) % 4, padByte)]);
const varOpaque = (bytes: Buffer): Buffer => Buffer.concat([u32(bytes.length), padded(bytes)]);
const cat = (...parts: Buffer[]): Buffer => Buffer.concat(parts);
const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');

function decodeError(codec: Codec<unknown>, buf: Buffer): XdrDecodeError {
  try {
    xdrDecode(codec, buf);
  } catch (e) {
    expect(e).toBeInstanceOf(XdrDecodeError);
    expect(e).toBeInstanceOf(XdrCodecError);
    expect((e as XdrDecodeError).code).toBe('XDR_DECODE');
    return e as XdrDecodeError;
  }
  throw new Error('decode unexpectedly succeeded');
}

function encodeError<T>(codec: Codec<T>, v: T): XdrEncodeError {
  try {
    xdrEncode(codec, v);
  } catch (e) {
    expect(e).toBeInstanceOf(XdrEncodeError);
    expect((e as XdrEncodeError).code).toBe('XDR_ENCODE');
    return e as XdrEncodeError;
  }
  throw new Error('encode unexpectedly succeeded');
}

const attr: px_attribute = { type: 0x100, value: Buffer.from([1, 2, 3]), valueLen: 3 };
const attrBytes = hex('00000000 00000100  00000003 01020300  00000000 00000003');

describe('constants', () => {
  it('exports the .x constants and program numbers', () => {
    expect(PX_ARCH_LITTLE_ENDIAN_64).toBe(1);
    expect(PX_ARCH_UNSUPPORTED).toBe(5);
    expect(PKCS11_PROG).toBe(4);
    expect(PKCS11_V3).toBe(3);
  });
});

describe('encoding matches hand-built bytes', () => {
  it('px_attribute: hyper, opaque<> padded to 4, hyper', () => {
    expect(xdrEncode(px_attributeCodec, attr).toString('hex')).toBe(attrBytes.toString('hex'));
  });

  it('hyper -1 (CK_UNAVAILABLE_INFORMATION) is eight 0xff bytes', () => {
    expect(xdrEncode(px_ulongCodec, -1).toString('hex')).toBe('ffffffffffffffff');
    expect(xdrEncode(px_attributeCodec, { ...attr, valueLen: -1 }).subarray(16).toString('hex')).toBe('ffffffffffffffff');
  });

  it('hyper at the safe integer limits', () => {
    expect(xdrEncode(hyperCodec, Number.MAX_SAFE_INTEGER).toString('hex')).toBe('001fffffffffffff');
    expect(xdrEncode(hyperCodec, -Number.MAX_SAFE_INTEGER).toString('hex')).toBe('ffe0000000000001');
    expect(xdrEncode(hyperCodec, 0x1_0000_0000).toString('hex')).toBe('0000000100000000');
    expect(xdrEncode(hyperCodec, -0x1_0000_0000).toString('hex')).toBe('ffffffff00000000');
  });

  it('px_version: two opaque<1>', () => {
    const v = { major: Buffer.from([2]), minor: Buffer.from([40]) };
    expect(xdrEncode(px_versionCodec, v).toString('hex')).toBe('00000001020000000000000128000000');
  });

  it('C_GetSlotList_ret: rv, hyper array with count prefix, count', () => {
    const bytes = xdrEncode(C_GetSlotList_retCodec, { rv: 0, slotList: [1, 2], count: 2 });
    expect(bytes).toEqual(cat(i64(0), u32(2), i64(1), i64(2), i64(2)));
  });

  it('C_Login_args with an empty and a 5-byte PIN', () => {
    expect(xdrEncode(C_Login_argsCodec, { session: 7, userType: 1, pin: Buffer.alloc(0) })).toEqual(
      cat(i64(7), i64(1), u32(0)),
    );
    const pin = Buffer.from('12345');
    expect(xdrEncode(C_Login_argsCodec, { session: 7, userType: 1, pin })).toEqual(cat(i64(7), i64(1), varOpaque(pin)));
  });

  it('px_template: count then attributes', () => {
    const second: px_attribute = { type: 0, value: Buffer.alloc(0), valueLen: 8 };
    expect(xdrEncode(px_templateCodec, [attr, second])).toEqual(
      cat(u32(2), attrBytes, i64(0), u32(0), i64(8)),
    );
  });

  it('accepts a plain Uint8Array for opaque fields', () => {
    const value = new Uint8Array([1, 2, 3]) as Buffer;
    expect(xdrEncode(px_attributeCodec, { ...attr, value })).toEqual(attrBytes);
  });

  it('void is zero bytes', () => {
    expect(xdrEncode(voidCodec, undefined).length).toBe(0);
    expect(xdrDecode(voidCodec, Buffer.alloc(0))).toBeUndefined();
  });
});

describe('decoding hand-built bytes', () => {
  it('px_attribute', () => {
    const v = xdrDecode(px_attributeCodec, attrBytes);
    expect(v).toEqual(attr);
    expect(Buffer.isBuffer(v.value)).toBe(true);
  });

  it('decoded Buffers survive changes to the input', () => {
    const input = Buffer.from(attrBytes);
    const v = xdrDecode(px_attributeCodec, input);
    input.fill(0xee);
    expect(v.value).toEqual(Buffer.from([1, 2, 3]));
  });

  it('px_session_data_args with small and large data, not aliasing the input', () => {
    for (const size of [0, 1, 64, 65, 1024]) {
      const data = Buffer.alloc(size, 0x5a);
      const input = cat(i64(9), varOpaque(data));
      const v = xdrDecode(px_session_data_argsCodec, input);
      input.fill(0);
      expect(v).toEqual({ session: 9, data });
      expect(Buffer.isBuffer(v.data)).toBe(true);
    }
  });

  it('hyper -1 and the safe integer limits', () => {
    expect(xdrDecode(hyperCodec, hex('ffffffffffffffff'))).toBe(-1);
    expect(xdrDecode(hyperCodec, hex('001fffffffffffff'))).toBe(Number.MAX_SAFE_INTEGER);
    expect(xdrDecode(hyperCodec, hex('ffe0000000000001'))).toBe(-Number.MAX_SAFE_INTEGER);
  });

  it('C_GetSlotList_ret', () => {
    const bytes = cat(i64(0), u32(3), i64(1), i64(0x1_0000_0002), i64(-1), i64(3));
    expect(xdrDecode(C_GetSlotList_retCodec, bytes)).toEqual({ rv: 0, slotList: [1, 0x1_0000_0002, -1], count: 3 });
  });

  it('C_GetInfo_ret with opaque<32> strings', () => {
    const manuf = Buffer.from('SoftHSM'.padEnd(32, ' '));
    const desc = Buffer.from('Implementation of PKCS11'.padEnd(32, ' '));
    const version = (a: number, b: number): Buffer => cat(varOpaque(Buffer.from([a])), varOpaque(Buffer.from([b])));
    const bytes = cat(i64(0), version(2, 40), varOpaque(manuf), i64(0), varOpaque(desc), version(2, 6));
    expect(xdrDecode(C_GetInfo_retCodec, bytes)).toEqual({
      rv: 0,
      info: {
        cryptokiVersion: { major: Buffer.from([2]), minor: Buffer.from([40]) },
        manufacturerID: manuf,
        flags: 0,
        libraryDescription: desc,
        libraryVersion: { major: Buffer.from([2]), minor: Buffer.from([6]) },
      },
    });
  });

  it('several values in sequence from one Reader', () => {
    const r = new Reader(cat(i64(5), attrBytes));
    expect(px_rvCodec.decode(r)).toBe(5);
    expect(px_attributeCodec.decode(r)).toEqual(attr);
    expect(r.remaining).toBe(0);
  });
});

describe('decode errors', () => {
  it('truncated input, at every cut point', () => {
    for (let cut = 0; cut < attrBytes.length; cut++) {
      decodeError(px_attributeCodec, attrBytes.subarray(0, cut));
    }
  });

  it('a length far beyond the input fails before reading or allocating the bytes', () => {
    const spy = jest.spyOn(Reader.prototype, 'readBytes');
    try {
      const err = decodeError(px_bytes_retCodec, cat(i64(0), u32(0xfffffff0), hex('01020304')));
      expect(err.offset).toBe(12);
      expect(spy).not.toHaveBeenCalled();
    } finally {
      spy.mockRestore();
    }
  });

  it('an array count far beyond the input fails before decoding elements', () => {
    const err = decodeError(C_GetSlotList_retCodec, cat(i64(0), u32(0x40000000), i64(1)));
    expect(err.offset).toBe(12);
    // Each element needs 8 bytes: 2 elements in 12 bytes cannot fit either.
    decodeError(C_GetSlotList_retCodec, cat(i64(0), u32(2), i64(1), u32(0)));
  });

  it('bound exceeded: opaque<32> with 33 bytes, opaque<1> with 2', () => {
    const version = cat(varOpaque(Buffer.from([2])), varOpaque(Buffer.from([40])));
    const info = cat(version, varOpaque(Buffer.alloc(33, 0x41)), i64(0), varOpaque(Buffer.alloc(0)), version);
    const err = decodeError(px_infoCodec, info);
    expect(err.offset).toBe(16);
    expect(err.message).toContain('px_info.manufacturerID');
    decodeError(px_versionCodec, cat(varOpaque(Buffer.from([2, 0])), varOpaque(Buffer.from([40]))));
    // 32 is fine.
    const ok = cat(version, varOpaque(Buffer.alloc(32, 0x41)), i64(0), varOpaque(Buffer.alloc(0)), version);
    expect(xdrDecode(px_infoCodec, ok).manufacturerID.length).toBe(32);
  });

  it('non-zero padding', () => {
    // px_attribute: the 3 value bytes are at 12..14, one padding byte at 15.
    const bad = Buffer.from(attrBytes);
    bad[15] = 0x01;
    expect(decodeError(px_attributeCodec, bad).offset).toBe(15);
    // px_version.major: 1 byte at 4, padding at 5..7.
    const version = cat(varOpaque(Buffer.from([2])), varOpaque(Buffer.from([40])));
    for (const at of [5, 6, 7]) {
      const v = Buffer.from(version);
      v[at] = 0x80;
      expect(decodeError(px_versionCodec, v).offset).toBe(5);
    }
  });

  it('trailing bytes', () => {
    const err = decodeError(px_rvCodec, cat(i64(0), u32(0)));
    expect(err.offset).toBe(8);
    decodeError(voidCodec, hex('00'));
  });

  it('hyper outside the safe integer range', () => {
    decodeError(hyperCodec, hex('0020000000000000'));
    decodeError(hyperCodec, hex('7fffffffffffffff'));
    decodeError(hyperCodec, hex('ffe0000000000000'));
    decodeError(hyperCodec, hex('8000000000000000'));
    const err = decodeError(px_attributeCodec, cat(i64(0), u32(0), hex('0020000000000000')));
    expect(err.offset).toBe(12);
  });

  it('errors inside template elements name the element', () => {
    const bytes = cat(u32(2), attrBytes, i64(0), u32(0xffff), i64(0));
    expect(decodeError(px_templateCodec, bytes).message).toMatch(/\[1\]/);
  });
});

describe('encode errors', () => {
  it('bounds and types', () => {
    encodeError(px_versionCodec, { major: Buffer.from([1, 2]), minor: Buffer.from([0]) });
    encodeError(px_ulongCodec, 1.5);
    encodeError(px_ulongCodec, 2 ** 53);
    encodeError(px_ulongCodec, NaN);
    encodeError(px_ulongCodec, '1' as unknown as number);
    encodeError(px_attributeCodec, { ...attr, value: 'abc' as unknown as Buffer });
    encodeError(px_attributeCodec, null as unknown as px_attribute);
    encodeError(px_templateCodec, {} as unknown as px_attribute[]);
    expect(encodeError(px_templateCodec, [attr, { ...attr, type: -0.5 }]).message).toMatch(/\[1\]/);
  });
});

describe('xdrEncode reuses one sink', () => {
  const data = (n: number, fill: number): px_session_data_args => ({ session: 7, data: Buffer.alloc(n, fill) });

  it('each result is its own copy; a shorter message after a longer one carries none of its bytes', () => {
    const long = xdrEncode(px_session_data_argsCodec, data(4096, 0xaa));
    const short = xdrEncode(px_session_data_argsCodec, data(3, 0xbb));
    expect(short).toEqual(Buffer.concat([i64(7), u32(3), Buffer.from([0xbb, 0xbb, 0xbb, 0])]));
    expect(long.length).toBe(8 + 4 + 4096);
    expect(long.subarray(12).every((b) => b === 0xaa)).toBe(true);
  });

  it('a failed encode leaves nothing behind for the next one', () => {
    encodeError(px_templateCodec, [attr, { ...attr, type: -0.5 }]);
    expect(xdrEncode(px_templateCodec, [attr])).toEqual(Buffer.concat([u32(1), xdrEncode(px_attributeCodec, attr)]));
  });

  it('grows past its initial size and gives a large buffer back on reset', () => {
    const sink = new ReusableSink(8, 64);
    sink.writeBytes(Buffer.alloc(100, 1));
    sink.writePadding(100 + 2);
    sink.writeUint32(0xffffffff);
    expect(sink.length).toBe(106);
    const first = sink.take();
    expect(first.subarray(100)).toEqual(Buffer.from([0, 0, 0xff, 0xff, 0xff, 0xff]));
    sink.reset();
    expect(sink.length).toBe(0);
    sink.writeInt32(-2);
    sink.writeFloat64(0.5);
    expect(sink.take()).toEqual(Buffer.from([0xff, 0xff, 0xff, 0xfe, 0x3f, 0xe0, 0, 0, 0, 0, 0, 0]));
    expect(first.subarray(0, 4)).toEqual(Buffer.alloc(4, 1));
  });
});

describe('procedure table', () => {
  it('lists procedures 2..70 of version 3 with their names, then the extensions from 71 on', () => {
    const procs = PROCEDURES.map((p) => p.proc);
    expect(procs.slice(0, 69)).toEqual(Array.from({ length: 69 }, (_, i) => i + 2));
    expect(procs.slice(69)).toEqual(Array.from({ length: procs.length - 69 }, (_, i) => i + 71));
    expect(PROCEDURES.slice(69).every((p) => p.name.startsWith('px_'))).toBe(true);
    for (const p of PROCEDURES) {
      expect(p.prog).toBe(4);
      expect(p.vers).toBe(3);
      expect(p.name).toBe(p.rpcName.replace(/^c_/, 'C_'));
      expect(Object.isFrozen(p)).toBe(true);
    }
    const v3 = PROCEDURES_BY_VERSION.get(3)!;
    expect(v3.size).toBe(PROCEDURES.length);
    expect(v3.get(43)!.name).toBe('C_Sign');
    expect(v3.get(43)!.rpcName).toBe('c_Sign');
    expect(v3.get(3)!.args).toBe(voidCodec);
    expect(v3.get(70)!.name).toBe('C_LoadModule');
    expect(PROCEDURES_BY_VERSION.get(2)).toBeUndefined();
  });

  it('errorRet gives a zero result carrying rv, encodable by the result codec', () => {
    const slotList = PROCEDURES_BY_VERSION.get(3)!.get(4)!;
    expect(slotList.errorRet(0x30)).toEqual({ rv: 0x30, slotList: [], count: 0 });
    expect(PROCEDURES_BY_VERSION.get(3)!.get(2)!.errorRet(5)).toBe(5);
    for (const p of PROCEDURES) {
      const a = p.errorRet(0x32);
      const bytes = xdrEncode(p.ret, a);
      expect(bytes.subarray(0, 8)).toEqual(i64(0x32));
      expect(xdrDecode(p.ret, bytes)).toEqual(a);
      if (typeof a === 'object') expect(p.errorRet(0x32)).not.toBe(a);
    }
  });
});

describe('call interface', () => {
  type Recorded = { name: string; args: unknown[] };

  function recordingImpl(log: Recorded[]): Pkcs11Calls<string> {
    return new Proxy({} as Pkcs11Calls<string>, {
      get: (_t, name) => (...args: unknown[]) => {
        log.push({ name: String(name), args });
        return Promise.resolve(0);
      },
    });
  }

  it('Pkcs11Passthrough forwards every call unchanged', async () => {
    const log: Recorded[] = [];
    const layer = new Pkcs11Passthrough(recordingImpl(log));
    const args: px_session_data_args = { session: 1, data: Buffer.from('x') };
    await expect(layer.C_Sign('ctx', args)).resolves.toBe(0);
    await layer.C_Initialize('ctx');
    expect(log).toEqual([
      { name: 'C_Sign', args: ['ctx', args] },
      { name: 'C_Initialize', args: ['ctx'] },
    ]);
  });

  it('CALL_INVOKERS has one invoker per call name, passing args only when declared', async () => {
    const names = [...new Set(PROCEDURES.map((p) => p.name))];
    expect(Object.keys(CALL_INVOKERS).sort()).toEqual([...names].sort());
    for (const p of PROCEDURES) {
      const log: Recorded[] = [];
      await CALL_INVOKERS[p.name as CallName](recordingImpl(log), 'ctx', 'args');
      expect(log).toEqual([{ name: p.name, args: p.args === voidCodec ? ['ctx'] : ['ctx', 'args'] }]);
    }
  });
});
