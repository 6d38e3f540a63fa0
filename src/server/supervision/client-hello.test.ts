import net from 'node:net';
import tls from 'node:tls';
import { randomBytes } from 'node:crypto';
import { CLIENT_HELLO_MAX, joinWorkerOf, peekClientHello } from './client-hello';

/** The first bytes a real node:tls client sends, offering `alpn`. */
async function clientHello(alpn: string[]): Promise<Buffer> {
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  const got = new Promise<Buffer>((resolve) =>
    server.once('connection', (s) => {
      const chunks: Buffer[] = [];
      s.on('data', (c: Buffer) => {
        chunks.push(c);
        const all = Buffer.concat(chunks);
        if (peekClientHello(all).kind !== 'partial') {
          s.destroy();
          resolve(all);
        }
      });
    }),
  );
  const c = tls.connect({ host: '127.0.0.1', port, ALPNProtocols: alpn, rejectUnauthorized: false });
  c.on('error', () => undefined);
  const hello = await got;
  c.destroy();
  server.close();
  return hello;
}

test('the join name offered in a real ClientHello names the worker; a hello without it names none', async () => {
  const hello = await clientHello(['pkcs11proxyd-worker.7', 'h2']);
  const p = peekClientHello(hello);
  expect(p).toEqual({ kind: 'hello', alpn: ['pkcs11proxyd-worker.7', 'h2'] });
  expect(joinWorkerOf(p.kind === 'hello' ? p.alpn : [])).toBe(7);
  const plain = peekClientHello(await clientHello(['h2']));
  expect(plain.kind === 'hello' && joinWorkerOf(plain.alpn)).toBeNull();
  // Every prefix is partial until the whole hello is there.
  for (let n = 0; n < hello.length; n += 7) expect(peekClientHello(hello.subarray(0, n)).kind).toBe('partial');
});

test('names out of range or malformed route nowhere', () => {
  for (const bad of ['pkcs11proxyd-worker.256', 'pkcs11proxyd-worker.07', 'pkcs11proxyd-worker.', 'pkcs11proxyd-worker.1x', 'other.1']) {
    expect(joinWorkerOf([bad])).toBeNull();
  }
});

test('random and corrupted bytes never throw and never wait past the size bound', async () => {
  const hello = await clientHello(['pkcs11proxyd-worker.1']);
  for (let i = 0; i < 2000; i++) {
    const b = Buffer.from(hello);
    for (let k = 0; k < 4; k++) b[Math.floor(Math.random() * b.length)] = Math.floor(Math.random() * 256);
    expect(() => peekClientHello(b)).not.toThrow();
    expect(() => peekClientHello(randomBytes(1 + (i % 300)))).not.toThrow();
  }
  // A record stream that keeps claiming more stops being "partial" at the bound.
  const huge = Buffer.alloc(CLIENT_HELLO_MAX + 10);
  for (let off = 0; off + 5 <= huge.length; off += 16389) {
    huge[off] = 22;
    huge[off + 1] = 3;
    huge.writeUInt16BE(16384, off + 3);
  }
  huge[5] = 1;
  huge.writeUIntBE(0xffffff, 6, 3);
  expect(peekClientHello(huge).kind).toBe('other');
});
