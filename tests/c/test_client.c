/*
 * Integration tests of libp11client against a running daemon.
 * Environment: P11CLIENT_LIB (library path), PKCS11PROXY_* (client
 * settings), P11TEST_RESTART_CMD (restarts the daemon; restart and app
 * groups), DAEMON (ours or camlcrush).
 * Usage: test_client [group...]; groups: args sizes threads fork
 * forkthread manysessions restart config mechanisms app (DAEMON=ours
 * expects the typed mechanism procedures and connections joined into one
 * application).
 * Prints "N passed, M failed" last; exits non-zero on any failure.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <sched.h>
#include <stdatomic.h>
#include <pthread.h>
#include <stdbool.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
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

/* Whether the daemon under test has the typed mechanism procedures:
 * ours has, Caml Crush answers PROC_UNAVAIL and the library falls back. */
static bool typed_daemon(void) {
  const char *d = getenv("DAEMON");
  return d != NULL && strcmp(d, "ours") == 0;
}

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

/* A read-write session on `slot`, logged in as the user, with the RSA key. */
static CK_SESSION_HANDLE user_session(CK_SLOT_ID slot) {
  CK_SESSION_HANDLE s = open_rw(slot);
  CHECK_RV(f->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)PIN, 4), CKR_OK);
  ensure_rsa_key(s);
  return s;
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
  /* GCM parameters hold pointers: without the typed procedures (Caml
   * Crush) they are refused before anything is sent. */
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
  if (typed_daemon()) {
    CK_GCM_PARAMS nul = {NULL, sizeof iv, 96, NULL, 0, 128};
    CK_MECHANISM mnul = {CKM_AES_GCM, &nul, sizeof nul};
    CHECK_RV(f->C_EncryptInit(s, &mnul, haes), CKR_MECHANISM_PARAM_INVALID);
  } else {
    CHECK_RV(f->C_EncryptInit(s, &mgcm, haes), CKR_MECHANISM_PARAM_INVALID);
  }
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

  CK_SESSION_HANDLE s = user_session(slot);

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

  /* Empty input through a valid pointer is data (google/pkcs11test's
   * DigestTestVectors): SHA-256 of nothing, not CKR_ARGUMENTS_BAD. */
  CHECK_RV(f->C_DigestInit(s, &md), CKR_OK);
  dlen = sizeof dg;
  CHECK_RV(f->C_Digest(s, dg, 0, dg, &dlen), CKR_OK);
  CHECK(dlen == 32 && dg[0] == 0xe3 && dg[1] == 0xb0 && dg[31] == 0x55,
        "SHA-256 of empty input");

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
  /* 1 MiB each way: requests and replies larger than the transport's
   * 64 KiB buffer. */
  const CK_ULONG big = 1024 * 1024;
  CK_BYTE *bin = malloc(big), *bct = malloc(big + 16), *bback = malloc(big);
  for (CK_ULONG i = 0; i < big; i++)
    bin[i] = (CK_BYTE)(i * 7 + (i >> 12));
  CK_ULONG bctl = big + 16, bbl = big;
  CHECK_RV(f->C_EncryptInit(s, &cbc, aes), CKR_OK);
  CHECK_RV(f->C_Encrypt(s, bin, big, bct, &bctl), CKR_OK);
  CHECK(bctl == big + 16, "1 MiB ciphertext length %lu", bctl);
  CHECK_RV(f->C_DecryptInit(s, &cbc, aes), CKR_OK);
  CHECK_RV(f->C_Decrypt(s, bct, bctl, bback, &bbl), CKR_OK);
  CHECK(bbl == big && memcmp(bback, bin, big) == 0, "1 MiB round trip");
  free(bin);
  free(bct);
  free(bback);
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
  CK_SESSION_HANDLE s = user_session(thread_slot);
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
  CK_SESSION_HANDLE s = user_session(slot);
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

/* ---- group: forkthread ---- */
/* One thread keeps a slow call in flight (RSA-4096 key pair generation,
 * seconds in the daemon) while another forks. The child must re-initialize
 * and work: nothing the in-flight call holds (connection lock, transport
 * state) may be needed in the child. The child's new sockets reuse the
 * parent's descriptor numbers, so transport state keyed by descriptor that
 * a parent thread left busy would block the child's calls. */
struct midcall {
  CK_SESSION_HANDLE s;
  atomic_int tid;
  atomic_bool stop;
  int calls, ok;
};

static void *keygen_loop(void *arg) {
  struct midcall *m = arg;
  atomic_store(&m->tid, (int)gettid());
  CK_MECHANISM mech = {CKM_RSA_PKCS_KEY_PAIR_GEN, NULL, 0};
  CK_ULONG bits = 4096;
  CK_BYTE e[] = {1, 0, 1};
  CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
  CK_ATTRIBUTE pub[] = {{CKA_TOKEN, &no, sizeof no},
                        {CKA_VERIFY, &yes, sizeof yes},
                        {CKA_MODULUS_BITS, &bits, sizeof bits},
                        {CKA_PUBLIC_EXPONENT, e, sizeof e}};
  CK_ATTRIBUTE priv[] = {{CKA_TOKEN, &no, sizeof no},
                         {CKA_SIGN, &yes, sizeof yes}};
  while (!atomic_load(&m->stop)) {
    CK_OBJECT_HANDLE hpub, hpriv;
    m->calls++;
    if (f->C_GenerateKeyPair(m->s, &mech, pub, 4, priv, 2, &hpub, &hpriv) ==
        CKR_OK) {
      m->ok++;
      f->C_DestroyObject(m->s, hpub);
      f->C_DestroyObject(m->s, hpriv);
    }
  }
  return NULL;
}

/* Whether thread `tid` of this process is blocked in poll/ppoll, i.e.
 * waiting for a reply (/proc/PID/task/TID/syscall starts with the number). */
static bool in_poll(int tid) {
  char path[64], buf[64];
  snprintf(path, sizeof path, "/proc/self/task/%d/syscall", tid);
  FILE *fp = fopen(path, "r");
  if (fp == NULL)
    return false;
  bool yes = fgets(buf, sizeof buf, fp) != NULL &&
             (strtol(buf, NULL, 10) == SYS_poll ||
              strtol(buf, NULL, 10) == SYS_ppoll);
  fclose(fp);
  return yes;
}

static int count_sockets(void);

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void fork_during_init(void);

static void test_forkthread(void) {
  CHECK_RV(f->C_Initialize(NULL), CKR_OK);
  CK_SLOT_ID slot = token_slot();
  CK_SESSION_HANDLE s = user_session(slot);
  struct midcall m = {.s = open_rw(slot)};
  pthread_t t;
  pthread_create(&t, NULL, keygen_loop, &m);
  /* Polls (no sleep as synchronisation) until the thread waits for the
   * daemon's reply; 60 s deadline. */
  bool mid = false;
  for (double end = now_s() + 60; !mid && now_s() < end;) {
    int tid = atomic_load(&m.tid);
    mid = tid != 0 && in_poll(tid);
    if (!mid)
      sched_yield();
  }
  CHECK(mid, "the key generation thread is waiting for the daemon");
  int res_pipe[2];
  CHECK(pipe(res_pipe) == 0, "pipe");
  fflush(NULL);
  pid_t pid = fork();
  if (pid == 0) {
    close(res_pipe[0]);
    int bad = 0;
    /* The parent's sockets, the one with the call in flight included,
     * are closed in the child. */
    bad |= (count_sockets() != 0) << 8;
    CK_SESSION_INFO si;
    bad |= f->C_GetSessionInfo(m.s, &si) != CKR_CRYPTOKI_NOT_INITIALIZED;
    bad |= (f->C_Initialize(NULL) != CKR_OK) << 1;
    CK_SESSION_HANDLE cs = CK_INVALID_HANDLE, cs2 = CK_INVALID_HANDLE;
    CK_SLOT_ID cslot = token_slot();
    bad |= (f->C_OpenSession(cslot, CKF_SERIAL_SESSION, NULL, NULL, &cs) !=
            CKR_OK)
           << 2;
    bad |= (f->C_OpenSession(cslot, CKF_SERIAL_SESSION, NULL, NULL, &cs2) !=
            CKR_OK)
           << 3;
    bad |= (f->C_Login(cs, CKU_USER, (CK_UTF8CHAR_PTR)PIN, 4) != CKR_OK) << 4;
    bad |= (!sign_verify(cs, "in child")) << 5;
    bad |= (!sign_verify(cs2, "in child, second session")) << 6;
    bad |= (f->C_Finalize(NULL) != CKR_OK) << 7;
    bad |= (count_sockets() != 0) << 9;
    /* The result goes through the pipe and the child ends with SIGKILL:
     * what the parent thread's call had allocated is referenced only from
     * that thread's stack, which has no thread here, so a leak check at exit
     * (valgrind, LeakSanitizer) would report it. */
    fflush(NULL);
    if (write(res_pipe[1], &bad, sizeof bad) != sizeof bad)
      _exit(3);
    kill(getpid(), SIGKILL);
  }
  CHECK(pid > 0, "fork");
  close(res_pipe[1]);
  /* Waits for the child's result with a deadline: a deadlock fails. */
  struct pollfd pf = {.fd = res_pipe[0], .events = POLLIN};
  int bad = -1;
  if (poll(&pf, 1, 60 * 1000) == 1 &&
      read(res_pipe[0], &bad, sizeof bad) != sizeof bad)
    bad = -2;
  close(res_pipe[0]);
  if (bad == -1)
    kill(pid, SIGKILL);
  waitpid(pid, NULL, 0);
  CHECK(bad == 0,
        "child forked mid-call re-initializes and signs in time (%s 0x%x)",
        bad == -1 ? "deadlocked: no result after 60 s," : "result", bad);
  atomic_store(&m.stop, true);
  pthread_join(t, NULL);
  CHECK(m.calls > 0 && m.ok == m.calls, "parent thread: %d/%d key pairs",
        m.ok, m.calls);
  CHECK(sign_verify(s, "after fork"), "parent still signs after fork");
  CHECK_RV(f->C_Finalize(NULL), CKR_OK);
  fork_during_init();
}

/* A thread keeps opening and closing the library (C_Initialize, C_Finalize):
 * whenever it waits for the daemon, its connection is outside the state's
 * connection list (being set up, or being finalized). A child forked then
 * must still find none of the parent's sockets open, and work. */
struct initloop {
  atomic_int tid;
  atomic_bool stop;
  int rounds, ok;
};

static void *init_loop(void *arg) {
  struct initloop *l = arg;
  atomic_store(&l->tid, (int)gettid());
  while (!atomic_load(&l->stop)) {
    l->rounds++;
    if (f->C_Initialize(NULL) == CKR_OK && f->C_Finalize(NULL) == CKR_OK)
      l->ok++;
  }
  return NULL;
}

static void fork_during_init(void) {
  struct initloop l = {0};
  pthread_t t;
  pthread_create(&t, NULL, init_loop, &l);
  bool mid = false;
  for (double end = now_s() + 60; !mid && now_s() < end;) {
    int tid = atomic_load(&l.tid);
    mid = tid != 0 && in_poll(tid);
    if (!mid)
      sched_yield();
  }
  CHECK(mid, "the initialize loop waits for the daemon");
  int res_pipe[2];
  CHECK(pipe(res_pipe) == 0, "pipe");
  fflush(NULL);
  pid_t pid = fork();
  if (pid == 0) {
    close(res_pipe[0]);
    int bad = (count_sockets() != 0);
    bad |= (f->C_Initialize(NULL) != CKR_OK) << 1;
    CK_SESSION_HANDLE cs = CK_INVALID_HANDLE;
    bad |= (f->C_OpenSession(token_slot(), CKF_SERIAL_SESSION, NULL, NULL,
                             &cs) != CKR_OK)
           << 2;
    bad |= (f->C_Login(cs, CKU_USER, (CK_UTF8CHAR_PTR)PIN, 4) != CKR_OK) << 3;
    bad |= (!sign_verify(cs, "in child of an initialize loop")) << 4;
    bad |= (f->C_Finalize(NULL) != CKR_OK) << 5;
    fflush(NULL);
    if (write(res_pipe[1], &bad, sizeof bad) != sizeof bad)
      _exit(3);
    kill(getpid(), SIGKILL); /* see test_forkthread */
  }
  close(res_pipe[1]);
  struct pollfd pf = {.fd = res_pipe[0], .events = POLLIN};
  int bad = -1;
  if (poll(&pf, 1, 60 * 1000) == 1 &&
      read(res_pipe[0], &bad, sizeof bad) != sizeof bad)
    bad = -2;
  close(res_pipe[0]);
  if (bad == -1)
    kill(pid, SIGKILL);
  waitpid(pid, NULL, 0);
  CHECK(bad == 0,
        "child forked during C_Initialize/C_Finalize: no inherited socket, "
        "works (%s 0x%x)",
        bad == -1 ? "deadlocked: no result after 60 s," : "result", bad);
  atomic_store(&l.stop, true);
  pthread_join(t, NULL);
  CHECK(l.rounds > 0 && l.ok == l.rounds, "initialize loop: %d/%d rounds",
        l.ok, l.rounds);
}

/* ---- group: manysessions ---- */
/* The library's session cap (4096) of sessions on one connection (shared
 * mode), a call on each, then closing every other one: the table's lookup
 * finds each handle among thousands, and a closed handle is gone. */
#define MANY_SESSIONS 4096
static void test_manysessions(void) {
  setenv("PKCS11PROXY_SESSION_CONNECTIONS", "shared", 1);
  CHECK_RV(f->C_Initialize(NULL), CKR_OK);
  unsetenv("PKCS11PROXY_SESSION_CONNECTIONS");
  CK_SLOT_ID slot = token_slot();
  CK_SESSION_HANDLE *h = calloc(MANY_SESSIONS, sizeof *h);
  size_t n = 0;
  CK_RV rv = CKR_OK;
  while (n < MANY_SESSIONS &&
         (rv = f->C_OpenSession(slot, CKF_SERIAL_SESSION, NULL, NULL,
                                &h[n])) == CKR_OK)
    n++;
  /* A daemon may cap an application's sessions below the library's. */
  CHECK(n == MANY_SESSIONS || (n >= 1000 && rv == CKR_SESSION_COUNT),
        "%zu sessions opened (last rv 0x%lx)", n, (unsigned long)rv);
  CK_SESSION_HANDLE extra;
  CHECK_RV(f->C_OpenSession(slot, CKF_SERIAL_SESSION, NULL, NULL, &extra),
           CKR_SESSION_COUNT);
  size_t ok = 0, distinct = 1;
  for (size_t i = 0; i < n; i++) {
    CK_SESSION_INFO si;
    if (f->C_GetSessionInfo(h[i], &si) == CKR_OK && si.slotID == slot &&
        si.state == CKS_RO_PUBLIC_SESSION)
      ok++;
    if (i > 0 && h[i] != h[i - 1])
      distinct++;
  }
  CHECK(ok == n && distinct == n, "C_GetSessionInfo on each: %zu/%zu ok",
        ok, n);
  size_t closed = 0;
  for (size_t i = 0; i < n; i += 2)
    closed += f->C_CloseSession(h[i]) == CKR_OK;
  CHECK(closed == (n + 1) / 2, "closed %zu of %zu", closed, (n + 1) / 2);
  size_t right = 0;
  for (size_t i = 0; i < n; i++) {
    CK_SESSION_INFO si;
    rv = f->C_GetSessionInfo(h[i], &si);
    right += rv == (i % 2 == 0 ? CKR_SESSION_HANDLE_INVALID : CKR_OK);
  }
  CHECK(right == n, "closed handles invalid, open ones valid: %zu/%zu", right,
        n);
  CK_SESSION_HANDLE again = CK_INVALID_HANDLE;
  CHECK_RV(f->C_OpenSession(slot, CKF_SERIAL_SESSION, NULL, NULL, &again),
           CKR_OK);
  CK_SESSION_INFO si;
  CHECK_RV(f->C_GetSessionInfo(again, &si), CKR_OK);
  CHECK_RV(f->C_CloseAllSessions(slot), CKR_OK);
  CHECK_RV(f->C_GetSessionInfo(h[n - 1], &si), CKR_SESSION_HANDLE_INVALID);
  CHECK_RV(f->C_GetSessionInfo(again, &si), CKR_SESSION_HANDLE_INVALID);
  free(h);
  CHECK_RV(f->C_Finalize(NULL), CKR_OK);
}

/* ---- group: restart ---- */
static atomic_int sigpipes;
static void count_sigpipe(int sig) {
  (void)sig;
  atomic_fetch_add(&sigpipes, 1);
}

static void test_restart(void) {
  const char *cmd = getenv("P11TEST_RESTART_CMD");
  if (cmd == NULL) {
    CHECK(0, "P11TEST_RESTART_CMD not set");
    return;
  }
  CHECK_RV(f->C_Initialize(NULL), CKR_OK);
  CK_SLOT_ID slot = token_slot();
  CK_SESSION_HANDLE s = user_session(slot);
  CHECK(sign_verify(s, "before restart"), "signs before restart");
  CHECK(system(cmd) == 0, "restart command");
  /* The next call writes to a dead socket (EPIPE). The library writes
   * with MSG_NOSIGNAL and never touches the signal mask, so a SIGPIPE the
   * application already had pending (blocked in this thread) stays
   * pending. */
  sigset_t pipe_set, old_mask, pending;
  sigemptyset(&pipe_set);
  sigaddset(&pipe_set, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe_set, &old_mask);
  pthread_kill(pthread_self(), SIGPIPE);
  CK_SESSION_INFO si;
  CK_RV rv = f->C_GetSessionInfo(s, &si);
  CHECK(rv == CKR_DEVICE_ERROR || rv == CKR_SESSION_HANDLE_INVALID,
        "session call after restart fails cleanly (0x%lx)", (unsigned long)rv);
  sigemptyset(&pending);
  CHECK(sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE) == 1,
        "the application's own pending SIGPIPE is left alone");
  struct timespec zero = {0, 0};
  sigtimedwait(&pipe_set, NULL, &zero);
  pthread_sigmask(SIG_SETMASK, &old_mask, NULL);
  CHECK_RV(f->C_GetSessionInfo(s, &si), CKR_SESSION_HANDLE_INVALID);
  /* The control connection's write to the dead daemon raises no SIGPIPE
   * for the application's handler either. */
  struct sigaction sa, old_sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = count_sigpipe;
  sigaction(SIGPIPE, &sa, &old_sa);
  atomic_store(&sigpipes, 0);
  CK_ULONG n = 0;
  rv = f->C_GetSlotList(CK_TRUE, NULL, &n);
  CHECK(atomic_load(&sigpipes) == 0, "no SIGPIPE delivered (%d)",
        atomic_load(&sigpipes));
  sigaction(SIGPIPE, &old_sa, NULL);
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

/* ---- group: timeout ---- */
/* A daemon that takes the first call and never answers it, or answers
 * part of a record (its mark announces more than is sent). */
struct stall_server {
  int lfd;
  bool partial;
};

static void *stall_serve(void *arg) {
  struct stall_server *st = arg;
  struct pollfd p = {.fd = st->lfd, .events = POLLIN};
  if (poll(&p, 1, 10000) != 1)
    return NULL;
  int fd = accept(st->lfd, NULL, NULL);
  if (fd < 0)
    return NULL;
  unsigned char buf[4096] = {0};
  p.fd = fd;
  bool answered = false;
  /* Until the client closes (it does once its call has failed), 10 s at most. */
  while (poll(&p, 1, 10000) == 1 && recv(fd, buf, sizeof buf, 0) > 0) {
    if (st->partial && !answered) {
      /* Last fragment of 64 bytes; 8 of them follow: the xid and REPLY. */
      unsigned char part[12] = {0x80, 0, 0, 64};
      memcpy(part + 4, buf + 4, 4);
      part[11] = 1;
      send(fd, part, sizeof part, MSG_NOSIGNAL);
      answered = true;
    }
  }
  close(fd);
  return NULL;
}

/* rpc_timeout bounds a round trip whether no byte of the reply comes or
 * only part of it: the call fails after about that long, never hangs. */
static void test_timeout(void) {
  char dir[] = "/tmp/p11timeout.XXXXXX";
  bool made = mkdtemp(dir) != NULL;
  CHECK(made, "temp dir");
  if (!made)
    return;
  char path[sizeof dir + 16];
  snprintf(path, sizeof path, "%s/sock", dir);
  char *saved_sock = getenv("PKCS11PROXY_SOCKET_PATH")
                         ? strdup(getenv("PKCS11PROXY_SOCKET_PATH"))
                         : NULL;
  for (int partial = 0; partial < 2; partial++) {
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    unlink(path);
    int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    bool up = lfd >= 0 && bind(lfd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
              listen(lfd, 4) == 0;
    CHECK(up, "stalling server listens");
    if (!up)
      break;
    struct stall_server st = {.lfd = lfd, .partial = partial == 1};
    pthread_t t;
    pthread_create(&t, NULL, stall_serve, &st);
    setenv("PKCS11PROXY_SOCKET_PATH", path, 1);
    setenv("PKCS11PROXY_RPC_TIMEOUT", "1", 1);
    double t0 = now_s();
    CK_RV rv = f->C_Initialize(NULL);
    double took = now_s() - t0;
    CHECK(rv == CKR_DEVICE_ERROR, "%s: C_Initialize fails with CKR_DEVICE_ERROR (0x%lx)",
          partial ? "part of a reply" : "no reply", (unsigned long)rv);
    CHECK(took >= 0.9 && took < 5, "%s: failed after %.2f s (rpc_timeout 1 s)",
          partial ? "part of a reply" : "no reply", took);
    if (rv == CKR_OK)
      f->C_Finalize(NULL);
    pthread_join(t, NULL);
    close(lfd);
  }
  unsetenv("PKCS11PROXY_RPC_TIMEOUT");
  if (saved_sock != NULL)
    setenv("PKCS11PROXY_SOCKET_PATH", saved_sock, 1);
  free(saved_sock);
  unlink(path);
  rmdir(dir);
}

/* ---- group: config ---- */
static void test_config(void) {
  char *sock = strdup(getenv("PKCS11PROXY_SOCKET_PATH"));
  char *alias = strdup(getenv("PKCS11PROXY_LIBNAME"));
  CK_ULONG n;
  /* tls:// needs a CA file; an unreadable one is a bad setting too. */
  char *ca = getenv("PKCS11PROXY_CA_FILE") ? strdup(getenv("PKCS11PROXY_CA_FILE")) : NULL;
  unsetenv("PKCS11PROXY_CA_FILE");
  setenv("PKCS11PROXY_SOCKET_PATH", "tls://127.0.0.1:9", 1);
  CHECK_RV(f->C_Initialize(NULL), CKR_GENERAL_ERROR);
  CHECK_RV(f->C_GetSlotList(CK_TRUE, NULL, &n), CKR_CRYPTOKI_NOT_INITIALIZED);
  setenv("PKCS11PROXY_CA_FILE", "/nonexistent/ca.pem", 1);
  CHECK_RV(f->C_Initialize(NULL), CKR_GENERAL_ERROR);
  if (ca != NULL)
    setenv("PKCS11PROXY_CA_FILE", ca, 1);
  else
    unsetenv("PKCS11PROXY_CA_FILE");
  free(ca);
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
  setenv("PKCS11PROXY_LIBNAME", alias, 1);

  /* A relative Unix path: a '/' anywhere means a path (host names have
   * none), as Caml Crush's Unix client reads any value as a path. */
  char cwd[4096];
  if (sock[0] == '/' && getcwd(cwd, sizeof cwd) != NULL && chdir("/") == 0) {
    setenv("PKCS11PROXY_SOCKET_PATH", sock + 1, 1);
    CHECK_RV(f->C_Initialize(NULL), CKR_OK);
    CK_ULONG nslots = 0;
    CHECK_RV(f->C_GetSlotList(CK_TRUE, NULL, &nslots), CKR_OK);
    CHECK_RV(f->C_Finalize(NULL), CKR_OK);
    CHECK(chdir(cwd) == 0, "back to the working directory");
    setenv("PKCS11PROXY_SOCKET_PATH", sock, 1);
  }

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

/* ---- group: mechanisms ---- */

/* Parameter struct p11-kit's header lacks (OASIS layout). */
struct t_eddsa_params {
  CK_BBOOL phFlag;
  CK_ULONG ulContextDataLen;
  CK_BYTE_PTR pContextData;
};

static CK_OBJECT_HANDLE gen_aes(CK_SESSION_HANDLE s, CK_ULONG len) {
  CK_OBJECT_CLASS sk = CKO_SECRET_KEY;
  CK_KEY_TYPE kt = CKK_AES;
  CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
  CK_ATTRIBUTE t[] = {{CKA_CLASS, &sk, sizeof sk},
                      {CKA_KEY_TYPE, &kt, sizeof kt},
                      {CKA_VALUE_LEN, &len, sizeof len},
                      {CKA_TOKEN, &no, sizeof no},
                      {CKA_SENSITIVE, &no, sizeof no},
                      {CKA_EXTRACTABLE, &yes, sizeof yes},
                      {CKA_ENCRYPT, &yes, sizeof yes},
                      {CKA_DECRYPT, &yes, sizeof yes},
                      {CKA_WRAP, &yes, sizeof yes},
                      {CKA_UNWRAP, &yes, sizeof yes},
                      {CKA_DERIVE, &yes, sizeof yes}};
  CK_MECHANISM kg = {CKM_AES_KEY_GEN, NULL, 0};
  CK_OBJECT_HANDLE h = CK_INVALID_HANDLE;
  CHECK_RV(f->C_GenerateKey(s, &kg, t, sizeof t / sizeof t[0], &h), CKR_OK);
  return h;
}

/* AES-ECB encryption of one fixed block: compares keys without reading them. */
static bool ecb_block(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE k,
                      CK_BYTE out[16]) {
  CK_MECHANISM m = {CKM_AES_ECB, NULL, 0};
  CK_BYTE in[16] = "fixed block 0123";
  CK_ULONG n = 16;
  return f->C_EncryptInit(s, &m, k) == CKR_OK &&
         f->C_Encrypt(s, in, 16, out, &n) == CKR_OK && n == 16;
}

static CK_ULONG read_value(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE o,
                           CK_BYTE *buf, CK_ULONG cap) {
  CK_ATTRIBUTE a = {CKA_VALUE, buf, cap};
  return f->C_GetAttributeValue(s, o, &a, 1) == CKR_OK ? a.ulValueLen : 0;
}

static void mech_gcm(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE aes, bool typed) {
  CK_BYTE iv[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
  CK_BYTE aad[] = "header";
  CK_GCM_PARAMS gp = {iv, sizeof iv, 96, aad, sizeof aad - 1, 128};
  CK_MECHANISM m = {CKM_AES_GCM, &gp, sizeof gp};
  CK_BYTE pt[] = "GCM through the proxy";
  CK_BYTE ct[64], back[64];
  CK_ULONG ctl = 0, bl = sizeof back;
  /* Malformed parameters never leave the process. */
  CK_GCM_PARAMS nul = {NULL, 12, 96, NULL, 0, 128};
  CK_MECHANISM mn = {CKM_AES_GCM, &nul, sizeof nul};
  CHECK_RV(f->C_EncryptInit(s, &mn, aes), CKR_MECHANISM_PARAM_INVALID);
  CK_MECHANISM ms = {CKM_AES_GCM, &gp, sizeof gp - 1};
  CHECK_RV(f->C_EncryptInit(s, &ms, aes), CKR_MECHANISM_PARAM_INVALID);
  CK_MECHANISM mp = {CKM_AES_GCM, NULL, sizeof gp};
  CHECK_RV(f->C_EncryptInit(s, &mp, aes), CKR_ARGUMENTS_BAD);
  if (!typed) {
    CHECK_RV(f->C_EncryptInit(s, &m, aes), CKR_MECHANISM_PARAM_INVALID);
    return;
  }
  CHECK_RV(f->C_EncryptInit(s, &m, aes), CKR_OK);
  CHECK_RV(f->C_Encrypt(s, pt, sizeof pt, NULL, &ctl), CKR_OK);
  CHECK(ctl == sizeof pt + 16, "GCM output length %lu", ctl);
  CHECK_RV(f->C_Encrypt(s, pt, sizeof pt, ct, &ctl), CKR_OK);
  CHECK_RV(f->C_DecryptInit(s, &m, aes), CKR_OK);
  CHECK_RV(f->C_Decrypt(s, ct, ctl, back, &bl), CKR_OK);
  CHECK(bl == sizeof pt && memcmp(back, pt, bl) == 0, "GCM round trip");
  /* The AAD is authenticated: another one fails the tag check. */
  CK_BYTE other[] = "HEADER";
  CK_GCM_PARAMS gp2 = {iv, sizeof iv, 96, other, sizeof other - 1, 128};
  CK_MECHANISM m2 = {CKM_AES_GCM, &gp2, sizeof gp2};
  bl = sizeof back;
  CHECK_RV(f->C_DecryptInit(s, &m2, aes), CKR_OK);
  CHECK(f->C_Decrypt(s, ct, ctl, back, &bl) != CKR_OK,
        "GCM with another AAD fails");
}

static void mech_rsa(CK_SESSION_HANDLE s, bool typed) {
  CK_MECHANISM kg = {CKM_RSA_PKCS_KEY_PAIR_GEN, NULL, 0};
  CK_ULONG bits = 1024;
  CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
  CK_ATTRIBUTE pub[] = {{CKA_TOKEN, &no, sizeof no},
                        {CKA_MODULUS_BITS, &bits, sizeof bits},
                        {CKA_ENCRYPT, &yes, sizeof yes},
                        {CKA_VERIFY, &yes, sizeof yes}};
  CK_ATTRIBUTE priv[] = {{CKA_TOKEN, &no, sizeof no},
                         {CKA_DECRYPT, &yes, sizeof yes},
                         {CKA_SIGN, &yes, sizeof yes}};
  CK_OBJECT_HANDLE hpub = 0, hpriv = 0;
  CHECK_RV(f->C_GenerateKeyPair(s, &kg, pub, 4, priv, 3, &hpub, &hpriv),
           CKR_OK);

  CK_RSA_PKCS_OAEP_PARAMS op = {CKM_SHA_1, CKG_MGF1_SHA1, CKZ_DATA_SPECIFIED,
                                NULL, 0};
  CK_MECHANISM oaep = {CKM_RSA_PKCS_OAEP, &op, sizeof op};
  CK_BYTE pt[] = "OAEP secret";
  CK_BYTE ct[256], back[256];
  CK_ULONG ctl = sizeof ct, bl = sizeof back;
  if (typed) {
    CHECK_RV(f->C_EncryptInit(s, &oaep, hpub), CKR_OK);
    CHECK_RV(f->C_Encrypt(s, pt, sizeof pt, ct, &ctl), CKR_OK);
    CHECK(ctl == 128, "OAEP ciphertext length %lu", ctl);
    CHECK_RV(f->C_DecryptInit(s, &oaep, hpriv), CKR_OK);
    CHECK_RV(f->C_Decrypt(s, ct, ctl, back, &bl), CKR_OK);
    CHECK(bl == sizeof pt && memcmp(back, pt, bl) == 0, "OAEP round trip");
    /* SoftHSM2 refuses labels: the label reached it. */
    CK_BYTE label[] = "label";
    CK_RSA_PKCS_OAEP_PARAMS lp = {CKM_SHA_1, CKG_MGF1_SHA1,
                                  CKZ_DATA_SPECIFIED, label, 5};
    CK_MECHANISM lm = {CKM_RSA_PKCS_OAEP, &lp, sizeof lp};
    CHECK_RV(f->C_EncryptInit(s, &lm, hpub), CKR_ARGUMENTS_BAD);
  } else {
    CHECK_RV(f->C_EncryptInit(s, &oaep, hpub), CKR_MECHANISM_PARAM_INVALID);
  }
  CK_RSA_PKCS_OAEP_PARAMS bad = {CKM_SHA_1, CKG_MGF1_SHA1, CKZ_DATA_SPECIFIED,
                                 NULL, 5};
  CK_MECHANISM bm = {CKM_RSA_PKCS_OAEP, &bad, sizeof bad};
  CHECK_RV(f->C_EncryptInit(s, &bm, hpub), CKR_MECHANISM_PARAM_INVALID);

  /* PSS parameters hold no pointers: both protocol forms carry them. */
  CK_RSA_PKCS_PSS_PARAMS pp = {CKM_SHA256, CKG_MGF1_SHA256, 32};
  CK_MECHANISM pss = {CKM_SHA256_RSA_PKCS_PSS, &pp, sizeof pp};
  CK_BYTE sig[128];
  CK_ULONG sl = sizeof sig;
  CHECK_RV(f->C_SignInit(s, &pss, hpriv), CKR_OK);
  CHECK_RV(f->C_Sign(s, pt, sizeof pt, sig, &sl), CKR_OK);
  CHECK_RV(f->C_VerifyInit(s, &pss, hpub), CKR_OK);
  CHECK_RV(f->C_Verify(s, pt, sizeof pt, sig, sl), CKR_OK);
}

static void mech_ecdh(CK_SESSION_HANDLE s, bool typed) {
  static CK_BYTE p256[] = {0x06, 0x08, 0x2a, 0x86, 0x48,
                           0xce, 0x3d, 0x03, 0x01, 0x07};
  CK_MECHANISM kg = {CKM_EC_KEY_PAIR_GEN, NULL, 0};
  CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
  CK_ATTRIBUTE pub[] = {{CKA_TOKEN, &no, sizeof no},
                        {CKA_EC_PARAMS, p256, sizeof p256}};
  CK_ATTRIBUTE priv[] = {{CKA_TOKEN, &no, sizeof no},
                         {CKA_DERIVE, &yes, sizeof yes}};
  CK_OBJECT_HANDLE pa = 0, ka = 0, pb = 0, kb = 0;
  CHECK_RV(f->C_GenerateKeyPair(s, &kg, pub, 2, priv, 2, &pa, &ka), CKR_OK);
  CHECK_RV(f->C_GenerateKeyPair(s, &kg, pub, 2, priv, 2, &pb, &kb), CKR_OK);
  CK_BYTE pta[80], ptb[80]; /* DER OCTET STRING around the point */
  CK_ATTRIBUTE qa = {CKA_EC_POINT, pta, sizeof pta};
  CK_ATTRIBUTE qb = {CKA_EC_POINT, ptb, sizeof ptb};
  CHECK_RV(f->C_GetAttributeValue(s, pa, &qa, 1), CKR_OK);
  CHECK_RV(f->C_GetAttributeValue(s, pb, &qb, 1), CKR_OK);
  CHECK(qa.ulValueLen == 67 && qb.ulValueLen == 67, "P-256 points");

  CK_OBJECT_CLASS sk = CKO_SECRET_KEY;
  CK_KEY_TYPE kt = CKK_AES;
  CK_ULONG len = 32;
  CK_ATTRIBUTE out[] = {{CKA_CLASS, &sk, sizeof sk},
                        {CKA_KEY_TYPE, &kt, sizeof kt},
                        {CKA_VALUE_LEN, &len, sizeof len},
                        {CKA_TOKEN, &no, sizeof no},
                        {CKA_ENCRYPT, &yes, sizeof yes}};
  CK_ECDH1_DERIVE_PARAMS da = {CKD_NULL, 0, NULL, 65, ptb + 2};
  CK_ECDH1_DERIVE_PARAMS db = {CKD_NULL, 0, NULL, 65, pta + 2};
  CK_MECHANISM ma = {CKM_ECDH1_DERIVE, &da, sizeof da};
  CK_MECHANISM mb = {CKM_ECDH1_DERIVE, &db, sizeof db};
  CK_OBJECT_HANDLE sa = 0, sb = 0;
  if (!typed) {
    CHECK_RV(f->C_DeriveKey(s, &ma, ka, out, 5, &sa),
             CKR_MECHANISM_PARAM_INVALID);
    return;
  }
  CHECK_RV(f->C_DeriveKey(s, &ma, ka, out, 5, &sa), CKR_OK);
  CHECK_RV(f->C_DeriveKey(s, &mb, kb, out, 5, &sb), CKR_OK);
  CK_BYTE ea[16], eb[16];
  CHECK(ecb_block(s, sa, ea) && ecb_block(s, sb, eb) && memcmp(ea, eb, 16) == 0,
        "both ECDH sides derive the same AES key");
  CK_ECDH1_DERIVE_PARAMS dn = {CKD_NULL, 0, NULL, 65, NULL};
  CK_MECHANISM mn = {CKM_ECDH1_DERIVE, &dn, sizeof dn};
  CHECK_RV(f->C_DeriveKey(s, &mn, ka, out, 5, &sa),
           CKR_MECHANISM_PARAM_INVALID);
}

static void mech_wrap(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE kek) {
  CK_OBJECT_HANDLE target = gen_aes(s, 32);
  CK_BYTE want[16], got[16];
  CHECK(ecb_block(s, target, want), "target key encrypts");
  static const CK_MECHANISM_TYPE kinds[] = {CKM_AES_KEY_WRAP,
                                            CKM_AES_KEY_WRAP_PAD};
  for (size_t i = 0; i < 2; i++) {
    CK_MECHANISM m = {kinds[i], NULL, 0};
    CK_ULONG wl = 0;
    CHECK_RV(f->C_WrapKey(s, &m, kek, target, NULL, &wl), CKR_OK);
    CHECK(wl == 40, "wrapped length %lu", wl);
    CK_BYTE wrapped[64];
    CK_ULONG small = 8;
    CHECK_RV(f->C_WrapKey(s, &m, kek, target, wrapped, &small),
             CKR_BUFFER_TOO_SMALL);
    CHECK_RV(f->C_WrapKey(s, &m, kek, target, wrapped, &wl), CKR_OK);
    CK_OBJECT_CLASS sk = CKO_SECRET_KEY;
    CK_KEY_TYPE kt = CKK_AES;
    CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
    CK_ATTRIBUTE t[] = {{CKA_CLASS, &sk, sizeof sk},
                        {CKA_KEY_TYPE, &kt, sizeof kt},
                        {CKA_TOKEN, &no, sizeof no},
                        {CKA_ENCRYPT, &yes, sizeof yes}};
    CK_OBJECT_HANDLE u = 0;
    CHECK_RV(f->C_UnwrapKey(s, &m, kek, wrapped, wl, t, 4, &u), CKR_OK);
    CHECK(ecb_block(s, u, got) && memcmp(want, got, 16) == 0,
          "unwrapped key equals the original (mechanism 0x%lx)", kinds[i]);
  }
}

static void mech_derive_data(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE base,
                             bool typed) {
  CK_OBJECT_CLASS sk = CKO_SECRET_KEY;
  CK_KEY_TYPE kt = CKK_GENERIC_SECRET;
  CK_ULONG len = 32;
  CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
  CK_ATTRIBUTE out[] = {{CKA_CLASS, &sk, sizeof sk},
                        {CKA_KEY_TYPE, &kt, sizeof kt},
                        {CKA_VALUE_LEN, &len, sizeof len},
                        {CKA_TOKEN, &no, sizeof no},
                        {CKA_SENSITIVE, &no, sizeof no},
                        {CKA_EXTRACTABLE, &yes, sizeof yes}};
  CK_BYTE data[32];
  memset(data, 0x5a, sizeof data);
  CK_OBJECT_HANDLE h = 0;
  /* CK_KEY_DERIVATION_STRING_DATA: our daemon cannot hand its pointer to
   * the module through pkcs11js; version 3 cannot carry it at all. */
  CK_KEY_DERIVATION_STRING_DATA kd = {data, sizeof data};
  CK_MECHANISM ecb = {CKM_AES_ECB_ENCRYPT_DATA, &kd, sizeof kd};
  CHECK_RV(f->C_DeriveKey(s, &ecb, base, out, 6, &h),
           CKR_MECHANISM_PARAM_INVALID);
  CK_KEY_DERIVATION_STRING_DATA kn = {NULL, 16};
  CK_MECHANISM en = {CKM_AES_ECB_ENCRYPT_DATA, &kn, sizeof kn};
  CHECK_RV(f->C_DeriveKey(s, &en, base, out, 6, &h),
           CKR_MECHANISM_PARAM_INVALID);

  CK_AES_CBC_ENCRYPT_DATA_PARAMS cp;
  memset(cp.iv, 7, sizeof cp.iv);
  cp.data_params = data;
  cp.length = sizeof data;
  CK_MECHANISM cbc = {CKM_AES_CBC_ENCRYPT_DATA, &cp, sizeof cp};
  if (!typed) {
    CHECK_RV(f->C_DeriveKey(s, &cbc, base, out, 6, &h),
             CKR_MECHANISM_PARAM_INVALID);
    return;
  }
  CHECK_RV(f->C_DeriveKey(s, &cbc, base, out, 6, &h), CKR_OK);
  CK_BYTE derived[32], expect[32];
  CK_ULONG dl = read_value(s, h, derived, sizeof derived), el = sizeof expect;
  CK_MECHANISM enc = {CKM_AES_CBC, cp.iv, sizeof cp.iv};
  CHECK_RV(f->C_EncryptInit(s, &enc, base), CKR_OK);
  CHECK_RV(f->C_Encrypt(s, data, sizeof data, expect, &el), CKR_OK);
  CHECK(dl == 32 && el == 32 && memcmp(derived, expect, 32) == 0,
        "AES_CBC_ENCRYPT_DATA derives the CBC encryption of the data");
}

static void mech_eddsa(CK_SESSION_HANDLE s, bool typed) {
  static CK_BYTE ed25519[] = {0x06, 0x03, 0x2b, 0x65, 0x70};
  CK_MECHANISM kg = {CKM_EC_EDWARDS_KEY_PAIR_GEN, NULL, 0};
  CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
  CK_ATTRIBUTE pub[] = {{CKA_TOKEN, &no, sizeof no},
                        {CKA_EC_PARAMS, ed25519, sizeof ed25519},
                        {CKA_VERIFY, &yes, sizeof yes}};
  CK_ATTRIBUTE priv[] = {{CKA_TOKEN, &no, sizeof no},
                         {CKA_SIGN, &yes, sizeof yes}};
  CK_OBJECT_HANDLE hpub = 0, hpriv = 0;
  CHECK_RV(f->C_GenerateKeyPair(s, &kg, pub, 3, priv, 2, &hpub, &hpriv),
           CKR_OK);
  struct t_eddsa_params ep = {CK_FALSE, 0, NULL};
  CK_MECHANISM m = {CKM_EDDSA, &ep, sizeof ep};
  CK_BYTE msg[] = "eddsa";
  CK_BYTE sig[64];
  CK_ULONG sl = sizeof sig;
  if (!typed) {
    CHECK_RV(f->C_SignInit(s, &m, hpriv), CKR_MECHANISM_PARAM_INVALID);
    return;
  }
  CHECK_RV(f->C_SignInit(s, &m, hpriv), CKR_OK);
  CHECK_RV(f->C_Sign(s, msg, sizeof msg, sig, &sl), CKR_OK);
  CK_MECHANISM plain = {CKM_EDDSA, NULL, 0};
  CHECK_RV(f->C_VerifyInit(s, &plain, hpub), CKR_OK);
  CHECK_RV(f->C_Verify(s, msg, sizeof msg, sig, sl), CKR_OK);
}

static void test_mechanisms(void) {
  bool typed = typed_daemon();
  CHECK_RV(f->C_Initialize(NULL), CKR_OK);
  CK_SESSION_HANDLE s = open_rw(token_slot());
  CHECK_RV(f->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)PIN, 4), CKR_OK);
  CK_OBJECT_HANDLE aes = gen_aes(s, 32);
  mech_gcm(s, aes, typed);
  mech_rsa(s, typed);
  mech_ecdh(s, typed);
  /* Caml Crush hands C_WrapKey a non-NULL pParameter even when the
   * parameter is empty, which SoftHSM2 refuses for AES key wrap. */
  if (typed)
    mech_wrap(s, aes);
  mech_derive_data(s, aes, typed);
  mech_eddsa(s, typed);
  CHECK_RV(f->C_CloseSession(s), CKR_OK);
  CHECK_RV(f->C_Finalize(NULL), CKR_OK);
}

/* ---- group: app ---- */

/* Whether the daemon under test makes the library's connections one
 * application (px_GetAppToken): ours does. With Caml Crush the library
 * keeps per-connection state and only the checks that hold there run. */
static bool app_daemon(void) {
  const char *d = getenv("DAEMON");
  return d != NULL && strcmp(d, "ours") == 0;
}

static CK_STATE session_state(CK_SESSION_HANDLE s) {
  CK_SESSION_INFO si;
  memset(&si, 0, sizeof si);
  return f->C_GetSessionInfo(s, &si) == CKR_OK ? si.state : (CK_STATE)-1;
}

/* The one object labelled label, or CK_INVALID_HANDLE. */
static CK_OBJECT_HANDLE find_label(CK_SESSION_HANDLE s, const char *label) {
  CK_ATTRIBUTE t = {CKA_LABEL, (CK_VOID_PTR)label, strlen(label)};
  CK_OBJECT_HANDLE h[2] = {CK_INVALID_HANDLE, CK_INVALID_HANDLE};
  CK_ULONG n = 0;
  if (f->C_FindObjectsInit(s, &t, 1) != CKR_OK)
    return CK_INVALID_HANDLE;
  f->C_FindObjects(s, h, 2, &n);
  f->C_FindObjectsFinal(s);
  return n == 1 ? h[0] : CK_INVALID_HANDLE;
}

static CK_OBJECT_HANDLE create_session_data(CK_SESSION_HANDLE s,
                                            const char *label) {
  CK_OBJECT_CLASS dc = CKO_DATA;
  CK_BBOOL no = CK_FALSE;
  CK_BYTE value[] = "shared";
  CK_ATTRIBUTE t[] = {{CKA_CLASS, &dc, sizeof dc},
                      {CKA_TOKEN, &no, sizeof no},
                      {CKA_PRIVATE, &no, sizeof no},
                      {CKA_LABEL, (CK_VOID_PTR)label, strlen(label)},
                      {CKA_VALUE, value, 6}};
  CK_OBJECT_HANDLE h = CK_INVALID_HANDLE;
  CHECK_RV(f->C_CreateObject(s, t, 5, &h), CKR_OK);
  return h;
}

/* Socket descriptors open in this process (the library's connections):
 * their number, the first max of them in fds. */
static int socket_fds(int *fds, int max) {
  DIR *d = opendir("/proc/self/fd");
  int n = 0;
  struct dirent *e;
  while (d != NULL && (e = readdir(d)) != NULL) {
    char path[300], target[64];
    snprintf(path, sizeof path, "/proc/self/fd/%s", e->d_name);
    ssize_t len = readlink(path, target, sizeof target - 1);
    if (len > 0) {
      target[len] = '\0';
      if (strncmp(target, "socket:", 7) == 0) {
        if (n < max)
          fds[n] = atoi(e->d_name);
        n++;
      }
    }
  }
  if (d != NULL)
    closedir(d);
  return n;
}

static int count_sockets(void) { return socket_fds(NULL, 0); }

/* The socket opened since before[0..nbefore), or -1. */
static int new_socket(const int *before, int nbefore) {
  int now[64];
  int n = socket_fds(now, 64);
  for (int i = 0; i < n && i < 64; i++) {
    bool old = false;
    for (int j = 0; j < nbefore; j++)
      old |= now[i] == before[j];
    if (!old)
      return now[i];
  }
  return -1;
}

#define APP_THREADS 4
static pthread_barrier_t app_barrier;
static CK_OBJECT_HANDLE app_priv, app_pub;
static CK_SESSION_HANDLE app_sessions[APP_THREADS];

/* Signs with key handles found on another session (application mode) or
 * on its own session (per-connection mode), all threads at once. */
static void *app_signer(void *arg) {
  long id = (long)arg;
  CK_SESSION_HANDLE s = app_sessions[id];
  bool shared = app_daemon();
  CK_OBJECT_HANDLE priv = shared ? app_priv : find_key(s, CKO_PRIVATE_KEY);
  CK_OBJECT_HANDLE pub = shared ? app_pub : find_key(s, CKO_PUBLIC_KEY);
  CK_MECHANISM m = {CKM_SHA256_RSA_PKCS, NULL, 0};
  pthread_barrier_wait(&app_barrier);
  int ok = 0;
  for (int i = 0; i < N_SIGS; i++) {
    char msg[64];
    CK_BYTE sig[256];
    CK_ULONG sl = sizeof sig;
    snprintf(msg, sizeof msg, "app thread %ld message %d", id, i);
    if (f->C_SignInit(s, &m, priv) == CKR_OK &&
        f->C_Sign(s, (CK_BYTE_PTR)msg, strlen(msg), sig, &sl) == CKR_OK &&
        f->C_VerifyInit(s, &m, pub) == CKR_OK &&
        f->C_Verify(s, (CK_BYTE_PTR)msg, strlen(msg), sig, sl) == CKR_OK)
      ok++;
  }
  CHECK(ok == N_SIGS, "app thread %ld: %d/%d signatures verified", id, ok,
        N_SIGS);
  return NULL;
}

static void test_app(void) {
  bool app = app_daemon();
  CK_C_INITIALIZE_ARGS ia;
  memset(&ia, 0, sizeof ia);
  ia.flags = CKF_OS_LOCKING_OK;
  CHECK_RV(f->C_Initialize(&ia), CKR_OK);
  CK_SLOT_ID slot = token_slot();
  CK_SESSION_HANDLE s1 = open_rw(slot), s2 = open_rw(slot);

  /* Login on s1: s2, opened before, and s3, opened after, are user
   * sessions (shared by the daemon, or replayed per connection). */
  CHECK_RV(f->C_Login(s1, CKU_USER, (CK_UTF8CHAR_PTR)PIN, 4), CKR_OK);
  CHECK(session_state(s2) == CKS_RW_USER_FUNCTIONS, "s2 state %lu",
        session_state(s2));
  CK_SESSION_HANDLE s3 = open_rw(slot);
  CHECK(session_state(s3) == CKS_RW_USER_FUNCTIONS, "s3 state %lu",
        session_state(s3));
  CHECK_RV(f->C_Login(s3, CKU_USER, (CK_UTF8CHAR_PTR)PIN, 4),
           CKR_USER_ALREADY_LOGGED_IN);
  ensure_rsa_key(s1);

  if (app) {
    /* Object handles belong to the application: found on s1, used on s2
     * and s3 (each on its own connection). */
    CK_OBJECT_HANDLE priv = find_key(s1, CKO_PRIVATE_KEY);
    CK_OBJECT_HANDLE pub = find_key(s1, CKO_PUBLIC_KEY);
    CK_MECHANISM m = {CKM_SHA256_RSA_PKCS, NULL, 0};
    const char *msg = "handle from another session";
    CK_BYTE sig[256];
    CK_ULONG sl = sizeof sig;
    CHECK_RV(f->C_SignInit(s2, &m, priv), CKR_OK);
    CHECK_RV(f->C_Sign(s2, (CK_BYTE_PTR)msg, strlen(msg), sig, &sl), CKR_OK);
    CHECK_RV(f->C_VerifyInit(s3, &m, pub), CKR_OK);
    CHECK_RV(f->C_Verify(s3, (CK_BYTE_PTR)msg, strlen(msg), sig, sl), CKR_OK);

    /* A session object of s1 is visible from s2 under the same handle. */
    CK_OBJECT_HANDLE obj = create_session_data(s1, "ctest-app-obj");
    CHECK(obj != CK_INVALID_HANDLE && find_label(s2, "ctest-app-obj") == obj,
          "s1's session object found from s2");
    CK_BYTE v[6];
    CK_ATTRIBUTE va = {CKA_VALUE, v, sizeof v};
    CHECK_RV(f->C_GetAttributeValue(s3, obj, &va, 1), CKR_OK);
    CHECK(va.ulValueLen == 6 && memcmp(v, "shared", 6) == 0,
          "value read through s3");
    CHECK_RV(f->C_DestroyObject(s2, obj), CKR_OK);
    CHECK(find_label(s1, "ctest-app-obj") == CK_INVALID_HANDLE,
          "destroyed through s2, gone for s1");
  }

  /* C_Logout through s3 logs every session out. */
  CHECK_RV(f->C_Logout(s3), CKR_OK);
  CHECK(session_state(s1) == CKS_RW_PUBLIC_SESSION, "s1 state %lu",
        session_state(s1));
  if (app) /* SoftHSM itself answers CKR_OK to a second C_Logout */
    CHECK_RV(f->C_Logout(s1), CKR_USER_NOT_LOGGED_IN);

  /* Every session has its own connection; the threads sign at once. */
  CHECK_RV(f->C_Login(s1, CKU_USER, (CK_UTF8CHAR_PTR)PIN, 4), CKR_OK);
  app_priv = find_key(s1, CKO_PRIVATE_KEY);
  app_pub = find_key(s1, CKO_PUBLIC_KEY);
  for (int i = 0; i < APP_THREADS; i++)
    app_sessions[i] = open_rw(slot);
  int socks = count_sockets();
  CHECK(socks >= 3 + APP_THREADS + 1,
        "a connection per session plus the control one (%d sockets)", socks);
  pthread_barrier_init(&app_barrier, NULL, APP_THREADS);
  pthread_t t[APP_THREADS];
  for (long i = 0; i < APP_THREADS; i++)
    pthread_create(&t[i], NULL, app_signer, (void *)i);
  for (int i = 0; i < APP_THREADS; i++)
    pthread_join(t[i], NULL);
  pthread_barrier_destroy(&app_barrier);

  /* C_CloseAllSessions closes the sessions of all connections; the login
   * ends with them. */
  CHECK_RV(f->C_CloseAllSessions(slot), CKR_OK);
  CK_SESSION_INFO si;
  CHECK_RV(f->C_GetSessionInfo(s2, &si), CKR_SESSION_HANDLE_INVALID);
  CHECK_RV(f->C_GetSessionInfo(app_sessions[0], &si),
           CKR_SESSION_HANDLE_INVALID);
  CK_SESSION_HANDLE s4 = open_rw(slot);
  CHECK(session_state(s4) == CKS_RW_PUBLIC_SESSION, "s4 state %lu",
        session_state(s4));

  if (app) {
    /* A forked child's C_Initialize starts its own application: it does
     * not see the parent's session objects; the parent keeps them. */
    CK_OBJECT_HANDLE obj = create_session_data(s4, "ctest-app-fork");
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
      int bad = f->C_Initialize(NULL) != CKR_OK;
      CK_SESSION_HANDLE cs = CK_INVALID_HANDLE;
      bad |= (f->C_OpenSession(token_slot(), CKF_SERIAL_SESSION, NULL, NULL,
                               &cs) != CKR_OK)
             << 1;
      bad |= (find_label(cs, "ctest-app-fork") != CK_INVALID_HANDLE) << 2;
      bad |= (f->C_Finalize(NULL) != CKR_OK) << 3;
      exit(bad);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    CHECK(pid > 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0,
          "child: own application without the parent's objects (0x%x)",
          status);
    CHECK(find_label(s4, "ctest-app-fork") == obj,
          "parent still sees its session object");
  }

  /* C_Finalize ends the application: the next one starts empty. */
  CHECK_RV(f->C_Finalize(NULL), CKR_OK);
  CHECK_RV(f->C_Initialize(NULL), CKR_OK);
  CK_SESSION_HANDLE s5 = open_rw(token_slot());
  CHECK(find_label(s5, "ctest-app-fork") == CK_INVALID_HANDLE,
        "session objects gone with C_Finalize");

  /* A session whose connection breaks is gone, in the daemon too: after
   * the last other session closes, the login has ended. */
  CHECK_RV(f->C_Login(s5, CKU_USER, (CK_UTF8CHAR_PTR)PIN, 4), CKR_OK);
  int before[64];
  int nbefore = socket_fds(before, 64);
  CK_SESSION_HANDLE sb = open_rw(slot);
  int fd = new_socket(before, nbefore < 64 ? nbefore : 64);
  CHECK(fd >= 0, "connection of the new session found");
  if (fd >= 0)
    shutdown(fd, SHUT_RDWR);
  CK_RV brv = f->C_GetSessionInfo(sb, &si);
  CHECK(brv == CKR_DEVICE_ERROR, "call on a broken connection (0x%lx)",
        (unsigned long)brv);
  CHECK_RV(f->C_GetSessionInfo(sb, &si), CKR_SESSION_HANDLE_INVALID);
  CHECK_RV(f->C_CloseSession(s5), CKR_OK);
  s5 = open_rw(slot);
  CHECK(session_state(s5) == CKS_RW_PUBLIC_SESSION,
        "login ended with the last session (state %lu)", session_state(s5));

  /* After a daemon restart C_OpenSession works without C_Finalize (ours:
   * the join is refused, a new application starts). */
  const char *cmd = getenv("P11TEST_RESTART_CMD");
  if (cmd != NULL) {
    CHECK_RV(f->C_Login(s5, CKU_USER, (CK_UTF8CHAR_PTR)PIN, 4), CKR_OK);
    CHECK(system(cmd) == 0, "restart command");
    CK_SESSION_HANDLE s6 = CK_INVALID_HANDLE;
    CHECK_RV(f->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION,
                              NULL, NULL, &s6),
             CKR_OK);
    CK_RV rv = f->C_Login(s6, CKU_USER, (CK_UTF8CHAR_PTR)PIN, 4);
    CHECK(rv == (app ? CKR_OK : CKR_USER_ALREADY_LOGGED_IN),
          "login after restart (0x%lx)", (unsigned long)rv);
    CHECK(sign_verify(s6, "after restart"), "signs after restart");
    rv = f->C_GetSessionInfo(s5, &si);
    CHECK(rv == CKR_SESSION_HANDLE_INVALID ||
              (!app && rv == CKR_DEVICE_ERROR),
          "session of the old application (0x%lx)", (unsigned long)rv);
  }
  CHECK_RV(f->C_Finalize(NULL), CKR_OK);
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
                {"forkthread", test_forkthread},
                {"manysessions", test_manysessions},
                {"restart", test_restart},
                {"config", test_config},   {"mechanisms", test_mechanisms},
                {"app", test_app},         {"timeout", test_timeout}};
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
