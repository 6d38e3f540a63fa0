import { ProxyError } from '../../errors';
import { fork } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import type { ChildProcess } from 'node:child_process';
import type net from 'node:net';
import path from 'node:path';
import { errorMessage } from '../../pkcs11/errors';
import type { Logger } from '../log';
import type { ListenAddress, ListenResult, PeerIdentity } from '../transport/types';
import { reloadTlsMaterial } from '../transport/tls';
import { streamHandleOf } from '../transport/direct-read';
import { PROCEDURES, px_JoinApp_argsCodec, xdrDecode } from '../../generated/pkcs11_rpc';
import { DEFAULT_SOCKET_OPTIONS, describePeer, Listener } from '../transport/listener';
import { AdmissionControl, DEFAULT_ADMISSION_LIMITS } from '../transport/limits';
import type { AdmissionTicket } from '../transport/limits';
import { RecordAssembler } from '../transport/record-marking';
import { parseCall } from '../transport/rpc-message';
import { compileReload, createPkcs11Server } from '../serve';
import { readConfigText } from '../../config/read';
import type { DaemonSettings } from '../settings';
import { Backoff, DEFAULT_BACKOFF } from './backoff';
import { audit } from '../audit';
import { aggregateText, MetricsEndpoint, WORKER_SCRAPE_TIMEOUT_MS } from '../metrics/endpoint';
import type { MetricsJson } from '../metrics/endpoint';
import { enableMetrics } from '../metrics/registry';
import type { ProcessMetrics } from '../metrics/registry';
import type { ConnMessage, ToPrimary, ToWorker } from './handover';
import { joinWorkerOf, peekClientHello } from './client-hello';
import { dropPrivileges } from './privilege';

/** The primary reads at most one record of this size from a new connection to route it. */
const FIRST_RECORD_PEEK_MAX = 4096;
/** ...and waits at most this long for it. */
const FIRST_RECORD_WAIT_MS = 2000;
const JOIN_APP = PROCEDURES.find((p) => p.name === 'px_JoinApp')!;

/**
 * glibc's malloc raises its mmap threshold each time a large block is freed,
 * after which large reply buffers come from the heap and are not given back
 * to the system when freed. A fixed threshold keeps every block of 256 KiB
 * or more in its own mapping, unmapped on free.
 */
const WORKER_MALLOC_ENV = { MALLOC_MMAP_THRESHOLD_: String(256 * 1024), MALLOC_ARENA_MAX: '2' };

/**
 * The primary's node options minus its young-generation size (the launchers
 * start it with a small one: it only routes connections, see the Makefile's
 * PRIMARY_NODE_FLAGS). A worker's calls allocate per call, and a 2 MiB
 * semi-space cost it 3-8 % more CPU per call (bench:c A/B).
 */
function workerExecArgv(): string[] {
  return process.execArgv.filter((a) => !/^--max[-_]semi[-_]space[-_]size(=|$)/.test(a));
}

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

export class DaemonStartError extends ProxyError {
  readonly code = 'DAEMON_START';
}

interface WorkerSlot {
  index: number;
  child: ChildProcess | null;
  ready: boolean;
  /** When it last became ready (ms, monotonic-ish Date.now), for the backoff's stable-run test. */
  readyAt: number;
  backoff: Backoff;
  /** Connections sent to this worker and not yet acknowledged, by hand-over id. */
  pending: Map<number, Handover>;
  /** Admission tickets of the connections this worker took and has not reported closed, by hand-over id. */
  live: Map<number, AdmissionTicket>;
}

/** A connection between accept and a worker's acknowledgement: the primary still holds its descriptor. */
interface Handover {
  id: number;
  sock: net.Socket;
  addr: ListenAddress;
  peer: PeerIdentity;
  initial: Buffer;
  /** Workers it was sent to; a connection is re-sent at most once per worker. */
  tried: Set<number>;
  /** Its share of the admission counts, released when it closes wherever it is. */
  ticket: AdmissionTicket;
}

/**
 * A running pkcs11proxyd. With `workers > 0` this process only accepts
 * connections and spreads them over worker processes (each with its own
 * module instances), so cheap calls as well as crypto use every core.
 * Workers start one after another: SoftHSM2 races when several processes
 * initialize one token store at once. A worker that dies is replaced after
 * a delay that grows while it keeps dying (backoff.ts).
 */
export class Daemon {
  private listener: Listener | null = null;
  private slots: WorkerSlot[] = [];
  private rr = 0;
  private nextHandover = 1;
  private stopping = false;
  /** False while no worker is ready; logged on each change, not per refused connection. */
  private serving = true;
  private refused = 0;
  private inProcess: ReturnType<typeof createPkcs11Server> | null = null;
  endpoints: ListenResult[] = [];
  private reloads = 0;
  /**
   * The filter.conf text in force: read at start, replaced by each reload the
   * primary accepts. Every worker starts from it (never from the file), so an
   * edit takes effect on SIGHUP only, in every worker alike.
   */
  private filterText: string | undefined;
  /** Connection limits of every connection of every worker: this process accepts them all. */
  private readonly admission: AdmissionControl;
  private pendingReload: { id: number; waiting: Set<number>; failed: number } | null = null;
  /** This process's metrics (null: metrics off) and the endpoint serving the daemon's. */
  private readonly metrics: ProcessMetrics | null;
  metricsEndpoint: MetricsEndpoint | null = null;
  private scrapes = 0;
  /** Scrapes waiting for workers' answers: scrape id → worker index → resolve. */
  private readonly pendingScrapes = new Map<number, Map<number, (m: MetricsJson | null) => void>>();

  private constructor(
    private readonly s: DaemonSettings,
    private readonly log: Logger,
  ) {
    // In-process (workers 0) the one registry is the serving one; else the primary's, with the worker gauges.
    this.metrics = s.metrics !== undefined ? enableMetrics(null) : null;
    this.admission = new AdmissionControl(s.admission ?? DEFAULT_ADMISSION_LIMITS, (level, msg) => log(level, msg));
  }

  static async start(s: DaemonSettings, log: Logger): Promise<Daemon> {
    // One set of session ticket keys for every worker: a client resumes its TLS session on
    // whichever worker its next connection reaches. Made here, never written to disk or logs.
    if (s.tls && s.tls.ticketKeys === undefined) s = { ...s, tls: { ...s.tls, ticketKeys: randomBytes(48).toString('hex') } };
    const d = new Daemon(s, log);
    try {
      if (s.filterFile) d.filterText = readConfigText(s.filterFile);
      if (s.workers === 0) {
        d.inProcess = createPkcs11Server(s, log, 0, { admission: d.admission, filterText: d.filterText });
        d.endpoints = await d.inProcess.server.listen(s.listen);
      } else {
        for (let i = 0; i < s.workers; i++) {
          const slot: WorkerSlot = { index: i, child: null, ready: false, readyAt: 0, backoff: new Backoff(DEFAULT_BACKOFF), pending: new Map(), live: new Map() };
          d.slots.push(slot);
          await d.spawn(slot);
        }
        d.listener = await Listener.open(s.listen, {
          socket: DEFAULT_SOCKET_OPTIONS,
          pauseOnConnect: true,
          log: (level, msg) => log(level, msg),
          onConnection: ({ sock, addr, peer }) => d.accept(sock, addr, peer),
        });
        d.endpoints = d.listener.results;
      }
      if (s.metrics !== undefined && d.metrics !== null) {
        const m = d.metrics;
        d.metricsEndpoint = await MetricsEndpoint.open(s.metrics, () => aggregateText(m, d.scrapeWorkers()), log);
      }
      // Sockets bound, modules loaded (workers drop on their own after loading): give root up.
      if (s.privilege) dropPrivileges(s.privilege, 'primary', log);
    } catch (e) {
      await d.stop();
      throw e instanceof DaemonStartError ? e : new DaemonStartError(errorMessage(e));
    }
    return d;
  }

  /** Resolves once the worker is ready; rejects if it exits first. */
  private spawn(slot: WorkerSlot): Promise<void> {
    return new Promise((resolve, reject) => {
      const child = fork(path.join(__dirname, 'worker-main.js'), [], {
        env: {
          ...WORKER_MALLOC_ENV,
          ...process.env,
          PKCS11PROXYD_WORKER_INDEX: String(slot.index),
          PKCS11PROXYD_SETTINGS: JSON.stringify(this.s),
        },
        execArgv: workerExecArgv(),
        stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
        serialization: 'json',
      });
      child.send({ t: 'filter', text: this.filterText ?? null } satisfies ToWorker);
      slot.child = child;
      slot.ready = false;
      let settled = false;
      child.on('message', (m: ToPrimary) => {
        if (m.t === 'taken') {
          const h = slot.pending.get(m.id);
          if (h === undefined) return;
          slot.pending.delete(m.id);
          slot.live.set(m.id, h.ticket);
          // The worker holds its own descriptor now; ours only keeps the connection alive.
          h.sock.destroy();
        } else if (m.t === 'closed') {
          slot.live.get(m.id)?.release();
          slot.live.delete(m.id);
        } else if (m.t === 'reloaded') {
          this.reloadAnswered(slot, m.id, m.error);
        } else if (m.t === 'objects') {
          for (const w of this.slots) if (w !== slot && w.ready && w.child?.connected) w.child.send({ t: 'objects' });
        } else if (m.t === 'metrics') {
          const waiting = this.pendingScrapes.get(m.id);
          const resolveOne = waiting?.get(slot.index);
          waiting?.delete(slot.index);
          resolveOne?.(m.metrics as MetricsJson);
        } else if (m.t === 'ready' && !settled) {
          settled = true;
          slot.ready = true;
          slot.readyAt = Date.now();
          this.updateServing();
          resolve();
        }
      });
      // The IPC channel closes as the process dies, after its last message was read: every
      // connection still unacknowledged was never taken, so it goes elsewhere or is closed.
      child.on('disconnect', () => {
        slot.ready = false;
        this.updateServing();
        this.rescue(slot);
      });
      child.on('exit', (code, signal) => {
        slot.ready = false;
        slot.child = null;
        this.updateServing();
        this.rescue(slot);
        // Its connections died with it.
        for (const t of slot.live.values()) t.release();
        slot.live.clear();
        if (this.stopping) return;
        if (!settled) {
          settled = true;
          reject(new DaemonStartError(`worker ${slot.index} failed to start (exit ${code ?? signal})`));
          // At start-up the caller gives up; later, a worker that cannot start keeps backing off.
          if (this.listener === null) return;
        }
        const uptime = slot.readyAt > 0 ? Date.now() - slot.readyAt : 0;
        slot.readyAt = 0;
        const delay = slot.backoff.died(uptime);
        if (this.metrics !== null) this.metrics.workerRestarts += 1;
        this.log(
          'error',
          `worker ${slot.index} exited (${code ?? signal}); its connections are lost; ` +
            `restarting in ${delay} ms (death ${slot.backoff.count} in a row)`,
        );
        setTimeout(() => {
          if (this.stopping) return;
          this.spawn(slot).then(
            () => this.log('info', `worker ${slot.index} ready again (pid ${slot.child?.pid})`),
            () => undefined,
          );
        }, delay).unref();
      });
    });
  }

  private readyWorkers(): WorkerSlot[] {
    return this.slots.filter((w) => w.ready && w.child !== null && w.child.connected);
  }

  /**
   * One promise per ready worker of its metrics for this scrape: the worker's prom-client JSON over
   * IPC, or null when it dies or takes longer than WORKER_SCRAPE_TIMEOUT_MS (that scrape lacks it).
   */
  private scrapeWorkers(): Array<Promise<MetricsJson | null>> {
    const id = ++this.scrapes;
    const waiting = new Map<number, (m: MetricsJson | null) => void>();
    this.pendingScrapes.set(id, waiting);
    const all = this.readyWorkers().map(
      (w) =>
        new Promise<MetricsJson | null>((resolve) => {
          const timer = setTimeout(() => {
            waiting.delete(w.index);
            resolve(null);
          }, WORKER_SCRAPE_TIMEOUT_MS);
          waiting.set(w.index, (m) => {
            clearTimeout(timer);
            resolve(m);
          });
          w.child!.send({ t: 'metrics', id }, (err) => {
            if (err) waiting.get(w.index)?.(null);
          });
        }),
    );
    void Promise.all(all).then(() => this.pendingScrapes.delete(id));
    return all;
  }

  /** SIGHUP: every process reopens its audit file (logrotate). */
  reopenAuditFiles(): void {
    for (const w of this.readyWorkers()) w.child!.send({ t: 'reopen' });
  }

  private updateServing(): void {
    if (this.metrics !== null) this.metrics.workersReady = this.readyWorkers().length;
    if (this.stopping || this.listener === null) return;
    const now = this.readyWorkers().length > 0;
    if (now === this.serving) return;
    this.serving = now;
    if (now) {
      this.log('info', `a worker is ready: accepting connections again (${this.refused} closed meanwhile)`);
      this.refused = 0;
    } else {
      this.log('error', 'no worker ready: new connections are closed until one is');
    }
  }

  private refuse(sock: net.Socket): void {
    this.refused += 1;
    sock.destroy();
  }

  private accept(sock: net.Socket, addr: ListenAddress, peer: PeerIdentity): void {
    sock.on('error', () => sock.destroy());
    if (this.stopping || this.readyWorkers().length === 0) {
      this.refuse(sock);
      return;
    }
    const admitted = this.admission.admit(peer);
    if (!admitted.ok) {
      sock.destroy();
      return;
    }
    this.route(sock, addr, peer, admitted.ticket);
  }

  /**
   * Reads the connection's first record (bounded) to route it: a px_JoinApp
   * call goes to the worker its token names, anything else round-robin.
   * The bytes read travel with the socket to the worker.
   */
  private route(sock: net.Socket, addr: ListenAddress, peer: PeerIdentity, ticket: AdmissionTicket): void {
    // TLS: the routing key is in the cleartext ClientHello (client-hello.ts); the worker terminates TLS.
    const tlsTimeout = addr.type === 'internet' && this.s.tls ? this.s.tls.handshakeTimeoutMs : null;
    const chunks: Buffer[] = [];
    let length = 0;
    let routed = false;
    let target: number | null = null;
    const peek = new RecordAssembler(FIRST_RECORD_PEEK_MAX);
    const done = () => {
      if (routed) return;
      routed = true;
      clearTimeout(timer);
      sock.off('data', onData);
      sock.off('end', done);
      sock.off('close', onClose);
      sock.pause();
      // pause() only stops 'data' events: libuv keeps reading into the stream
      // until the handle is closed after the hand-over, and a client that
      // already got its first reply from the worker would lose its next call
      // to this process. Stop the read at the source, then take whatever the
      // stream buffered.
      streamHandleOf(sock)?.readStop();
      for (let extra = sock.read() as Buffer | null; extra !== null; extra = sock.read() as Buffer | null) {
        chunks.push(extra);
        length += extra.length;
      }
      const h: Handover = { id: this.nextHandover++, sock, addr, peer, initial: Buffer.concat(chunks, length), tried: new Set(), ticket };
      this.handOff(h, target);
    };
    const onData = (c: Buffer) => {
      chunks.push(c);
      length += c.length;
      if (tlsTimeout !== null) {
        const hello = peekClientHello(Buffer.concat(chunks, length));
        if (hello.kind === 'partial') return;
        target = hello.kind === 'hello' ? joinWorkerOf(hello.alpn) : null;
        done();
        return;
      }
      let records: Buffer[];
      try {
        records = peek.push(c);
      } catch {
        // Larger than any routing record: round-robin, the worker applies the real limit.
        done();
        return;
      }
      if (records.length > 0) {
        target = joinTarget(records[0]);
        done();
      }
    };
    const onClose = () => {
      routed = true;
      clearTimeout(timer);
      ticket.release();
    };
    // A silent client is handed over as is; the worker applies the protocol's rules.
    // Under TLS, one that has not sent its ClientHello within the handshake timeout is dropped here.
    const timer =
      tlsTimeout === null
        ? setTimeout(done, FIRST_RECORD_WAIT_MS)
        : setTimeout(() => {
            if (routed) return;
            sock.off('data', onData);
            const remote = describePeer(peer);
            audit({ event: 'authentication_failure', transport: 'tls', remote, reason: 'handshake_timeout', detail: 'no ClientHello' });
            this.log('warn', `tls ${remote}: refused (handshake_timeout: no ClientHello in ${tlsTimeout} ms)`);
            sock.destroy();
          }, tlsTimeout);
    sock.on('data', onData);
    sock.once('end', done);
    sock.once('close', onClose);
    sock.resume();
  }

  /** Sends the connection to a ready worker it was not sent to yet (the named one first), or closes it. */
  private handOff(h: Handover, target: number | null): void {
    if (h.sock.destroyed) {
      h.ticket.release();
      return;
    }
    const ready = this.readyWorkers().filter((w) => !h.tried.has(w.index));
    if (this.stopping || ready.length === 0) {
      h.ticket.release();
      this.refuse(h.sock);
      return;
    }
    const w = (target !== null && ready.find((x) => x.index === target)) || ready[this.rr++ % ready.length];
    const child = w.child!;
    h.tried.add(w.index);
    w.pending.set(h.id, h);
    const transport = h.addr.type === 'local' ? 'unix' : this.s.tls ? 'tls' : 'tcp';
    const msg: ConnMessage = {
      t: 'conn',
      id: h.id,
      transport,
      remote: transport === 'unix' ? 'unix' : describePeer(h.peer),
      peer: h.peer,
      initial: h.initial.toString('base64'),
    };
    // Without `server`, Node sends a plain socket: the worker's copy is not tracked by our
    // net.Server, whose close() would otherwise wait for every connection the workers serve.
    (h.sock as unknown as { server: unknown }).server = null;
    // A plain connection travels as its bare handle, over which the worker creates its one
    // Socket (direct-read.ts); a TLS one as a Socket, which tls.ts wraps. Either way our
    // descriptor stays open (keepOpen; a bare handle is never closed by send) until the
    // worker's 'taken' (or its death) destroys h.sock.
    const carried = transport === 'tls' ? h.sock : (streamHandleOf(h.sock) ?? h.sock);
    child.send(msg, carried as net.Socket, { keepOpen: true }, (err) => {
      if (err && w.pending.get(h.id) === h) {
        w.pending.delete(h.id);
        this.handOff(h, null);
      }
    });
  }

  /** Connections sent to a worker that is gone without taking them: re-route or close. */
  private rescue(slot: WorkerSlot): void {
    if (slot.pending.size === 0) return;
    const lost = [...slot.pending.values()];
    slot.pending.clear();
    for (const h of lost) this.handOff(h, null);
  }

  /**
   * SIGHUP: reload the filter file in every worker. The primary reads and
   * compiles it first; a bad file is refused here (logged with its
   * file:line:col) and nothing changes. A good one is sent, as read, to each
   * ready worker, which compiles the same bytes and swaps its policy at once;
   * a worker that refuses it keeps its old policy and says why.
   * A worker started later gets the same text (filterText).
   */
  reload(): void {
    this.reloadTls();
    const file = this.s.filterFile;
    if (!file) {
      this.log('warn', 'SIGHUP: no filter file configured; nothing to reload');
      return;
    }
    let text: string;
    try {
      text = readConfigText(file);
      // In process the stack's reload is the check (serve.ts compileReload); with workers, this one.
      if (this.inProcess) {
        const generation = this.inProcess.reloadFilter(text);
        this.filterText = text;
        this.log('info', `SIGHUP: filter ${file} reloaded (generation ${generation})`);
        audit({ event: 'config_reload', file, outcome: 'ok', generation });
        return;
      }
      compileReload(this.s, file, text);
    } catch (e) {
      this.log('error', `SIGHUP: filter reload refused, the old policy stays: ${errorMessage(e)}`);
      audit({ event: 'config_reload', file, outcome: 'error', error: errorMessage(e) });
      return;
    }
    this.filterText = text;
    const id = ++this.reloads;
    const workers = this.readyWorkers();
    this.pendingReload = { id, waiting: new Set(workers.map((w) => w.index)), failed: 0 };
    for (const w of workers) w.child!.send({ t: 'reload', id, text });
    if (workers.length === 0) this.log('warn', 'SIGHUP: no worker ready; each starts with this policy');
  }

  /**
   * SIGHUP with use_ssl: every process reads its TLS files again (same paths) for the
   * connections it accepts from now on; a process whose files are unreadable or do not
   * match keeps its old material and says so. Files must be readable by the service user.
   */
  private reloadTls(): void {
    if (!this.s.tls) return;
    if (this.inProcess) {
      reloadTlsMaterial(this.inProcess.server, this.s.tls, this.log);
      return;
    }
    for (const w of this.readyWorkers()) w.child!.send({ t: 'tls-reload' });
  }

  private reloadAnswered(slot: WorkerSlot, id: number, error: string | undefined): void {
    const r = this.pendingReload;
    if (r === null || r.id !== id || !r.waiting.delete(slot.index)) return;
    if (error !== undefined) {
      r.failed += 1;
      this.log('error', `SIGHUP: worker ${slot.index} refused the filter reload, its old policy stays: ${error}`);
      audit({ event: 'config_reload', file: this.s.filterFile, outcome: 'error', reload: id, refused_by_worker: slot.index, error });
    }
    if (r.waiting.size === 0) {
      this.pendingReload = null;
      if (r.failed === 0) {
        this.log('info', `SIGHUP: filter ${this.s.filterFile} reloaded in every worker (reload ${id})`);
        audit({ event: 'config_reload', file: this.s.filterFile, outcome: 'ok', reload: id });
      }
    }
  }

  async stop(): Promise<void> {
    this.stopping = true;
    await this.metricsEndpoint?.close();
    this.metricsEndpoint = null;
    const closed = this.listener?.close();
    for (const w of this.slots) this.rescue(w);
    await Promise.all([
      closed,
      ...this.slots.map(
        (w) =>
          new Promise<void>((res) => {
            const c = w.child;
            if (!c || c.exitCode !== null) return res();
            c.once('exit', () => res());
            c.kill('SIGTERM');
          }),
      ),
    ]);
    if (this.inProcess) await this.inProcess.shutdown();
  }
}

