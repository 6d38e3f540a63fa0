import { fork } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import { errorMessage } from '../../pkcs11/errors';
import type { Logger } from '../log';
import type { ListenAddress, ListenResult } from '../transport/types';
import { PROCEDURES, px_JoinApp_argsCodec, xdrDecode } from '../../generated/pkcs11_rpc';
import { applySocketPermissions, removeStaleSocket } from '../transport/local-socket';
import { RecordAssembler } from '../transport/record-marking';
import { parseCall } from '../transport/rpc-message';
import { createPkcs11Server } from '../serve';
import type { DaemonSettings } from '../settings';

/** Delay before replacing a worker that died, doubled per consecutive death, capped. */
const RESPAWN_BASE_MS = 200;
const RESPAWN_MAX_MS = 10_000;

/** The primary reads at most one record of this size from a new connection to route it. */
const FIRST_RECORD_PEEK_MAX = 4096;
/** ...and waits at most this long for it. */
const FIRST_RECORD_WAIT_MS = 2000;
const JOIN_APP = PROCEDURES.find((p) => p.name === 'px_JoinApp')!;

/**
 * Worker index named by the token of a px_JoinApp call, or null for any
 * other record, malformed ones included: the worker judges those properly.
 */
function joinTarget(record: Buffer): number | null {
  try {
    const call = parseCall(record);
    if (call.kind !== 'call' || call.header.prog !== JOIN_APP.prog || call.header.proc !== JOIN_APP.proc) return null;
    return xdrDecode(px_JoinApp_argsCodec, call.args).token[0] ?? null;
  } catch {
    return null;
  }
}

export class DaemonStartError extends Error {
  readonly code = 'DAEMON_START';
}

interface WorkerSlot {
  index: number;
  child: ChildProcess | null;
  ready: boolean;
  deaths: number;
}

/**
 * A running pkcs11proxyd. With `workers > 0` this process only accepts
 * connections and spreads them over worker processes (each with its own
 * module instances), so cheap calls as well as crypto use every core.
 * Workers start one after another: SoftHSM2 races when several processes
 * initialize one token store at once.
 */
export class Daemon {
  private servers: net.Server[] = [];
  private slots: WorkerSlot[] = [];
  private rr = 0;
  private stopping = false;
  private inProcess: ReturnType<typeof createPkcs11Server> | null = null;
  endpoints: ListenResult[] = [];

  private constructor(
    private readonly s: DaemonSettings,
    private readonly log: Logger,
  ) {}

  static async start(s: DaemonSettings, log: Logger): Promise<Daemon> {
    const d = new Daemon(s, log);
    try {
      if (s.workers === 0) {
        d.inProcess = createPkcs11Server(s, log, 0);
        d.endpoints = await d.inProcess.server.listen(s.listen);
      } else {
        for (let i = 0; i < s.workers; i++) {
          const slot: WorkerSlot = { index: i, child: null, ready: false, deaths: 0 };
          d.slots.push(slot);
          await d.spawn(slot);
        }
        for (const addr of s.listen) d.endpoints.push(await d.bind(addr));
      }
    } catch (e) {
      await d.stop();
      throw e instanceof DaemonStartError ? e : new DaemonStartError(errorMessage(e));
    }
    return d;
  }

  private spawn(slot: WorkerSlot): Promise<void> {
    return new Promise((resolve, reject) => {
      const child = fork(path.join(__dirname, 'worker-main.js'), [], {
        env: {
          ...process.env,
          PKCS11PROXYD_WORKER_INDEX: String(slot.index),
          PKCS11PROXYD_SETTINGS: JSON.stringify(this.s),
        },
        stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
        serialization: 'json',
      });
      slot.child = child;
      slot.ready = false;
      let settled = false;
      child.on('message', (m: { t: string }) => {
        if (m.t === 'ready' && !settled) {
          settled = true;
          slot.ready = true;
          slot.deaths = 0;
          resolve();
        }
      });
      // The IPC channel closes as the process dies: stop handing it connections at once.
      child.on('disconnect', () => {
        slot.ready = false;
      });
      child.on('exit', (code, signal) => {
        slot.ready = false;
        slot.child = null;
        if (!settled) {
          settled = true;
          reject(new DaemonStartError(`worker ${slot.index} failed to start (exit ${code ?? signal})`));
          return;
        }
        if (this.stopping) return;
        slot.deaths += 1;
        const delay = Math.min(RESPAWN_MAX_MS, RESPAWN_BASE_MS * 2 ** (slot.deaths - 1));
        this.log('error', `worker ${slot.index} exited (${code ?? signal}); its connections are lost; restarting in ${delay} ms`);
        setTimeout(() => {
          if (!this.stopping) this.spawn(slot).catch((e) => this.log('error', errorMessage(e)));
        }, delay).unref();
      });
    });
  }

  private async bind(addr: ListenAddress): Promise<ListenResult> {
    const server = net.createServer({ pauseOnConnect: true }, (sock) => this.dispatch(sock, addr));
    server.on('error', (e) => this.log('error', `listener: ${errorMessage(e)}`));
    this.servers.push(server);
    if (addr.type === 'local') {
      await removeStaleSocket(addr.path);
      await new Promise<void>((res, rej) => {
        server.once('error', rej);
        server.listen(addr.path, () => res());
      });
      await applySocketPermissions(addr.path, addr);
      return { addr, path: addr.path };
    }
    await new Promise<void>((res, rej) => {
      server.once('error', rej);
      server.listen(addr.port, addr.host, () => res());
    });
    return { addr, port: (server.address() as net.AddressInfo).port };
  }

  /**
   * Reads the connection's first record (bounded) to route it: a px_JoinApp
   * call goes to the worker its token names, anything else round-robin.
   * The bytes read travel with the socket to the worker.
   */
  private dispatch(sock: net.Socket, addr: ListenAddress): void {
    const chunks: Buffer[] = [];
    let length = 0;
    let routed = false;
    let target: number | null = null;
    const peek = new RecordAssembler(FIRST_RECORD_PEEK_MAX);
    const route = () => {
      if (routed) return;
      routed = true;
      clearTimeout(timer);
      sock.off('data', onData);
      sock.pause();
      // pause() only stops 'data' events: libuv keeps reading into the stream
      // until the handle is closed after the hand-over, and a client that
      // already got its first reply from the worker would lose its next call
      // to this process. Stop the read at the source, then take whatever the
      // stream buffered.
      (sock as unknown as { _handle?: { readStop?: () => number } })._handle?.readStop?.();
      for (let extra = sock.read() as Buffer | null; extra !== null; extra = sock.read() as Buffer | null) {
        chunks.push(extra);
        length += extra.length;
      }
      const initial = Buffer.concat(chunks, length);
      this.handOff(sock, addr, initial, target);
    };
    const onData = (c: Buffer) => {
      chunks.push(c);
      length += c.length;
      let records: Buffer[];
      try {
        records = peek.push(c);
      } catch {
        // Larger than any routing record: round-robin, the worker applies the real limit.
        route();
        return;
      }
      if (records.length > 0) {
        target = joinTarget(records[0]);
        route();
      }
    };
    // A silent client is handed over as is; the worker applies the protocol's rules.
    const timer = setTimeout(route, FIRST_RECORD_WAIT_MS);
    sock.on('data', onData);
    sock.once('error', () => {
      routed = true;
      clearTimeout(timer);
      sock.destroy();
    });
    sock.once('end', route);
    sock.resume();
  }

  private handOff(sock: net.Socket, addr: ListenAddress, initial: Buffer, target: number | null): void {
    const ready = this.slots.filter((w) => w.ready && w.child);
    if (ready.length === 0) {
      this.log('warn', 'no worker ready; connection refused');
      sock.destroy();
      return;
    }
    const w = (target !== null && ready.find((x) => x.index === target)) || ready[this.rr++ % ready.length];
    const remote = addr.type === 'local' ? 'unix' : `${sock.remoteAddress}:${sock.remotePort}`;
    const msg = { t: 'conn', transport: addr.type === 'local' ? 'unix' : 'tcp', remote, initial: initial.toString('base64') };
    w.child!.send(msg, sock, (err) => {
      if (err && !sock.destroyed && w.child === null && this.slots.some((x) => x.ready && x !== w)) {
        // The worker died between the pick and the send: give the socket to another one.
        this.handOff(sock, addr, initial, null);
        return;
      }
      if (err) {
        this.log('warn', `handing a connection to worker ${w.index} failed: ${errorMessage(err)}`);
        sock.destroy();
      }
    });
  }

  async stop(): Promise<void> {
    this.stopping = true;
    await Promise.all(this.servers.map((s) => new Promise<void>((res) => s.close(() => res()))));
    for (const a of this.s.listen) {
      if (a.type === 'local') await removeStaleSocket(a.path).catch(() => undefined);
    }
    await Promise.all(
      this.slots.map(
        (w) =>
          new Promise<void>((res) => {
            const c = w.child;
            if (!c || c.exitCode !== null) return res();
            c.once('exit', () => res());
            c.kill('SIGTERM');
          }),
      ),
    );
    if (this.inProcess) await this.inProcess.shutdown();
  }
}
