import { ProxyError } from '../errors';
/** Stable codes carried by every configuration failure. Tests and callers check these, not messages. */
export type ConfigErrorCode = 'CONFIG_INVALID' | 'CONFIG_SYNTAX' | 'CONFIG_IO';

/**
 * A configuration file that cannot be used. `line`/`column` are 1-based and
 * point at the offending token (0 when the file could not be read at all).
 * `key` is the dotted path of the offending entry (`netplex.service[0].name`),
 * `rule` the rule it broke, without position or key.
 */
export class ConfigError extends ProxyError {
  constructor(
    readonly code: ConfigErrorCode,
    readonly file: string,
    readonly line: number,
    readonly column: number,
    readonly rule: string,
    readonly key?: string,
  ) {
    super(
      line > 0
        ? `${file}:${line}:${column}: ${key !== undefined ? `key '${key}': ` : ''}${rule}`
        : `${file}: ${rule}`,
    );
    this.name = new.target.name;
  }
}

/** Bad tokens or grammar: unterminated string/comment, missing `;`, bad number. */
export class ConfigSyntaxError extends ConfigError {
  constructor(file: string, line: number, column: number, rule: string) {
    super('CONFIG_SYNTAX', file, line, column, rule);
  }
}

/** Well-formed text whose content breaks the schema or a cross-field rule. */
export class ConfigInvalidError extends ConfigError {
  constructor(file: string, line: number, column: number, key: string | undefined, rule: string) {
    super('CONFIG_INVALID', file, line, column, rule, key);
  }
}

/** The file could not be read. */
export class ConfigIoError extends ConfigError {
  constructor(
    file: string,
    rule: string,
    readonly cause?: unknown,
  ) {
    super('CONFIG_IO', file, 0, 0, rule);
  }
}
