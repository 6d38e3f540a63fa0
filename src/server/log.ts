import pino from 'pino';
import type { DestinationStream } from 'pino';

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';
const LEVELS: ReadonlySet<string> = new Set<LogLevel>(['debug', 'info', 'warn', 'error']);

/** `text`: one human line per message (`<ISO time> <LEVEL> <tag><msg>`); `json`: one pino JSON object per line. */
export type LogFormat = 'text' | 'json';

export interface Logger {
  (level: LogLevel, msg: string): void;
}

/** PKCS11PROXYD_LOG (threshold) when it names a level, else `fallback`. */
export function envLogLevel(fallback: LogLevel = 'info'): LogLevel {
  const v = process.env.PKCS11PROXYD_LOG;
  return v !== undefined && LEVELS.has(v) ? (v as LogLevel) : fallback;
}

/** PKCS11PROXYD_LOG_FORMAT=json|text, else `fallback`. */
export function envLogFormat(fallback: LogFormat = 'text'): LogFormat {
  const v = process.env.PKCS11PROXYD_LOG_FORMAT;
  return v === 'json' || v === 'text' ? v : fallback;
}

/**
 * stderr, written asynchronously (sonic-boom on fd 2): a slow reader of the
 * pipe never blocks the event loop. pino registers a synchronous flush on
 * process exit, so lines logged before `process.exit()` or an uncaught
 * exception are written; only a SIGKILL or an abort can lose the last
 * buffered lines. Workers are forked with stderr inherited: their lines reach
 * the same descriptor (the terminal, the detached daemon's log file, or the
 * journal under systemd), each line in one write.
 */
let stderrStream: DestinationStream | null = null;
function stderr(): DestinationStream {
  stderrStream ??= pino.destination({ fd: 2, sync: false });
  return stderrStream;
}

/** Flushes buffered log lines now (before a deliberate exit). */
export function flushLogs(): void {
  (stderrStream as { flushSync?: () => void } | null)?.flushSync?.();
}

interface JsonLine {
  time: string;
  level: string;
  tag?: string;
  msg: string;
}

/** pino's JSON line back into the text shape operators and tests read. */
function textDestination(out: DestinationStream): DestinationStream {
  return {
    write(line: string): void {
      const o = JSON.parse(line) as JsonLine;
      out.write(`${o.time} ${o.level.toUpperCase()} ${o.tag ?? ''}${o.msg}\n`);
    },
  };
}

/**
 * Logger on pino. `PKCS11PROXYD_LOG=debug` lowers the threshold without
 * touching the configuration; `PKCS11PROXYD_LOG_FORMAT=json` (or
 * processor.log_format) switches to JSON lines with `time`, `level`, `pid`,
 * `worker`, `msg`.
 */
export function createLogger(threshold: LogLevel = envLogLevel(), tag = '', format: LogFormat = envLogFormat(), worker: number | null = null): Logger {
  const json = format === 'json';
  const base: Record<string, unknown> = json ? { pid: process.pid } : {};
  if (json && worker !== null) base.worker = worker;
  if (!json && tag !== '') base.tag = tag;
  const p = pino(
    {
      level: LEVELS.has(threshold) ? threshold : 'info',
      base,
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    json ? stderr() : textDestination(stderr()),
  );
  return (level, msg) => p[level](msg);
}

/** One whole line onto the log's stderr stream, in order with the log lines (the audit trail's stderr sink). */
export function writeStderrLine(line: string): void {
  stderr().write(line);
}
