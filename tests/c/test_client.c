/*
 * Integration tests of libp11client against a running daemon.
 * Environment: P11CLIENT_LIB (library path), PKCS11PROXY_* (client
 * settings), P11TEST_RESTART_CMD (restarts the daemon; restart test only).
 * Usage: test_client [group...]; groups: args sizes threads fork restart
 * config.
 * Prints "N passed, M failed" last; exits non-zero on any failure.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <p11-kit/pkcs11.h>

static int passed, failed;
static CK_FUNCTION_LIST_PTR f;
static pthread_mutex_t count_lock = PTHREAD_MUTEX_INITIALIZER;

#define CHECK(cond, ...)                                                       \
  do {                                                                         \
    pthread_mutex_lock(&count_lock);                                           \
    if (cond) {                                                                \
      passed++;                                                                \
    } else {                                                                   \
      failed++;                                                                \
      fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                     \
      fprintf(stderr, __VA_ARGS__);                                            \
      fputc('\n', stderr);                                                     \
    }                                                                          \
    pthread_mutex_unlock(&count_lock);                                         \
  } while (0)

#define CHECK_RV(call, expected)                                               \
  do {                                                                         \
    CK_RV r_ = (call);                                                         \
    CHECK(r_ == (CK_RV)(expected), "%s -> 0x%lx, expected %s", #call,          \
          (unsigned long)r_, #expected);                                       \
  } while (0)

static const char PIN[] = "1234";
static CK_UTF8CHAR RSA_LABEL[] = "ctest-rsa";

static CK_SLOT_ID token_slot(void) {
  CK_SLOT_ID slots[16];
  CK_ULONG n = 16;
  if (f->C_GetSlotList(CK_TRUE, slots, &n) != CKR_OK || n == 0) {
    fprintf(stderr, "no token slot\n");
    exit(2);
  }
  return slots[0];
}

static CK_SESSION_HANDLE open_rw(CK_SLOT_ID slot) {
  CK_SESSION_HANDLE s = CK_INVALID_HANDLE;
  CK_RV rv = f->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL,
                              NULL, &s);
  CHECK(rv == CKR_OK, "C_OpenSession -> 0x%lx", (unsigned long)rv);
  return s;
}

/* Finds the test RSA key of the given class; generates the pair once. */
static CK_OBJECT_HANDLE find_key(CK_SESSION_HANDLE s, CK_OBJECT_CLASS cls) {
  CK_ATTRIBUTE t[] = {{CKA_CLASS, &cls, sizeof cls},
                      {CKA_LABEL, RSA_LABEL, sizeof RSA_LABEL - 1}};
  CK_OBJECT_HANDLE h = CK_INVALID_HANDLE;
  CK_ULONG n = 0;
  if (f->C_FindObjectsInit(s, t, 2) != CKR_OK)
    return CK_INVALID_HANDLE;
  f->C_FindObjects(s, &h, 1, &n);
  f->C_FindObjectsFinal(s);
  return n == 1 ? h : CK_INVALID_HANDLE;
}

static void ensure_rsa_key(CK_SESSION_HANDLE s) {
  if (find_key(s, CKO_PRIVATE_KEY) != CK_INVALID_HANDLE)
    return;
  CK_MECHANISM m = {CKM_RSA_PKCS_KEY_PAIR_GEN, NULL, 0};
  CK_ULONG bits = 1024;
  CK_BYTE e[] = {1, 0, 1};
  CK_BBOOL yes = CK_TRUE;
  CK_ATTRIBUTE pub[] = {{CKA_TOKEN, &yes, sizeof yes},
                        {CKA_VERIFY, &yes, sizeof yes},
                        {CKA_ENCRYPT, &yes, sizeof yes},
                        {CKA_MODULUS_BITS, &bits, sizeof bits},
                        {CKA_PUBLIC_EXPONENT, e, sizeof e},
                        {CKA_LABEL, RSA_LABEL, sizeof RSA_LABEL - 1}};
  CK_ATTRIBUTE priv[] = {{CKA_TOKEN, &yes, sizeof yes},
                         {CKA_PRIVATE, &yes, sizeof yes},
                         {CKA_SENSITIVE, &yes, sizeof yes},
                         {CKA_SIGN, &yes, sizeof yes},
                         {CKA_DECRYPT, &yes, sizeof yes},
                         {CKA_LABEL, RSA_LABEL, sizeof RSA_LABEL - 1}};
  CK_OBJECT_HANDLE hpub, hpriv;
  CHECK_RV(f->C_GenerateKeyPair(s, &m, pub, 6, priv, 6, &hpub, &hpriv),
           CKR_OK);
}

/* Signs and verifies once; returns true on success. */
static bool sign_verify(CK_SESSION_HANDLE s, const char *msg) {
  CK_OBJECT_HANDLE priv = find_key(s, CKO_PRIVATE_KEY);
  CK_OBJECT_HANDLE pub = find_key(s, CKO_PUBLIC_KEY);
  if (priv == CK_INVALID_HANDLE || pub == CK_INVALID_HANDLE)
    return false;
  CK_MECHANISM m = {CKM_SHA256_RSA_PKCS, NULL, 0};
  CK_BYTE sig[512];
  CK_ULONG sig_len = sizeof sig;
  if (f->C_SignInit(s, &m, priv) != CKR_OK)
    return false;
  if (f->C_Sign(s, (CK_BYTE_PTR)msg, strlen(msg), sig, &sig_len) != CKR_OK)
    return false;
  if (f->C_VerifyInit(s, &m, pub) != CKR_OK)
    return false;
  return f->C_Verify(s, (CK_BYTE_PTR)msg, strlen(msg), sig, sig_len) == CKR_OK;
}

static CK_RV fake_create(CK_VOID_PTR_PTR m) {
  *m = NULL;
  return CKR_OK;
}
static CK_RV fake_mutex(CK_VOID_PTR m) {
  (void)m;
  return CKR_OK;
}

static bool blank_padded(const CK_UTF8CHAR *s, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (s[i] == '\0')
      return false;
  return true;
}

/* ---- group: args ---- */
static void test_args(void) {
  CK_ULONG n = 0;
  CK_INFO info;
  CHECK_RV(f->C_GetSlotList(CK_FALSE, NULL, &n), CKR_CRYPTOKI_NOT_INITIALIZED);
  CHECK_RV(f->C_Finalize(NULL), CKR_CRYPTOKI_NOT_INITIALIZED);
  CHECK_RV(f->C_GetInfo(&info), CKR_CRYPTOKI_NOT_INITIALIZED);

  CK_C_INITIALIZE_ARGS ia;
  memset(&ia, 0, sizeof ia);
  ia.pReserved = &ia;
  CHECK_RV(f->C_Initialize(&ia), CKR_ARGUMENTS_BAD);
  memset(&ia, 0, sizeof ia);
  ia.CreateMutex = fake_create;
  CHECK_RV(f->C_Initialize(&ia), CKR_ARGUMENTS_BAD);
  ia.DestroyMutex = fake_mutex;
  ia.LockMutex = fake_mutex;
  ia.UnlockMutex = fake_mutex;
  CHECK_RV(f->C_Initialize(&ia), CKR_CANT_LOCK);
  ia.flags = CKF_OS_LOCKING_OK;
  CHECK_RV(f->C_Initialize(&ia), CKR_OK);
  CHECK_RV(f->C_Initialize(NULL), CKR_CRYPTOKI_ALREADY_INITIALIZED);

  CHECK_RV(f->C_GetInfo(NULL), CKR_ARGUMENTS_BAD);
  CHECK_RV(f->C_GetInfo(&info), CKR_OK);
  CHECK(blank_padded(info.manufacturerID, 32) &&
            blank_padded(info.libraryDescription, 32),
        "CK_INFO strings are blank padded");
  CHECK_RV(f->C_GetSlotList(CK_TRUE, NULL, NULL), CKR_ARGUMENTS_BAD);
  CK_SLOT_ID slot = token_slot();
  CK_TOKEN_INFO ti;
  CHECK_RV(f->C_GetTokenInfo(slot, &ti), CKR_OK);
  CHECK(blank_padded(ti.label, 32) && blank_padded(ti.model, 16) &&
            blank_padded(ti.serialNumber, 16) && memcmp(ti.label, "test ", 5) == 0,
        "CK_TOKEN_INFO strings are blank padded");
  CK_SLOT_INFO si;
  CHECK_RV(f->C_GetSlotInfo(slot, &si), CKR_OK);
  CHECK(blank_padded(si.slotDescription, 64) &&
            blank_padded(si.manufacturerID, 32),
        "CK_SLOT_INFO strings are blank padded");
  CHECK_RV(f->C_GetSlotInfo(slot, NULL), CKR_ARGUMENTS_BAD);
  CHECK_RV(f->C_GetTokenInfo(0xdeadbeef, &ti), CKR_SLOT_ID_INVALID);
  CHECK_RV(f->C_OpenSession(slot, CKF_SERIAL_SESSION, NULL, NULL, NULL),
           CKR_ARGUMENTS_BAD);
  CK_SESSION_HANDLE s;
  CHECK_RV(f->C_OpenSession(slot, 0, NULL, NULL, &s),
           CKR_SESSION_PARALLEL_NOT_SUPPORTED);
  CHECK_RV(f->C_CloseSession(0x7777), CKR_SESSION_HANDLE_INVALID);

  s = open_rw(slot);
  CHECK_RV(f->C_Login(s, CKU_USER, NULL, 4), CKR_ARGUMENTS_BAD);
  CHECK_RV(f->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR) "9999", 4),
           CKR_PIN_INCORRECT);
  CHECK_RV(f->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)PIN, 4), CKR_OK);
  CHECK_RV(f->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)PIN, 4),
           CKR_USER_ALREADY_LOGGED_IN);
  ensure_rsa_key(s);
  CK_ULONG cnt;
  CHECK_RV(f->C_FindObjects(s, NULL, 5, &cnt), CKR_ARGUMENTS_BAD);
  CHECK_RV(f->C_FindObjects(s, NULL, 0, NULL), CKR_ARGUMENTS_BAD);
  CK_MECHANISM m = {CKM_SHA256_RSA_PKCS, NULL, 0};
  CK_OBJECT_HANDLE priv = find_key(s, CKO_PRIVATE_KEY);
  CHECK(priv != CK_INVALID_HANDLE, "private key found");
  CHECK_RV(f->C_SignInit(s, NULL, priv), CKR_ARGUMENTS_BAD);
  CK_MECHANISM bad_param = {CKM_SHA256_RSA_PKCS, NULL, 8};
  CHECK_RV(f->C_SignInit(s, &bad_param, priv), CKR_ARGUMENTS_BAD);
  CHECK_RV(f->C_SignInit(s, &m, priv), CKR_OK);
  CHECK_RV(f->C_Sign(s, (CK_BYTE_PTR) "x", 1, NULL, NULL), CKR_ARGUMENTS_BAD);
  CK_ULONG sl = 0;
  CHECK_RV(f->C_Sign(s, NULL, 3, NULL, &sl), CKR_ARGUMENTS_BAD);
  CK_ATTRIBUTE bad_tmpl[] = {{CKA_LABEL, NULL, 5}};
  CHECK_RV(f->C_FindObjectsInit(s, bad_tmpl, 1), CKR_ARGUMENTS_BAD);
  CHECK_RV(f->C_GetAttributeValue(s, priv, NULL, 1), CKR_ARGUMENTS_BAD);
  CHECK_RV(f->C_GenerateRandom(s, NULL, 8), CKR_ARGUMENTS_BAD);
  CK_BYTE rnd[32];
  CHECK_RV(f->C_GenerateRandom(s, rnd, sizeof rnd), CKR_OK);
  /* GCM parameters hold pointers: refused before anything is sent. */
  CK_BYTE iv[12] = {0}, key_bytes[16] = {0};
  CK_GCM_PARAMS gcm = {iv, sizeof iv, 96, NULL, 0, 128};
  CK_MECHANISM mgcm = {CKM_AES_GCM, &gcm, sizeof gcm};
  CK_OBJECT_CLASS sk = CKO_SECRET_KEY;
  CK_KEY_TYPE kt = CKK_AES;
  CK_BBOOL yes = CK_TRUE;
  CK_ATTRIBUTE aes[] = {{CKA_CLASS, &sk, sizeof sk},
                        {CKA_KEY_TYPE, &kt, sizeof kt},
                        {CKA_ENCRYPT, &yes, sizeof yes},
                        {CKA_DECRYPT, &yes, sizeof yes},
                        {CKA_VALUE, key_bytes, sizeof key_bytes}};
  CK_OBJECT_HANDLE haes = CK_INVALID_HANDLE;
  CHECK_RV(f->C_CreateObject(s, aes, 5, &haes), CKR_OK);
  CHECK_RV(f->C_EncryptInit(s, &mgcm, haes), CKR_MECHANISM_PARAM_INVALID);
  CHECK_RV(f->C_DestroyObject(s, haes), CKR_OK);
  CK_ULONG ifcount = 0;
  CK_FUNCTION_LIST_PTR fl;
  CHECK_RV(f->C_GetFunctionList(&fl), CKR_OK);
  CHECK(fl == f, "C_GetFunctionList returns the same list");
  CHECK_RV(f->C_CloseSession(s), CKR_OK);
  CHECK_RV(f->C_GetSessionInfo(s, NULL), CKR_SESSION_HANDLE_INVALID);
  CHECK_RV(f->C_Finalize(&ifcount), CKR_ARGUMENTS_BAD);
  CHECK_RV(f->C_Finalize(NULL), CKR_OK);
  CHECK_RV(f->C_Finalize(NULL), CKR_CRYPTOKI_NOT_INITIALIZED);
}

/* ---- group: sizes ---- */
static void test_sizes(void) {
  CHECK_RV(f->C_Initialize(NULL), CKR_OK);
  CK_ULONG n = 0;
  CHECK_RV(f->C_GetSlotList(CK_FALSE, NULL, &n), CKR_OK);
  CHECK(n >= 2, "SoftHSM shows the token slot and a free slot (%lu)", n);
  CK_SLOT_ID slots[8];
  CK_ULONG small = 1;
  CHECK_RV(f->C_GetSlotList(CK_FALSE, slots, &small), CKR_BUFFER_TOO_SMALL);
  CHECK(small == n, "BUFFER_TOO_SMALL reports %lu slots (got %lu)", n, small);
  CK_ULONG zero = 0;
  CHECK_RV(f->C_GetSlotList(CK_FALSE, slots, &zero), CKR_BUFFER_TOO_SMALL);
  CHECK(zero == n, "capacity 0 reports the count");
  CK_ULONG full = 8;
  CHECK_RV(f->C_GetSlotList(CK_FALSE, slots, &full), CKR_OK);
  CHECK(full == n, "full list has %lu entries", n);

  CK_SLOT_ID slot = token_slot();
  CK_ULONG nm = 0;
  CHECK_RV(f->C_GetMechanismList(slot, NULL, &nm), CKR_OK);
  CHECK(nm > 10, "mechanism count %lu", nm);
  CK_MECHANISM_TYPE mechs[256];
  CK_ULONG two = 2;
  CHECK_RV(f->C_GetMechanismList(slot, mechs, &two), CKR_BUFFER_TOO_SMALL);
  CHECK(two == nm, "mechanism BUFFER_TOO_SMALL count");
  CK_ULONG cap = 256;
  CHECK_RV(f->C_GetMechanismList(slot, mechs, &cap), CKR_OK);
  CHECK(cap == nm, "mechanism list length");
  CK_MECHANISM_INFO mi;
  CHECK_RV(f->C_GetMechanismInfo(slot, CKM_SHA256_RSA_PKCS, &mi), CKR_OK);
  CHECK(mi.flags & CKF_SIGN, "SHA256_RSA_PKCS can sign");

  CK_SESSION_HANDLE s = open_rw(slot);
  CHECK_RV(f->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)PIN, 4), CKR_OK);
  ensure_rsa_key(s);

  /* Two data objects so C_FindObjects with capacity 1 needs two calls. */
  CK_OBJECT_CLASS dc = CKO_DATA;
  CK_UTF8CHAR dl[] = "ctest-data";
  CK_BYTE v1[] = "one", v2[] = "two";
  CK_ATTRIBUTE d1[] = {{CKA_CLASS, &dc, sizeof dc},
                       {CKA_LABEL, dl, sizeof dl - 1},
                       {CKA_VALUE, v1, 3}};
  CK_ATTRIBUTE d2[] = {{CKA_CLASS, &dc, sizeof dc},
                       {CKA_LABEL, dl, sizeof dl - 1},
                       {CKA_VALUE, v2, 3}};
  CK_OBJECT_HANDLE o1, o2;
  CHECK_RV(f->C_CreateObject(s, d1, 3, &o1), CKR_OK);
  CHECK_RV(f->C_CreateObject(s, d2, 3, &o2), CKR_OK);
  CK_ATTRIBUTE q[] = {{CKA_CLASS, &dc, sizeof dc},
                      {CKA_LABEL, dl, sizeof dl - 1}};
  CHECK_RV(f->C_FindObjectsInit(s, q, 2), CKR_OK);
  CK_OBJECT_HANDLE found[4];
  CK_ULONG got = 99, total = 0;
  for (int i = 0; i < 4; i++) {
    CHECK_RV(f->C_FindObjects(s, found + total, 1, &got), CKR_OK);
    CHECK(got <= 1, "at most one handle per call (%lu)", got);
    total += got;
    if (got == 0)
      break;
  }
  CHECK(total == 2, "found both data objects (%lu)", total);
  CHECK_RV(f->C_FindObjectsFinal(s), CKR_OK);

  /* C_GetAttributeValue: size query, exact buffer, short buffer. */
  CK_ATTRIBUTE a[2] = {{CKA_LABEL, NULL, 0}, {CKA_VALUE, NULL, 0}};
  CHECK_RV(f->C_GetAttributeValue(s, o1, a, 2), CKR_OK);
  CHECK(a[0].ulValueLen == sizeof dl - 1 && a[1].ulValueLen == 3,
        "attribute size query %lu/%lu", a[0].ulValueLen, a[1].ulValueLen);
  CK_BYTE lb[64], vb[2];
  a[0].pValue = lb;
  a[0].ulValueLen = sizeof lb;
  a[1].pValue = vb;
  a[1].ulValueLen = sizeof vb;
  CHECK_RV(f->C_GetAttributeValue(s, o1, a, 2), CKR_BUFFER_TOO_SMALL);
  CHECK(a[0].ulValueLen == sizeof dl - 1 && memcmp(lb, dl, sizeof dl - 1) == 0,
        "label returned beside a short buffer");
  CHECK(a[1].ulValueLen == CK_UNAVAILABLE_INFORMATION,
        "short buffer gives CK_UNAVAILABLE_INFORMATION");
  CK_BYTE vb3[3];
  CK_ATTRIBUTE a3 = {CKA_VALUE, vb3, 3};
  CHECK_RV(f->C_GetAttributeValue(s, o1, &a3, 1), CKR_OK);
  CHECK(memcmp(vb3, "one", 3) == 0, "value read back");
  CK_ULONG bits = 0;
  CK_OBJECT_HANDLE pub = find_key(s, CKO_PUBLIC_KEY);
  CK_ATTRIBUTE ab = {CKA_MODULUS_BITS, &bits, sizeof bits};
  CHECK_RV(f->C_GetAttributeValue(s, pub, &ab, 1), CKR_OK);
  CHECK(bits == 1024, "CK_ULONG attribute (modulus bits %lu)", bits);
  CK_OBJECT_HANDLE priv = find_key(s, CKO_PRIVATE_KEY);
  CK_ATTRIBUTE sens = {CKA_PRIVATE_EXPONENT, NULL, 0};
  CHECK_RV(f->C_GetAttributeValue(s, priv, &sens, 1), CKR_ATTRIBUTE_SENSITIVE);
  CHECK(sens.ulValueLen == CK_UNAVAILABLE_INFORMATION,
        "sensitive attribute length unavailable");
  CHECK_RV(f->C_DestroyObject(s, o1), CKR_OK);
  CHECK_RV(f->C_DestroyObject(s, o2), CKR_OK);

  /* C_Sign: size query, short buffer, then the cached result. */
  CK_MECHANISM m = {CKM_SHA256_RSA_PKCS, NULL, 0};
  const char *msg = "size query";
  CHECK_RV(f->C_SignInit(s, &m, priv), CKR_OK);
  CK_ULONG sl = 0;
  CHECK_RV(f->C_Sign(s, (CK_BYTE_PTR)msg, strlen(msg), NULL, &sl), CKR_OK);
  CHECK(sl == 128, "signature length %lu", sl);
  CK_BYTE sig[256];
  CK_ULONG shortl = 10;
  CHECK_RV(f->C_Sign(s, (CK_BYTE_PTR)msg, strlen(msg), sig, &shortl),
           CKR_BUFFER_TOO_SMALL);
  CHECK(shortl == 128, "BUFFER_TOO_SMALL reports 128 (%lu)", shortl);
  CK_ULONG fl = sizeof sig;
  CHECK_RV(f->C_Sign(s, (CK_BYTE_PTR)msg, strlen(msg), sig, &fl), CKR_OK);
  CHECK(fl == 128, "signature written");
  CHECK_RV(f->C_Sign(s, (CK_BYTE_PTR)msg, strlen(msg), sig, &fl),
           CKR_OPERATION_NOT_INITIALIZED);
  CHECK_RV(f->C_VerifyInit(s, &m, pub), CKR_OK);
  CHECK_RV(f->C_Verify(s, (CK_BYTE_PTR)msg, strlen(msg), sig, 128), CKR_OK);

  /* Multi-part sign with a size-queried final. */
  CHECK_RV(f->C_SignInit(s, &m, priv), CKR_OK);
  CHECK_RV(f->C_SignUpdate(s, (CK_BYTE_PTR) "size ", 5), CKR_OK);
  CHECK_RV(f->C_SignUpdate(s, (CK_BYTE_PTR) "query", 5), CKR_OK);
  CK_ULONG fsl = 0;
  CHECK_RV(f->C_SignFinal(s, NULL, &fsl), CKR_OK);
  CK_BYTE sig2[256];
  CHECK_RV(f->C_SignFinal(s, sig2, &fsl), CKR_OK);
  CHECK(fsl == 128 && memcmp(sig, sig2, 128) == 0,
        "multi-part signature equals single-part (PKCS#1 v1.5)");

  /* Digest size query. */
  CK_MECHANISM md = {CKM_SHA256, NULL, 0};
  CHECK_RV(f->C_DigestInit(s, &md), CKR_OK);
  CK_ULONG dlen = 0;
  CHECK_RV(f->C_Digest(s, (CK_BYTE_PTR) "abc", 3, NULL, &dlen), CKR_OK);
  CK_BYTE dg[32];
  CHECK(dlen == 32, "digest length %lu", dlen);
  CHECK_RV(f->C_Digest(s, (CK_BYTE_PTR) "abc", 3, dg, &dlen), CKR_OK);
  CHECK(dg[0] == 0xba && dg[1] == 0x78 && dg[31] == 0xad, "SHA-256(abc)");

  /* AES-CBC-PAD multi-part encryption and decryption with size queries. */
  CK_OBJECT_CLASS sk = CKO_SECRET_KEY;
  CK_KEY_TYPE kt = CKK_AES;
  CK_ULONG klen = 16;
  CK_BBOOL yes = CK_TRUE;
  CK_ATTRIBUTE kt_[] = {{CKA_CLASS, &sk, sizeof sk},
                        {CKA_KEY_TYPE, &kt, sizeof kt},
                        {CKA_VALUE_LEN, &klen, sizeof klen},
                        {CKA_ENCRYPT, &yes, sizeof yes},
                        {CKA_DECRYPT, &yes, sizeof yes}};
  CK_MECHANISM kg = {CKM_AES_KEY_GEN, NULL, 0};
  CK_OBJECT_HANDLE aes;
  CHECK_RV(f->C_GenerateKey(s, &kg, kt_, 5, &aes), CKR_OK);
  CK_BYTE iv[16] = {1, 2, 3};
  CK_MECHANISM cbc = {CKM_AES_CBC_PAD, iv, sizeof iv};
  CK_BYTE pt[40];
  memset(pt, 'p', sizeof pt);
  CK_BYTE ct[64];
  CK_ULONG ctl = 0, part = 0;
  CHECK_RV(f->C_EncryptInit(s, &cbc, aes), CKR_OK);
  CHECK_RV(f->C_EncryptUpdate(s, pt, 20, NULL, &part), CKR_OK);
  CHECK(part == 16, "first update yields one block (%lu)", part);
  CHECK_RV(f->C_EncryptUpdate(s, pt, 20, ct, &part), CKR_OK);
  ctl += part;
  part = sizeof ct - ctl;
  CHECK_RV(f->C_EncryptUpdate(s, pt + 20, 20, ct + ctl, &part), CKR_OK);
  ctl += part;
  part = 0;
  CHECK_RV(f->C_EncryptFinal(s, NULL, &part), CKR_OK);
  CHECK_RV(f->C_EncryptFinal(s, ct + ctl, &part), CKR_OK);
  ctl += part;
  CHECK(ctl == 48, "ciphertext length %lu", ctl);
  CHECK_RV(f->C_DecryptInit(s, &cbc, aes), CKR_OK);
  CK_BYTE back[64];
  CK_ULONG bl = 0;
  CHECK_RV(f->C_Decrypt(s, ct, ctl, NULL, &bl), CKR_OK);
  CHECK(bl >= 40, "plaintext size query %lu", bl);
  bl = sizeof back;
  CHECK_RV(f->C_Decrypt(s, ct, ctl, back, &bl), CKR_OK);
  CHECK(bl == 40 && memcmp(back, pt, 40) == 0, "round trip");
  CHECK_RV(f->C_CloseSession(s), CKR_OK);
  CHECK_RV(f->C_Finalize(NULL), CKR_OK);
}

/* ---- group: threads ---- */
#define N_THREADS 4
#define N_SIGS 10
static CK_SLOT_ID thread_slot;

static void *signer(void *arg) {
  long id = (long)arg;
  CK_SESSION_HANDLE s = open_rw(thread_slot);
  char msg[64];
  int ok = 0;
  for (int i = 0; i < N_SIGS; i++) {
    snprintf(msg, sizeof msg, "thread %ld message %d", id, i);
    if (sign_verify(s, msg))
      ok++;
  }
  CHECK(ok == N_SIGS, "thread %ld: %d/%d signatures verified", id, ok, N_SIGS);
  CHECK_RV(f->C_CloseSession(s), CKR_OK);
  return NULL;
}

static void test_threads(void) {
  CK_C_INITIALIZE_ARGS ia;
  memset(&ia, 0, sizeof ia);
  ia.flags = CKF_OS_LOCKING_OK;
  CHECK_RV(f->C_Initialize(&ia), CKR_OK);
  thread_slot = token_slot();
  CK_SESSION_HANDLE s = open_rw(thread_slot);
  CHECK_RV(f->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)PIN, 4), CKR_OK);
  ensure_rsa_key(s);
  pthread_t t[N_THREADS];
  for (long i = 0; i < N_THREADS; i++)
    pthread_create(&t[i], NULL, signer, (void *)i);
  for (int i = 0; i < N_THREADS; i++)
    pthread_join(t[i], NULL);
  /* Login state is per application: still logged in on the first session. */
  CK_SESSION_INFO info;
  CHECK_RV(f->C_GetSessionInfo(s, &info), CKR_OK);
  CHECK(info.state == CKS_RW_USER_FUNCTIONS, "session state %lu", info.state);
  CHECK_RV(f->C_Logout(s), CKR_OK);
  CK_SESSION_HANDLE s2 = open_rw(thread_slot);
  CHECK(find_key(s2, CKO_PRIVATE_KEY) == CK_INVALID_HANDLE,
        "private key invisible after C_Logout");
  CHECK_RV(f->C_CloseAllSessions(thread_slot), CKR_OK);
  CHECK_RV(f->C_GetSessionInfo(s, &info), CKR_SESSION_HANDLE_INVALID);
  CHECK_RV(f->C_Finalize(NULL), CKR_OK);
}

/* ---- group: fork ---- */
static void test_fork(void) {
  CHECK_RV(f->C_Initialize(NULL), CKR_OK);
  CK_SLOT_ID slot = token_slot();
  CK_SESSION_HANDLE s = open_rw(slot);
  CHECK_RV(f->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)PIN, 4), CKR_OK);
  ensure_rsa_key(s);
  CHECK(sign_verify(s, "before fork"), "parent signs before fork");
  fflush(NULL);
  pid_t pid = fork();
  if (pid == 0) {
    int bad = 0;
    CK_ULONG n;
    CK_SESSION_INFO si;
    bad |= f->C_GetSlotList(CK_TRUE, NULL, &n) != CKR_CRYPTOKI_NOT_INITIALIZED;
    bad |= (f->C_GetSessionInfo(s, &si) != CKR_CRYPTOKI_NOT_INITIALIZED) << 1;
    bad |= (f->C_Initialize(NULL) != CKR_OK) << 2;
    CK_SESSION_HANDLE cs = CK_INVALID_HANDLE;
    bad |= (f->C_OpenSession(token_slot(), CKF_SERIAL_SESSION, NULL, NULL,
                             &cs) != CKR_OK)
           << 3;
    bad |= (f->C_Login(cs, CKU_USER, (CK_UTF8CHAR_PTR)PIN, 4) != CKR_OK) << 4;
    bad |= (!sign_verify(cs, "in child")) << 5;
    bad |= (f->C_Finalize(NULL) != CKR_OK) << 6;
    exit(bad);
  }
  CHECK(pid > 0, "fork");
  int status = 0;
  waitpid(pid, &status, 0);
  CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
        "child: not initialized, then re-initializes and signs (status 0x%x)",
        status);
  CHECK(sign_verify(s, "after fork"), "parent still signs after fork");
  CHECK_RV(f->C_Finalize(NULL), CKR_OK);
}

/* ---- group: restart ---- */
static void test_restart(void) {
  const char *cmd = getenv("P11TEST_RESTART_CMD");
  if (cmd == NULL) {
    CHECK(0, "P11TEST_RESTART_CMD not set");
    return;
  }
  CHECK_RV(f->C_Initialize(NULL), CKR_OK);
  CK_SLOT_ID slot = token_slot();
  CK_SESSION_HANDLE s = open_rw(slot);
  CHECK_RV(f->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)PIN, 4), CKR_OK);
  ensure_rsa_key(s);
  CHECK(sign_verify(s, "before restart"), "signs before restart");
  CHECK(system(cmd) == 0, "restart command");
  CK_SESSION_INFO si;
  CK_RV rv = f->C_GetSessionInfo(s, &si);
  CHECK(rv == CKR_DEVICE_ERROR || rv == CKR_SESSION_HANDLE_INVALID,
        "session call after restart fails cleanly (0x%lx)", (unsigned long)rv);
  CHECK_RV(f->C_GetSessionInfo(s, &si), CKR_SESSION_HANDLE_INVALID);
  CK_ULONG n = 0;
  rv = f->C_GetSlotList(CK_TRUE, NULL, &n);
  CHECK(rv == CKR_OK || rv == CKR_FUNCTION_FAILED,
        "slot call after restart: OK after reconnect or FUNCTION_FAILED "
        "(0x%lx)",
        (unsigned long)rv);
  CHECK_RV(f->C_Finalize(NULL), CKR_OK);
  CHECK_RV(f->C_Initialize(NULL), CKR_OK);
  CK_SESSION_HANDLE s2 = open_rw(token_slot());
  CHECK_RV(f->C_Login(s2, CKU_USER, (CK_UTF8CHAR_PTR)PIN, 4), CKR_OK);
  CHECK(sign_verify(s2, "after restart"), "signs after re-initialization");
  CHECK_RV(f->C_Finalize(NULL), CKR_OK);
}

/* ---- group: config ---- */
static void test_config(void) {
  char *sock = strdup(getenv("PKCS11PROXY_SOCKET_PATH"));
  char *alias = strdup(getenv("PKCS11PROXY_LIBNAME"));
  CK_ULONG n;
  setenv("PKCS11PROXY_SOCKET_PATH", "tls://127.0.0.1:9", 1);
  CHECK_RV(f->C_Initialize(NULL), CKR_DEVICE_ERROR);
  CHECK_RV(f->C_GetSlotList(CK_TRUE, NULL, &n), CKR_CRYPTOKI_NOT_INITIALIZED);
  setenv("PKCS11PROXY_SOCKET_PATH", "unix:/nonexistent/p11.sock", 1);
  CHECK_RV(f->C_Initialize(NULL), CKR_DEVICE_ERROR);
  setenv("PKCS11PROXY_SOCKET_PATH", "no-port-here", 1);
  CHECK_RV(f->C_Initialize(NULL), CKR_GENERAL_ERROR);
  setenv("PKCS11PROXY_SOCKET_PATH", sock, 1);
  setenv("PKCS11PROXY_RPC_TIMEOUT", "soon", 1);
  CHECK_RV(f->C_Initialize(NULL), CKR_GENERAL_ERROR);
  unsetenv("PKCS11PROXY_RPC_TIMEOUT");
  setenv("PKCS11PROXY_LIBNAME", "no-such-alias", 1);
  CK_RV rv = f->C_Initialize(NULL);
  CHECK(rv != CKR_OK, "unknown alias refused (0x%lx)", (unsigned long)rv);
  if (rv == CKR_OK)
    f->C_Finalize(NULL);

  /* Settings from the config file. */
  const char *conf = getenv("PKCS11PROXY_CONF");
  FILE *cf = conf ? fopen(conf, "w") : NULL;
  CHECK(cf != NULL, "config file writable");
  if (cf != NULL) {
    fprintf(cf, "# test\nsocket_path = unix:%s\nlibname = \"%s\"\n"
                "rpc_timeout = 30\nsession_connections = shared\n",
            sock, alias);
    fclose(cf);
  }
  unsetenv("PKCS11PROXY_SOCKET_PATH");
  unsetenv("PKCS11PROXY_LIBNAME");
  CHECK_RV(f->C_Initialize(NULL), CKR_OK);
  CK_SLOT_ID slot = token_slot();
  CK_SESSION_HANDLE s1 = open_rw(slot), s2 = open_rw(slot);
  CHECK(s1 != s2, "distinct session handles");
  CHECK_RV(f->C_Login(s1, CKU_USER, (CK_UTF8CHAR_PTR)PIN, 4), CKR_OK);
  ensure_rsa_key(s1);
  CHECK(sign_verify(s1, "shared 1") && sign_verify(s2, "shared 2"),
        "shared mode: both sessions sign");
  CHECK_RV(f->C_Finalize(NULL), CKR_OK);
  cf = conf ? fopen(conf, "w") : NULL;
  if (cf != NULL) {
    fprintf(cf, "socket_path = %s\nbogus = 1\n", sock);
    fclose(cf);
  }
  CHECK_RV(f->C_Initialize(NULL), CKR_GENERAL_ERROR);
  if (conf != NULL)
    truncate(conf, 0);
  setenv("PKCS11PROXY_SOCKET_PATH", sock, 1);
  setenv("PKCS11PROXY_LIBNAME", alias, 1);
  free(sock);
  free(alias);
}

int main(int argc, char **argv) {
  const char *lib = getenv("P11CLIENT_LIB");
  if (lib == NULL) {
    fprintf(stderr, "P11CLIENT_LIB is not set\n");
    return 2;
  }
  void *h = dlopen(lib, RTLD_NOW | RTLD_LOCAL);
  if (h == NULL) {
    fprintf(stderr, "dlopen: %s\n", dlerror());
    return 2;
  }
  CK_C_GetFunctionList gfl =
      (CK_C_GetFunctionList)(void (*)(void))dlsym(h, "C_GetFunctionList");
  if (gfl == NULL || gfl(&f) != CKR_OK) {
    fprintf(stderr, "C_GetFunctionList missing\n");
    return 2;
  }
  CHECK(dlsym(h, "px_session_enter") == NULL, "internal symbols hidden");
  CHECK(dlsym(h, "C_GetInterfaceList") != NULL, "C_GetInterfaceList exported");
  static const struct {
    const char *name;
    void (*fn)(void);
  } groups[] = {{"args", test_args},       {"sizes", test_sizes},
                {"threads", test_threads}, {"fork", test_fork},
                {"restart", test_restart},
                {"config", test_config}};
  for (size_t g = 0; g < sizeof groups / sizeof groups[0]; g++) {
    bool run = argc < 2;
    for (int i = 1; i < argc; i++)
      if (strcmp(argv[i], groups[g].name) == 0)
        run = true;
    if (!run)
      continue;
    int before = failed;
    groups[g].fn();
    printf("group %s: %s\n", groups[g].name, failed == before ? "ok" : "FAILED");
  }
  /* No dlclose: valgrind then resolves the library's frames in leak reports. */
  (void)h;
  printf("%d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
