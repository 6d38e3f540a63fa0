import { FrameError, FrameReader, frameOf, HEADER_SIZE, MAX_FRAME } from './protocol';

// The helper channel's framing: frames cut out of any chunking of the stream, bad lengths refused.
function frames(chunks: Buffer[]): Array<[number, number, number, string]> {
  const out: Array<[number, number, number, string]> = [];
  const r = new FrameReader((id, a, b, payload) => out.push([id, a, b, payload.toString('hex')]));
  for (const c of chunks) r.push(c);
  return out;
}

test('frames split at every byte, joined in one chunk, or mixed, come out the same', () => {
  const stream = Buffer.concat([frameOf(1, 0, 7, Buffer.from('abc')), frameOf(2, 1, 0, Buffer.alloc(0)), frameOf(0xffffffff, 2, 3, Buffer.alloc(70_000, 1))]);
  const whole = frames([stream]);
  expect(whole.map((f) => f.slice(0, 3))).toEqual([[1, 0, 7], [2, 1, 0], [0xffffffff, 2, 3]]);
  expect(whole[0][3]).toBe('616263');
  const bytes = [...stream].map((b) => Buffer.from([b]));
  expect(frames(bytes)).toEqual(whole);
  expect(frames([stream.subarray(0, 5), stream.subarray(5, 23), stream.subarray(23, 40_000), stream.subarray(40_000)])).toEqual(whole);
});

test('a frame shorter than its header or longer than MAX_FRAME is a protocol error', () => {
  const short = Buffer.alloc(8);
  short.writeUInt32BE(HEADER_SIZE - 5, 0);
  expect(() => frames([short])).toThrow(FrameError);
  const long = Buffer.alloc(4);
  long.writeUInt32BE(MAX_FRAME + 1, 0);
  expect(() => frames([long])).toThrow(FrameError);
});
