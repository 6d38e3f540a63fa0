import type net from 'node:net';
import { errorMessage } from '../../pkcs11/errors';
import { createLogger } from '../log';
import { createPkcs11Server } from '../serve';
import type { DaemonSettings } from '../settings';

/**
 * Entry point of a worker process. The primary owns the listening sockets and
 * hands each accepted connection to one worker; a worker owns the module
 * instances, sessions and login state of its connections.
 * Messages from the primary: {t:'conn', transport, remote, initial} with the
 * socket (initial: base64 of the bytes the primary read to route it),
 * {t:'stop'}. To the primary: {t:'ready'} once the modules are initialized.
 */
function main(): void {
  const index = Number(process.env.PKCS11PROXYD_WORKER_INDEX ?? '0');
  const settings = JSON.parse(process.env.PKCS11PROXYD_SETTINGS ?? '{}') as DaemonSettings;
  const log = createLogger(undefined, `[worker ${index}] `);
  let served: ReturnType<typeof createPkcs11Server>;
  try {
    served = createPkcs11Server(settings, log, index);
  } catch (e) {
    log('error', errorMessage(e));
    process.exit(1);
  }
  let nextId = 0;
  let stopping = false;
  const stop = () => {
    if (stopping) return;
    stopping = true;
    void served.shutdown().finally(() => process.exit(0));
  };
  process.on('message', (msg: { t: string; transport?: 'unix' | 'tcp'; remote?: string; initial?: string }, handle?: net.Socket) => {
    if (msg.t === 'conn' && handle) {
      nextId += 1;
      const initial = msg.initial ? Buffer.from(msg.initial, 'base64') : undefined;
      served.server.attachSocket(handle, { id: nextId, transport: msg.transport ?? 'unix', remote: msg.remote ?? 'unix' }, initial);
    } else if (msg.t === 'stop') stop();
  });
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  // The primary is gone: nobody can hand us connections or stop us.
  process.on('disconnect', stop);
  process.send?.({ t: 'ready' });
}

main();
