import * as p from 'pkcs11js';
import { startDaemon } from './helpers/daemon';
import type { RunningDaemon } from './helpers/daemon';
import { P11Client } from './helpers/p11-client';

/**
 * The primary reads a connection's first record to route it, then hands the
 * socket to a worker. A client that sends its second call the moment the
 * first reply arrives must never lose it to the primary (it used to, now and
 * then, leaving the client waiting forever).
 */
let d: RunningDaemon;
beforeAll(async () => {
  d = await startDaemon({ workers: 2 });
});
afterAll(async () => {
  await d?.stop();
});

function within<T>(ms: number, what: string, x: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([
    x.finally(() => clearTimeout(timer)),
    new Promise<T>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no reply to ${what} within ${ms} ms`)), ms);
    }),
  ]);
}

test('400 fresh connections each get every reply', async () => {
  for (let i = 0; i < 400; i++) {
    const c = await P11Client.connect({ path: d.socketPath });
    expect(await within(5000, `C_SetupArch #${i}`, c.call('C_SetupArch', { arch: 1 }))).toBe(1);
    expect(await within(5000, `C_LoadModule #${i}`, c.call('C_LoadModule', { alias: Buffer.from('softhsm') }))).toBe(p.CKR_OK);
    expect(await within(5000, `C_Initialize #${i}`, c.call('C_Initialize', undefined))).toBe(p.CKR_OK);
    c.raw.destroy();
  }
});
