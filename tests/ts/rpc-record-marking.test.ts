import { RpcRecordTooLargeError } from '../../src/server/transport/errors';
import { frameRecord, RecordAssembler } from '../../src/server/transport/record-marking';

/** Hand-built fragment: 4-byte big-endian mark (top bit = last) then the bytes. */
function fragment(data: Buffer, last: boolean): Buffer {
  const mark = Buffer.alloc(4);
  mark.writeUInt32BE((last ? 0x80000000 : 0) + data.length);
  return Buffer.concat([mark, data]);
}

function bytes(n: number, seed: number): Buffer {
  return Buffer.from(Array.from({ length: n }, (_, i) => (i * 7 + seed) & 0xff));
}

function errorCode(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    return (e as { code?: string }).code;
  }
  return undefined;
}

describe('RecordAssembler', () => {
  const partA = bytes(13, 1);
  const partB = bytes(21, 2);
  const twoFragments = Buffer.concat([fragment(partA, false), fragment(partB, true)]);
  const expected = Buffer.concat([partA, partB]);

  it('reassembles a 2-fragment record split at every byte position', () => {
    for (let cut = 0; cut <= twoFragments.length; cut++) {
      const a = new RecordAssembler(1024);
      const first = a.push(twoFragments.subarray(0, cut));
      const second = a.push(twoFragments.subarray(cut));
      const records = [...first, ...second];
      expect({ cut, records }).toEqual({ cut, records: [expected] });
      expect(a.midRecord).toBe(false);
    }
  });

  it('reassembles a 2-fragment record split at every pair of byte positions', () => {
    for (let i = 0; i <= twoFragments.length; i++) {
      for (let j = i; j <= twoFragments.length; j++) {
        const a = new RecordAssembler(1024);
        const records = [
          ...a.push(twoFragments.subarray(0, i)),
          ...a.push(twoFragments.subarray(i, j)),
          ...a.push(twoFragments.subarray(j)),
        ];
        expect(records).toEqual([expected]);
      }
    }
  });

  it('reassembles when fed one byte at a time', () => {
    const a = new RecordAssembler(1024);
    const records: Buffer[] = [];
    for (const b of twoFragments) records.push(...a.push(Buffer.from([b])));
    expect(records).toEqual([expected]);
  });

  it('returns several records from one chunk in order and keeps the remainder', () => {
    const r1 = bytes(8, 3);
    const r2 = bytes(0, 0);
    const r3 = bytes(5, 4);
    const r4 = bytes(12, 5);
    const stream = Buffer.concat([
      fragment(r1, true),
      fragment(r2, true),
      fragment(r3.subarray(0, 2), false),
      fragment(r3.subarray(2), true),
      fragment(r4, true),
    ]);
    const a = new RecordAssembler(1024);
    const cut = stream.length - 6; // inside r4
    expect(a.push(stream.subarray(0, cut))).toEqual([r1, r2, r3]);
    expect(a.midRecord).toBe(true);
    expect(a.push(stream.subarray(cut))).toEqual([r4]);
    expect(a.midRecord).toBe(false);
  });

  it('accepts zero-length non-last fragments', () => {
    const data = bytes(6, 9);
    const stream = Buffer.concat([
      fragment(Buffer.alloc(0), false),
      fragment(data, false),
      fragment(Buffer.alloc(0), false),
      fragment(Buffer.alloc(0), true),
    ]);
    expect(new RecordAssembler(16).push(stream)).toEqual([data]);
  });

  it('reassembles a record made of many 1-byte fragments', () => {
    const data = bytes(10000, 11);
    const frags: Buffer[] = [];
    for (let i = 0; i < data.length; i++)
      frags.push(fragment(data.subarray(i, i + 1), i === data.length - 1));
    const stream = Buffer.concat(frags);
    const a = new RecordAssembler(10000);
    const records: Buffer[] = [];
    for (let off = 0; off < stream.length; off += 777)
      records.push(...a.push(stream.subarray(off, off + 777)));
    expect(records).toEqual([data]);
  });

  it('accepts a record of exactly maxRecordSize', () => {
    const data = bytes(100, 1);
    const a = new RecordAssembler(100);
    expect(
      a.push(Buffer.concat([fragment(data.subarray(0, 40), false), fragment(data.subarray(40), true)])),
    ).toEqual([data]);
  });

  it('throws RPC_ERR_RECORD_TOO_LARGE from the mark alone, before buffering the fragment', () => {
    const a = new RecordAssembler(100);
    const mark = Buffer.from([0x00, 0x00, 0x00, 101]); // 101 bytes, not last; no data sent
    let err: unknown;
    try {
      a.push(mark);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(RpcRecordTooLargeError);
    expect((err as RpcRecordTooLargeError).code).toBe('RPC_ERR_RECORD_TOO_LARGE');
    expect((err as RpcRecordTooLargeError).size).toBe(101);
    expect((err as RpcRecordTooLargeError).limit).toBe(100);
  });

  it('throws when the sum of fragments exceeds maxRecordSize by one byte', () => {
    const a = new RecordAssembler(100);
    expect(a.push(fragment(bytes(60, 1), false))).toEqual([]);
    expect(errorCode(() => a.push(fragment(bytes(41, 2), true)))).toBe('RPC_ERR_RECORD_TOO_LARGE');
  });

  it('throws for the largest fragment length 0x7fffffff', () => {
    const a = new RecordAssembler(16 * 1024 * 1024);
    expect(errorCode(() => a.push(Buffer.from([0x7f, 0xff, 0xff, 0xff, 1, 2, 3])))).toBe(
      'RPC_ERR_RECORD_TOO_LARGE',
    );
    const b = new RecordAssembler(16 * 1024 * 1024);
    expect(errorCode(() => b.push(Buffer.from([0xff, 0xff, 0xff, 0xff])))).toBe('RPC_ERR_RECORD_TOO_LARGE');
  });

  it('leaves returned records intact when later chunks arrive', () => {
    const a = new RecordAssembler(64);
    const chunk = fragment(bytes(8, 1), true);
    const [rec] = a.push(chunk);
    const copy = Buffer.from(rec);
    a.push(fragment(bytes(8, 2), true));
    expect(rec).toEqual(copy);
  });

  describe('transient chunks (one read buffer reused for every read)', () => {
    /** Feeds `stream` through one reused buffer in pieces of `step` bytes, scribbling over it after each push. */
    function viaReusedBuffer(a: RecordAssembler, stream: Buffer, step: number): Buffer[] {
      const shared = Buffer.alloc(step);
      const out: Buffer[] = [];
      for (let off = 0; off < stream.length; off += step) {
        const n = Math.min(step, stream.length - off);
        stream.copy(shared, 0, off, off + n);
        out.push(...a.push(shared.subarray(0, n), true));
        shared.fill(0xee);
      }
      return out;
    }

    it('keeps whole records, split records and several records per chunk intact after the buffer is reused', () => {
      const small = [bytes(12, 3), bytes(40, 4), bytes(4, 5)];
      const big = bytes(5000, 6);
      const stream = Buffer.concat([
        ...small.map((r) => fragment(r, true)),
        fragment(big.subarray(0, 3000), false),
        fragment(big.subarray(3000), true),
        fragment(Buffer.alloc(0), true),
      ]);
      for (const step of [1, 7, 64, 4096, stream.length]) {
        const records = viaReusedBuffer(new RecordAssembler(1 << 20), stream, step);
        expect({ step, records }).toEqual({ step, records: [...small, big, Buffer.alloc(0)] });
      }
    });

    it('copies records larger than the carving limit whole', () => {
      const huge = bytes(40000, 7);
      const [rec] = viaReusedBuffer(new RecordAssembler(1 << 20), fragment(huge, true), 65536);
      expect(rec).toEqual(huge);
    });

    it('records carved one after another do not overlap', () => {
      const a = new RecordAssembler(1 << 20);
      const records = Array.from({ length: 100 }, (_, i) => viaReusedBuffer(a, fragment(bytes(1000 + i, i), true), 4096)[0]);
      records.forEach((r, i) => expect(r).toEqual(bytes(1000 + i, i)));
    });
  });
});

describe('frameRecord', () => {
  it('frames pieces as one last fragment', () => {
    const out = frameRecord([Buffer.from([1, 2, 3, 4]), Buffer.from([5, 6, 7, 8])]);
    expect(out).toEqual(Buffer.from([0x80, 0, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8]));
  });

  it('frames an empty record as one empty last fragment', () => {
    expect(frameRecord([])).toEqual(Buffer.from([0x80, 0, 0, 0]));
  });

  it('splits into fragments of at most maxFragment bytes across piece boundaries', () => {
    const out = frameRecord([Buffer.from([1, 2, 3]), Buffer.alloc(0), Buffer.from([4, 5, 6, 7])], 3);
    expect(out).toEqual(Buffer.from([0, 0, 0, 3, 1, 2, 3, 0, 0, 0, 3, 4, 5, 6, 0x80, 0, 0, 1, 7]));
  });
});
