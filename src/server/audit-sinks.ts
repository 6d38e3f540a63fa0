import fs from 'node:fs';
import os from 'node:os';
import { type AuditEvent, setAuditSink } from './audit';
import { writeStderrLine } from './log';
import type { Logger } from './log';
import type { SyslogSettings } from '../config/server-config';
import type { AuditSettings } from './settings';
import { unixDgramAddon } from './unix-dgram';

/** The installed sinks of this process, for SIGHUP (logrotate) and shutdown. */
export interface AuditSinks {
  /** Opens the file again by name (after logrotate moved it) and closes the old descriptor. */
  reopen(): void;
  close(): void;
}

/**
 * A file appended to by every process of the daemon (primary and workers each
 * hold their own O_APPEND descriptor): each line is one write(2), so lines of
 * several processes never interleave. Writes are synchronous: an event is in
 * the file (the page cache) before the reply of the call it describes leaves,
 * and a crash right after loses nothing that was acknowledged.
 */
class FileSink {
  private fd: number;
  private failing = false;

  constructor(
    readonly path: string,
    private readonly log: Logger,
  ) {
    this.fd = FileSink.open(path);
  }

  private static open(path: string): number {
    // 0600 applies when the file is created; logrotate's `create` mode applies to the files it makes.
    return fs.openSync(path, fs.constants.O_WRONLY | fs.constants.O_APPEND | fs.constants.O_CREAT, 0o600);
  }

  write(line: string): void {
    try {
      fs.writeSync(this.fd, line);
      this.failing = false;
    } catch (e) {
      // One message per run of failures (disk full), not one per event.
      if (!this.failing) this.log('error', `audit file ${this.path}: write failed, events are lost until it works again: ${(e as Error).message}`);
      this.failing = true;
    }
  }

  reopen(): void {
    let fd: number;
    try {
      fd = FileSink.open(this.path);
    } catch (e) {
      this.log('error', `audit file ${this.path}: cannot reopen, still writing to the old file: ${(e as Error).message}`);
      return;
    }
    const old = this.fd;
    this.fd = fd;
    fs.closeSync(old);
  }

  close(): void {
    fs.closeSync(this.fd);
  }
}

/** Syslog facility codes (RFC 5424 section 6.2.1). */
export const SYSLOG_FACILITIES = {
  user: 1,
  daemon: 3,
  auth: 4,
  authpriv: 10,
  local0: 16,
  local1: 17,
  local2: 18,
  local3: 19,
  local4: 20,
  local5: 21,
  local6: 22,
  local7: 23,
} as const;
export type SyslogFacility = keyof typeof SYSLOG_FACILITIES;

const SEVERITY_WARNING = 4;
const SEVERITY_NOTICE = 5;
/** A blocked send (the receiver's queue full) waits at most this long, once per run of failures. */
const SYSLOG_SEND_TIMEOUT_MS = 200;
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
const EAGAIN = 11;

/** Refusals and failures are warnings, everything else a notice. */
function severityOf(e: AuditEvent): number {
  switch (e.event) {
    case 'authentication_failure':
    case 'authorization_refused':
    case 'call_refused':
    case 'limit':
      return SEVERITY_WARNING;
    case 'login':
      return e.rv === 'CKR_OK' ? SEVERITY_NOTICE : SEVERITY_WARNING;
    case 'config_reload':
      return e.outcome === 'error' ? SEVERITY_WARNING : SEVERITY_NOTICE;
    default:
      return SEVERITY_NOTICE;
  }
}

/** "Dec  2 07:10:00": the local-time stamp of RFC 3164 (what syslog(3) writes to /dev/log). */
function rfc3164Time(d: Date): string {
  const p2 = (n: number) => String(n).padStart(2, '0');
  return `${MONTHS[d.getMonth()]} ${String(d.getDate()).padStart(2, ' ')} ${p2(d.getHours())}:${p2(d.getMinutes())}:${p2(d.getSeconds())}`;
}

/**
 * One datagram per event to a local syslog socket (/dev/log: rsyslog,
 * syslog-ng, or journald's /run/systemd/journal/dev-log), the message being
 * the event's JSON object. Format "rfc3164": `<PRI>Mmm dd hh:mm:ss TAG[PID]: JSON`,
 * as syslog(3) sends locally; "rfc5424": `<PRI>1 TIMESTAMP HOST TAG PID EVENT - JSON`
 * (MSGID is the event kind). The socket path is looked up at each send, so a
 * restarted syslog daemon is found again. Sends are synchronous like the
 * file's; when the receiver's queue is full a send waits up to
 * SYSLOG_SEND_TIMEOUT_MS, and after a failure the next sends do not wait
 * until one succeeds (the daemon never stalls on a stuck syslog); lost
 * events are logged once per run of failures.
 */
class SyslogSink {
  private readonly addon = unixDgramAddon();
  private readonly fd: number;
  private failing = false;
  private lost = 0;
  private readonly host = os.hostname().replace(/[^\x21-\x7e]/g, '') || '-';

  constructor(
    private readonly s: SyslogSettings,
    private readonly log: Logger,
  ) {
    this.fd = this.addon.open(SYSLOG_SEND_TIMEOUT_MS);
  }

  write(e: AuditEvent, json: string, now: Date): void {
    const pri = SYSLOG_FACILITIES[this.s.facility] * 8 + severityOf(e);
    const head =
      this.s.format === 'rfc5424'
        ? `<${pri}>1 ${now.toISOString()} ${this.host} ${this.s.tag} ${process.pid} ${e.event} - `
        : `<${pri}>${rfc3164Time(now)} ${this.s.tag}[${process.pid}]: `;
    const n = this.addon.send(this.fd, this.s.path, Buffer.from(head + json), !this.failing);
    if (n >= 0) {
      if (this.failing) this.log('warn', `audit syslog ${this.s.path}: writing again after ${this.lost} lost events`);
      this.failing = false;
      this.lost = 0;
      return;
    }
    this.lost++;
    if (!this.failing) {
      const why = -n === EAGAIN ? "the receiver's queue is full" : errnoName(-n);
      this.log('error', `audit syslog ${this.s.path}: send failed, events are lost until it works again: ${why}`);
    }
    this.failing = true;
  }

  close(): void {
    this.addon.close(this.fd);
  }
}

function errnoName(n: number): string {
  for (const [name, v] of Object.entries(os.constants.errno)) if (v === n) return name;
  return String(n);
}

/** Keeps only flat public values: a Buffer or object that slipped into an event is dropped, never serialised. */
function flat(_key: string, v: unknown): unknown {
  if (v === null || typeof v !== 'object' || Array.isArray(v) || _key === '') return v;
  return undefined;
}

/**
 * Installs this process's audit sinks from the configuration; null (and
 * audit() stays a no-op) when none is configured. Every line is one JSON
 * object: `time` (ISO 8601), `event`, `pid`, `worker` (null in the primary
 * or a single-process daemon), then the event's own fields (conn, identity,
 * call, rv, ...); the syslog sink sends the same object as one message.
 * Throws when the file cannot be opened (or the syslog socket created): the
 * daemon does not start without the audit trail it was asked for.
 */
export function installAuditSinks(s: AuditSettings | undefined, worker: number | null, log: Logger): AuditSinks | null {
  if (s === undefined || (s.file === null && !s.stderr && (s.syslog ?? null) === null)) {
    setAuditSink(null);
    return null;
  }
  const file = s.file !== null ? new FileSink(s.file, log) : null;
  const syslog = s.syslog ? new SyslogSink(s.syslog, log) : null;
  const toStderr = s.stderr;
  const pid = process.pid;
  setAuditSink((e: AuditEvent) => {
    // time and event first for readers that scan lines; the event's own fields follow.
    const { event, ...fields } = e;
    const now = new Date();
    const json = JSON.stringify({ time: now.toISOString(), event, pid, worker, ...fields }, flat);
    const line = json + '\n';
    file?.write(line);
    syslog?.write(e, json, now);
    if (toStderr) writeStderrLine(line);
  });
  return {
    reopen: () => file?.reopen(),
    close: () => {
      setAuditSink(null);
      file?.close();
      syslog?.close();
    },
  };
}
