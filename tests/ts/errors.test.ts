import { ProxyError } from '../../src/errors';
import { AttributeShapeError } from '../../src/pkcs11/arch';
import { BackendError } from '../../src/bindings/pkcs11js-backend';
import { ConfigError } from '../../src/config/errors';
import { DaemonStartError } from '../../src/server/supervision/daemon';
import { EmbeddedDefaultError } from '../../src/server/embedded-default';
import { Pkcs11Error } from '../../src/pkcs11/errors';
import { RpcRecordTooLargeError } from '../../src/server/transport/errors';
import { ck } from '../../src/pkcs11/constants';

// One error base class: every deliberate failure carries a stable code and its class name.
it.each([
  [new AttributeShapeError(ck.CKA_CLASS, 'x'), 'ATTRIBUTE_SHAPE', 'AttributeShapeError'],
  [new BackendError('x'), 'BACKEND_LOAD', 'BackendError'],
  [new ConfigError('CONFIG_INVALID', 'f', 1, 2, 'r', 'k'), 'CONFIG_INVALID', 'ConfigError'],
  [new DaemonStartError('x'), 'DAEMON_START', 'DaemonStartError'],
  [new EmbeddedDefaultError('x'), 'EMBEDDED_DEFAULT', 'EmbeddedDefaultError'],
  [new Pkcs11Error(ck.CKR_PIN_INCORRECT), 'CKR_PIN_INCORRECT', 'Pkcs11Error'],
  [new RpcRecordTooLargeError(10, 5), 'RPC_ERR_RECORD_TOO_LARGE', 'RpcRecordTooLargeError'],
])('%p has a stable code', (e: ProxyError, code: string, name: string) => {
  expect(e).toBeInstanceOf(ProxyError);
  expect(e).toBeInstanceOf(Error);
  expect([e.code, e.name]).toEqual([code, name]);
});
