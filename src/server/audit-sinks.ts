import fs from 'node:fs';
import { type AuditEvent, setAuditSink } from './audit';
import { writeStderrLine } from './log';
import type { Logger } from './log';
import type { AuditSettings } from './settings';

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
 * call, rv, ...). Throws when the file cannot be opened: the daemon does not
 * start without the audit trail it was asked for.
 */
export function installAuditSinks(s: AuditSettings | undefined, worker: number | null, log: Logger): AuditSinks | null {
  if (s === undefined || (s.file === null && !s.stderr)) {
    setAuditSink(null);
    return null;
  }
  const file = s.file !== null ? new FileSink(s.file, log) : null;
  const toStderr = s.stderr;
  const pid = process.pid;
  setAuditSink((e: AuditEvent) => {
    // time and event first for readers that scan lines; the event's own fields follow.
    const { event, ...fields } = e;
    const line = JSON.stringify({ time: new Date().toISOString(), event, pid, worker, ...fields }, flat) + '\n';
    file?.write(line);
    if (toStderr) writeStderrLine(line);
  });
  return {
    reopen: () => file?.reopen(),
    close: () => {
      setAuditSink(null);
      file?.close();
    },
  };
}
