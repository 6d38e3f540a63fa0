export {
  ConfigError,
  ConfigInvalidError,
  ConfigIoError,
  ConfigSyntaxError,
  type ConfigErrorCode,
} from './errors';
export {
  type ListenAddress,
  type LogLevel,
  type ServerConfig,
  type TlsSettings,
  loadServerConfig,
  parseServerConfig,
} from './server-config';
export {
  type FilterAction,
  type FilterConfig,
  type ModuleAlias,
  REDACTED,
  loadFilterConfig,
  mechanismByName,
  parseFilterConfig,
} from './filter-config';
export { formatFilterConfig, quoteConfigString } from './filter-format';
export {
  BOOLEAN_WORDS,
  FILTER_ACTION_NAMES,
  PADDING_OPERATIONS,
  PKCS11_FUNCTION_NAMES,
  type FilterActionName,
  type PaddingOperation,
  type Pkcs11FunctionName,
} from './filter-names';
export { type StrPattern, compileStrPattern } from './str-regex';
export { DEFAULT_MAX_RECORD_SIZE, serverSchema } from './server-schema';
export { filterSchema } from './filter-schema';
export {
  type DaemonConfig,
  checkFilterEnforced,
  checkServerEnforced,
  loadDaemonConfig,
  refuseNotEnforced,
} from './daemon-config';
export { HONOURED, NOT_ENFORCED, type PendingKey } from './not-enforced';
export { type EffectiveRuntime, effectiveConfiguration } from './effective';
