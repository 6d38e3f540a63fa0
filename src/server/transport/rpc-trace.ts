/**
 * Default logger of the RPC transport: the `rpc` trace channel, on when PKCS11PROXYD_TRACE lists
 * `rpc` (comma-separated) or is `all` / `*`; otherwise silent. Writes to stderr.
 */
import type { RpcLogger } from './types';

export const TRACER_NAME = 'rpc';
export const TRACE_ENV = 'PKCS11PROXYD_TRACE';

export function traceEnabled(env: NodeJS.ProcessEnv = process.env): boolean {
  const raw = env[TRACE_ENV];
  if (!raw) return false;
  return raw
    .split(',')
    .map((s) => s.trim())
    .some((s) => s === TRACER_NAME || s === 'all' || s === '*');
}

export function createTraceLogger(env: NodeJS.ProcessEnv = process.env): RpcLogger {
  if (!traceEnabled(env)) return () => {};
  return (level, msg) => {
    process.stderr.write(`${new Date().toISOString()} ${level.toUpperCase()} ${TRACER_NAME} | ${msg}\n`);
  };
}
