/**
 * The configuration loads without the pkcs11js native addon: its names and
 * numbers come from the generated constants. Requiring 'pkcs11js' here throws.
 */
jest.mock('pkcs11js', () => {
  throw new Error('pkcs11js must not be loaded by the configuration');
});

import fs from 'fs';
import os from 'os';
import path from 'path';
import { loadDaemonConfig, loadFilterConfig, mechanismByName } from '../../src/config';
import { ck, rvName } from '../../src/pkcs11/constants';
import { MECHANISM_SHAPES } from '../../src/pkcs11/mechanism-shapes';

test('filter.conf with mechanism names and the daemon loader load with pkcs11js unavailable', () => {
  expect(() => jest.requireMock('pkcs11js')).toThrow('pkcs11js must not be loaded');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'p11pd-noaddon-'));
  try {
    const filter = path.join(dir, 'filter.conf');
    fs.writeFileSync(filter, 'modules = [("a", "/a.so")]\nforbidden_mechanisms = [("a", [CKM_RSA_X_509, cKM_AES_GCM, 0x80000001])]\n');
    expect(loadFilterConfig(filter).forbiddenMechanisms[0].mechanisms).toEqual([ck.CKM_RSA_X_509, 0x1087, 0x80000001]);
    const server = path.join(dir, 's.conf');
    fs.writeFileSync(filter, 'modules = [("a", "/a.so")]\n');
    fs.writeFileSync(
      server,
      `netplex { service { name = "t"; protocol { name = "p"; address { type = "local"; path = "${dir}/s"; }; }; processor { type = "rpc_pkcs11"; filter_config = "${filter}"; plain_parameter_mechanisms = "0x80000001"; }; }; };`,
    );
    expect(loadDaemonConfig(server).server.plainParameterMechanisms).toEqual([0x80000001]);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  expect(mechanismByName('CKM_SHA256')).toBe(0x250);
  expect(mechanismByName('CKR_OK')).toBeUndefined();
  expect(rvName(ck.CKR_MECHANISM_PARAM_INVALID)).toBe('CKR_MECHANISM_PARAM_INVALID');
  expect(MECHANISM_SHAPES.get(ck.CKM_AES_GCM)).toEqual({ kind: 'refused', struct: 'CK_GCM_PARAMS' });
});
