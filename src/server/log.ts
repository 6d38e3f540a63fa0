export type LogLevel = 'debug' | 'info' | 'warn' | 'error';
const ORDER: Record<LogLevel, number> = { debug: 0, info: 1, warn: 2, error: 3 };

export interface Logger {
  (level: LogLevel, msg: string): void;
}

/**
 * Logger writing one line per message to stderr. `PKCS11PROXYD_LOG=debug`
 * lowers the threshold without touching the configuration.
 */
export function createLogger(threshold: LogLevel = (process.env.PKCS11PROXYD_LOG as LogLevel) || 'info', tag = ''): Logger {
  const min = ORDER[threshold] ?? ORDER.info;
  return (level, msg) => {
    if (ORDER[level] < min) return;
    process.stderr.write(`${new Date().toISOString()} ${level.toUpperCase()} ${tag}${msg}\n`);
  };
}
