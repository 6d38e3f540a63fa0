import { traceEnabled } from '../../src/server/transport/rpc-trace';

describe('rpc trace channel', () => {
  it.each([
    [undefined, false],
    ['', false],
    ['pool', false],
    ['rpcx', false],
    ['rpc', true],
    ['pool, rpc', true],
    ['all', true],
    ['*', true],
  ])('PKCS11PROXYD_TRACE=%p -> %p', (value, enabled) => {
    expect(traceEnabled(value === undefined ? {} : { PKCS11PROXYD_TRACE: value })).toBe(enabled);
  });
});
