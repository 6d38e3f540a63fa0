/**
 * Jest setupFiles: the suites run as root and start the daemon with
 * configurations that have no service.user; PKCS11PROXYD_ALLOW_ROOT=1 is the
 * explicit allow_root for all of them (privilege.ts). The privilege drop
 * tests unset it where they check the refusal.
 */
process.env.PKCS11PROXYD_ALLOW_ROOT = '1';
