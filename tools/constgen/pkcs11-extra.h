/*
 * Corrections and additions to /usr/include/p11-kit-1/p11-kit/pkcs11.h
 * (PKCS#11 2.40 as p11-kit ships it), read by tools/constgen. A name defined
 * here replaces the header's value. Values from the PKCS#11 2.20/2.40
 * specifications (the OASIS pkcs11t.h, as NSS ships it).
 */

/* p11-kit numbers these 0x1c0..0x1c4; OASIS 2.40 pkcs11t.h has 0x1b5..0x1b9. */
#define CKR_EXCEEDED_MAX_ITERATIONS  (0x1b5UL)
#define CKR_FIPS_SELF_TEST_FAILED    (0x1b6UL)
#define CKR_LIBRARY_LOAD_FAILED      (0x1b7UL)
#define CKR_PIN_TOO_WEAK             (0x1b8UL)
#define CKR_PUBLIC_KEY_INVALID       (0x1b9UL)

/* Not in the header. */
#define CKA_SUBPRIME_BITS       (0x134UL) /* 2.20 spelling of CKA_SUB_PRIME_BITS */
#define CKK_CAST5               (0x18UL)  /* 2.20 alias of CKK_CAST128 */
#define CKF_ERROR_STATE         (0x01000000UL)
#define CKF_EC_F_2M             (0x00200000UL)
#define CKF_EC_ECPARAMETERS     (0x00400000UL)
