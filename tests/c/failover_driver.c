/*
 * failover_driver MODULE PIN
 *
 * Runs PKCS#11 calls through MODULE (dlopen) one command at a time, read
 * from stdin, so a test can kill daemons between two commands. Each
 * command prints one line "<command> <rv in hex> [detail]":
 *
 *   init     C_Initialize(NULL)
 *   fin      C_Finalize
 *   slots    C_GetSlotList(CK_TRUE): detail is the count
 *   open     C_GetSlotList(CK_TRUE), C_OpenSession(RW) on the slot of the
 *            initialized token (the current session becomes this one):
 *            detail is the
 *            token's serial number (C_GetTokenInfo), or the rv of the
 *            first failing call
 *   login    C_Login(CKU_USER, PIN) on the current session
 *   info     C_GetSessionInfo: detail is the session state (CKS_*)
 *   sign     on the current session: C_GenerateKeyPair (EC P-256, session
 *            keys, private key CKA_PRIVATE), C_SignInit(CKM_ECDSA),
 *            C_Sign of 32 bytes: the rv of the first that fails, detail
 *            the signature length
 *   close    C_CloseSession on the current session
 *
 * Used by tests/ts/client-failover.test.ts with our client library and a
 * list of daemons in PKCS11PROXY_SOCKET_PATH. At end of input: C_Finalize,
 * exit 0.
 */
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

#include <p11-kit/pkcs11.h>

static CK_FUNCTION_LIST_PTR f;
static CK_SESSION_HANDLE session = CK_INVALID_HANDLE;
static const char *pin;

static void report(const char *cmd, CK_RV rv, const char *detail) {
  printf("%s 0x%lx%s%s\n", cmd, (unsigned long)rv, detail ? " " : "",
         detail ? detail : "");
  fflush(stdout);
}

/* SoftHSM2 lists a free slot too, in no fixed order: the initialized
 * token's slot. */
static CK_RV token_slot(CK_SLOT_ID *slot) {
  CK_SLOT_ID slots[16];
  CK_ULONG n = 16;
  CK_RV rv = f->C_GetSlotList(CK_TRUE, slots, &n);
  if (rv != CKR_OK)
    return rv;
  for (CK_ULONG i = 0; i < n; i++) {
    CK_TOKEN_INFO ti;
    if (f->C_GetTokenInfo(slots[i], &ti) == CKR_OK &&
        (ti.flags & CKF_TOKEN_INITIALIZED)) {
      *slot = slots[i];
      return CKR_OK;
    }
  }
  return CKR_TOKEN_NOT_PRESENT;
}

static void cmd_open(void) {
  CK_SLOT_ID slot = 0;
  CK_RV rv = token_slot(&slot);
  if (rv != CKR_OK) {
    report("open", rv, "C_GetSlotList");
    return;
  }
  CK_SESSION_HANDLE h;
  rv = f->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL,
                        &h);
  if (rv != CKR_OK) {
    report("open", rv, "C_OpenSession");
    return;
  }
  session = h;
  CK_TOKEN_INFO ti;
  rv = f->C_GetTokenInfo(slot, &ti);
  if (rv != CKR_OK) {
    report("open", rv, "C_GetTokenInfo");
    return;
  }
  char serial[sizeof ti.serialNumber + 1];
  memcpy(serial, ti.serialNumber, sizeof ti.serialNumber);
  serial[sizeof ti.serialNumber] = '\0';
  for (size_t i = sizeof ti.serialNumber; i > 0 && serial[i - 1] == ' '; i--)
    serial[i - 1] = '\0';
  report("open", CKR_OK, serial);
}

static void cmd_sign(void) {
  static const CK_BYTE p256[] = {0x06, 0x08, 0x2a, 0x86, 0x48,
                                 0xce, 0x3d, 0x03, 0x01, 0x07};
  CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
  CK_ATTRIBUTE pub[] = {{CKA_EC_PARAMS, (void *)p256, sizeof p256},
                        {CKA_TOKEN, &no, sizeof no},
                        {CKA_VERIFY, &yes, sizeof yes}};
  CK_ATTRIBUTE priv[] = {{CKA_TOKEN, &no, sizeof no},
                         {CKA_PRIVATE, &yes, sizeof yes},
                         {CKA_SIGN, &yes, sizeof yes}};
  CK_MECHANISM kg = {CKM_EC_KEY_PAIR_GEN, NULL, 0};
  CK_OBJECT_HANDLE hpub, hpriv;
  CK_RV rv = f->C_GenerateKeyPair(session, &kg, pub, 3, priv, 3, &hpub, &hpriv);
  if (rv != CKR_OK) {
    report("sign", rv, "C_GenerateKeyPair");
    return;
  }
  CK_MECHANISM m = {CKM_ECDSA, NULL, 0};
  rv = f->C_SignInit(session, &m, hpriv);
  if (rv != CKR_OK) {
    report("sign", rv, "C_SignInit");
    return;
  }
  CK_BYTE digest[32], sig[128];
  memset(digest, 0x5a, sizeof digest);
  CK_ULONG sig_len = sizeof sig;
  rv = f->C_Sign(session, digest, sizeof digest, sig, &sig_len);
  if (rv != CKR_OK) {
    report("sign", rv, "C_Sign");
    return;
  }
  char d[32];
  snprintf(d, sizeof d, "%lu", (unsigned long)sig_len);
  report("sign", CKR_OK, d);
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: %s MODULE PIN\n", argv[0]);
    return 2;
  }
  pin = argv[2];
  void *lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
  if (lib == NULL) {
    fprintf(stderr, "dlopen: %s\n", dlerror());
    return 2;
  }
  CK_C_GetFunctionList gfl =
      (CK_C_GetFunctionList)dlsym(lib, "C_GetFunctionList");
  if (gfl == NULL || gfl(&f) != CKR_OK)
    return 2;
  char line[64];
  while (fgets(line, sizeof line, stdin) != NULL) {
    line[strcspn(line, "\r\n")] = '\0';
    char d[32];
    if (strcmp(line, "init") == 0) {
      report(line, f->C_Initialize(NULL), NULL);
    } else if (strcmp(line, "fin") == 0) {
      report(line, f->C_Finalize(NULL), NULL);
    } else if (strcmp(line, "slots") == 0) {
      CK_ULONG n = 0;
      CK_RV rv = f->C_GetSlotList(CK_TRUE, NULL, &n);
      snprintf(d, sizeof d, "%lu", (unsigned long)n);
      report(line, rv, d);
    } else if (strcmp(line, "open") == 0) {
      cmd_open();
    } else if (strcmp(line, "login") == 0) {
      report(line,
             f->C_Login(session, CKU_USER, (CK_UTF8CHAR_PTR)pin,
                        (CK_ULONG)strlen(pin)),
             NULL);
    } else if (strcmp(line, "info") == 0) {
      CK_SESSION_INFO si;
      memset(&si, 0, sizeof si);
      CK_RV rv = f->C_GetSessionInfo(session, &si);
      snprintf(d, sizeof d, "%lu", (unsigned long)si.state);
      report(line, rv, rv == CKR_OK ? d : NULL);
    } else if (strcmp(line, "sign") == 0) {
      cmd_sign();
    } else if (strcmp(line, "close") == 0) {
      report(line, f->C_CloseSession(session), NULL);
    } else {
      fprintf(stderr, "unknown command '%s'\n", line);
      return 2;
    }
  }
  /* The library's state is freed by C_Finalize (CKR_CRYPTOKI_NOT_INITIALIZED
   * when already finalized); the library stays loaded, so leak reports name
   * its functions. */
  f->C_Finalize(NULL);
  return 0;
}
