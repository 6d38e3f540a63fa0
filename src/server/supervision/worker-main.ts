import net from 'node:net';
import { announceObjectChanges, objectsChangedElsewhere } from '../../filter/object-attributes';
import { errorMessage } from '../../pkcs11/errors';
import { installAuditSinks } from '../audit-sinks';
import type { AuditSinks } from '../audit-sinks';
import { createLogger, envLogFormat, envLogLevel } from '../log';
import { enableMetrics } from '../metrics/registry';
import { createPkcs11Server } from '../serve';
import type { DaemonSettings } from '../settings';
import type { ToPrimary, ToWorker } from './handover';
import { dropPrivileges } from './privilege';
import { reloadTlsMaterial } from '../transport/tls';
import { isReceivedHandle, type StreamHandle } from '../transport/direct-read';

/**
 * Entry point of a worker process. The primary owns the listening sockets and
 * hands each accepted connection to one worker; a worker owns the module
 * instances, sessions and login state of its connections. Protocol: handover.ts.
 */
function main(filterText: string | undefined): void {
  const index = Number(process.env.PKCS11PROXYD_WORKER_INDEX ?? '0');
  const settings = JSON.parse(process.env.PKCS11PROXYD_SETTINGS ?? '{}') as DaemonSettings;
  const log = createLogger(envLogLevel(settings.logLevel), `[worker ${index}] `, envLogFormat(settings.logFormat), index);
  let served: ReturnType<typeof createPkcs11Server>;
  let auditSinks: AuditSinks | null = null;
  const metrics = settings.metrics !== undefined ? enableMetrics(index) : null;
  try {
    // Before the stack: the audit layer is in it only when a sink is.
    auditSinks = installAuditSinks(settings.audit, index, log);
    served = createPkcs11Server(settings, log, index, { filterText });
    // Modules are loaded (their files opened as root if we started as root): now give root up.
    if (settings.privilege) dropPrivileges(settings.privilege, `worker ${index}`, log);
  } catch (e) {
    log('error', errorMessage(e));
    process.exit(1);
  }
  const send = (m: ToPrimary): void => {
    process.send?.(m);
  };
  announceObjectChanges(() => send({ t: 'objects' }));
  let stopping = false;
  const stop = () => {
    if (stopping) return;
    stopping = true;
    void served.shutdown().finally(() => process.exit(0));
  };
  // A plain connection arrives as a bare handle, a TLS one as a Socket (daemon.ts handOff).
  process.on('message', (msg: ToWorker, received?: unknown) => {
    if (msg.t === 'conn') {
      // Acknowledge before the first byte is read: from here on this process owns the
      // connection, and its death closes it (the kernel drops our descriptor) instead of
      // leaving it to the primary.
      send({ t: 'taken', id: msg.id });
      const handle: net.Socket | StreamHandle | null =
        received instanceof net.Socket ? received : isReceivedHandle(received) ? received : null;
      if (handle === null) return;
      const initial = msg.initial ? Buffer.from(msg.initial, 'base64') : undefined;
      if (msg.transport === 'tls') {
        if (!(handle instanceof net.Socket)) {
          handle.close();
          send({ t: 'closed', id: msg.id });
          return;
        }
        // The handshake runs here; the connection gets its id and certificate identity once it passes.
        handle.once('close', () => send({ t: 'closed', id: msg.id }));
        served.server.attachTlsSocket(handle, initial);
        return;
      }
      const conn = served.server.attachSocket(handle, { id: served.server.allocateId(), transport: msg.transport, remote: msg.remote, peer: msg.peer }, initial);
      if (conn === null) send({ t: 'closed', id: msg.id });
      else void conn.closed.then(() => send({ t: 'closed', id: msg.id }));
    } else if (msg.t === 'reload') {
      try {
        const generation = served.reloadFilter(msg.text);
        log('info', `filter reloaded (generation ${generation})`);
        send({ t: 'reloaded', id: msg.id });
      } catch (e) {
        send({ t: 'reloaded', id: msg.id, error: errorMessage(e) });
      }
    } else if (msg.t === 'objects') objectsChangedElsewhere();
    else if (msg.t === 'reopen') auditSinks?.reopen();
    else if (msg.t === 'tls-reload') {
      if (settings.tls) reloadTlsMaterial(served.server, settings.tls, log);
    }
    else if (msg.t === 'metrics') {
      const id = msg.id;
      if (metrics === null) send({ t: 'metrics', id, metrics: [] });
      else void metrics.registry.getMetricsAsJSON().then((m) => send({ t: 'metrics', id, metrics: m }), () => send({ t: 'metrics', id, metrics: [] }));
    } else if (msg.t === 'stop') stop();
  });
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  // The primary is gone: nobody can hand us connections or stop us.
  process.on('disconnect', stop);
  send({ t: 'ready' });
}

// The primary's first message is the policy in force; nothing is served before it.
process.once('message', (m: ToWorker) => {
  if (m.t === 'filter') main(m.text ?? undefined);
  else process.exit(m.t === 'stop' ? 0 : 1);
});
