/*
 * filter_compat_driver MODULE USER_PIN SO_PIN GROUP
 *
 * Runs one fixed table of PKCS#11 calls through MODULE (dlopen), the same
 * calls whatever daemon is behind it, and prints one line per row:
 * "<row> 0x<rv in hex> [detail]". Rows go on after a failed row; objects
 * a failed row should have created are CK_INVALID_HANDLE in later rows (the
 * module answers for that). Exits 0 when the table ran, 2 on a setup failure.
 *
 * GROUP "debian": calls Debian's filter.conf (patchset 1) has an opinion on;
 * GROUP "gcm": a mechanism parameter holding pointers (CK_GCM_PARAMS);
 * GROUP "initialize": C_Initialize only;
 * GROUP "admin": the SO login and padding-oracle mechanisms, for a filter.conf
 * with forbid_admin_operations and remove_padding_oracles on.
 *
 * Used by tests/ts/filter-camlcrush-compat.test.ts with Caml Crush's client
 * library against Caml Crush's daemon and ours.
 */
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

#include <p11-kit/pkcs11.h>

static CK_FUNCTION_LIST_PTR f;
static CK_SESSION_HANDLE s;
static CK_SLOT_ID slot;
static CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
static CK_OBJECT_CLASS secret = CKO_SECRET_KEY;
static CK_KEY_TYPE aes = CKK_AES;
static CK_ULONG len16 = 16;

#define ROW(name, call)                                                        \
  do {                                                                         \
    CK_RV rv_ = (call);                                                        \
    printf("%s 0x%lx\n", (name), (unsigned long)rv_);                          \
    fflush(stdout);                                                            \
  } while (0)

#define A(t, v) {(t), &(v), sizeof(v)}

/* An AES session key from C_GenerateKey: sensitive, with the usage flags given. */
static CK_RV gen_aes(CK_OBJECT_HANDLE *h, CK_BBOOL enc, CK_BBOOL dec, CK_BBOOL wrap, CK_BBOOL unwrap, CK_BBOOL extractable) {
  CK_MECHANISM m = {CKM_AES_KEY_GEN, NULL, 0};
  CK_ATTRIBUTE t[] = {
      A(CKA_CLASS, secret), A(CKA_KEY_TYPE, aes),   A(CKA_VALUE_LEN, len16), A(CKA_TOKEN, no),
      A(CKA_SENSITIVE, yes), A(CKA_EXTRACTABLE, extractable), A(CKA_ENCRYPT, enc), A(CKA_DECRYPT, dec),
      A(CKA_WRAP, wrap),     A(CKA_UNWRAP, unwrap),
  };
  *h = CK_INVALID_HANDLE;
  return f->C_GenerateKey(s, &m, t, sizeof t / sizeof t[0], h);
}

static CK_RV rsa_pair(CK_OBJECT_HANDLE *pub, CK_OBJECT_HANDLE *priv) {
  CK_MECHANISM m = {CKM_RSA_PKCS_KEY_PAIR_GEN, NULL, 0};
  CK_ULONG bits = 2048;
  CK_BYTE e[] = {1, 0, 1};
  CK_ATTRIBUTE pt[] = {A(CKA_TOKEN, no), A(CKA_MODULUS_BITS, bits), {CKA_PUBLIC_EXPONENT, e, sizeof e}, A(CKA_ENCRYPT, yes),
                       A(CKA_VERIFY, yes)};
  CK_ATTRIBUTE kt[] = {A(CKA_TOKEN, no), A(CKA_PRIVATE, yes), A(CKA_SENSITIVE, yes), A(CKA_DECRYPT, yes), A(CKA_SIGN, yes)};
  *pub = *priv = CK_INVALID_HANDLE;
  return f->C_GenerateKeyPair(s, &m, pt, sizeof pt / sizeof pt[0], kt, sizeof kt / sizeof kt[0], pub, priv);
}

static CK_RV wrap(CK_MECHANISM_TYPE mech, void *param, CK_ULONG plen, CK_OBJECT_HANDLE wk, CK_OBJECT_HANDLE k, CK_BYTE *out, CK_ULONG *olen) {
  CK_MECHANISM m = {mech, param, plen};
  return f->C_WrapKey(s, &m, wk, k, out, olen);
}

static int table_debian(const char *so_pin) {
  CK_MECHANISM_TYPE list[512];
  CK_ULONG n = 512;
  CK_RV rv = f->C_GetMechanismList(slot, list, &n);
  int listed = 0;
  for (CK_ULONG i = 0; rv == CKR_OK && i < n; i++) listed |= list[i] == CKM_RSA_X_509;
  printf("mechlist_rsa_x509 0x%lx %s\n", (unsigned long)rv, listed ? "listed" : "hidden");
  CK_MECHANISM_INFO info;
  ROW("mechinfo_rsa_x509", f->C_GetMechanismInfo(slot, CKM_RSA_X_509, &info));

  CK_OBJECT_HANDLE pub, priv;
  ROW("genkeypair_rsa", rsa_pair(&pub, &priv));
  CK_MECHANISM x509 = {CKM_RSA_X_509, NULL, 0}, pkcs = {CKM_RSA_PKCS, NULL, 0};
  ROW("encryptinit_rsa_x509", f->C_EncryptInit(s, &x509, pub));
  ROW("signinit_rsa_x509", f->C_SignInit(s, &x509, priv));
  ROW("signinit_rsa_pkcs", f->C_SignInit(s, &pkcs, priv));
  CK_BYTE sig[512];
  CK_ULONG siglen = sizeof sig;
  ROW("sign_rsa_pkcs", f->C_Sign(s, (CK_BYTE *)"abc", 3, sig, &siglen));

  /* Key creation: C_CreateObject of a known-value key with WRAP (non_local_objects_patch), conflicting flags. */
  CK_BYTE value[16] = {0};
  CK_OBJECT_HANDLE h = CK_INVALID_HANDLE;
  CK_ATTRIBUTE create_wrap[] = {A(CKA_CLASS, secret), A(CKA_KEY_TYPE, aes), {CKA_VALUE, value, sizeof value}, A(CKA_TOKEN, no),
                                A(CKA_WRAP, yes)};
  ROW("createobject_aes_wrap", f->C_CreateObject(s, create_wrap, 5, &h));
  CK_ATTRIBUTE create_enc[] = {A(CKA_CLASS, secret), A(CKA_KEY_TYPE, aes), {CKA_VALUE, value, sizeof value}, A(CKA_TOKEN, no),
                               A(CKA_ENCRYPT, yes), A(CKA_DECRYPT, yes)};
  CK_OBJECT_HANDLE imported = CK_INVALID_HANDLE;
  ROW("createobject_aes_encrypt", f->C_CreateObject(s, create_enc, 6, &imported));
  ROW("genkey_aes_wrap_decrypt", gen_aes(&h, no, yes, yes, no, no));
  ROW("genkey_aes_unwrap_encrypt", gen_aes(&h, yes, no, no, yes, no));

  CK_OBJECT_HANDLE target, wk;
  ROW("genkey_aes_target", gen_aes(&target, yes, yes, no, no, yes));
  CK_BYTE v[64];
  CK_ATTRIBUTE get_value = {CKA_VALUE, v, sizeof v};
  ROW("getattr_value_sensitive", f->C_GetAttributeValue(s, target, &get_value, 1));
  CK_ATTRIBUTE set_insensitive = A(CKA_SENSITIVE, no);
  ROW("setattr_sensitive_false", f->C_SetAttributeValue(s, target, &set_insensitive, 1));
  ROW("genkey_aes_wrapkey", gen_aes(&wk, no, no, yes, yes, no));
  CK_ATTRIBUTE set_decrypt = A(CKA_DECRYPT, yes);
  ROW("setattr_wrapkey_decrypt", f->C_SetAttributeValue(s, wk, &set_decrypt, 1));
  CK_ATTRIBUTE set_wrap = A(CKA_WRAP, yes);
  ROW("setattr_imported_wrap", f->C_SetAttributeValue(s, imported, &set_wrap, 1));
  CK_BYTE out[1024];
  CK_ULONG olen = sizeof out;
  ROW("wrap_aes_key_wrap", wrap(CKM_AES_KEY_WRAP, NULL, 0, wk, target, out, &olen));
  CK_BYTE iv[16] = {0};
  olen = sizeof out;
  ROW("wrap_aes_cbc_pad", wrap(CKM_AES_CBC_PAD, iv, sizeof iv, wk, target, out, &olen));
  olen = sizeof out;
  ROW("wrap_rsa_pkcs", wrap(CKM_RSA_PKCS, NULL, 0, pub, target, out, &olen));

  /* A handle the client was never given. */
  CK_ATTRIBUTE get_class = {CKA_CLASS, v, sizeof(CK_ULONG)};
  ROW("getattr_unknown_handle", f->C_GetAttributeValue(s, 0x7ffff001, &get_class, 1));

  ROW("logout", f->C_Logout(s));
  ROW("login_so", f->C_Login(s, CKU_SO, (CK_UTF8CHAR *)so_pin, strlen(so_pin)));
  return 0;
}

/* Last, alone: Caml Crush's daemon passes the client's pointers to the module and its worker may die. */
static int table_gcm(void) {
  CK_OBJECT_HANDLE k;
  ROW("genkey_aes_target", gen_aes(&k, yes, yes, no, no, yes));
  CK_BYTE gcm_iv[12] = {0};
  CK_GCM_PARAMS gcm = {gcm_iv, sizeof gcm_iv, 96, NULL, 0, 128};
  CK_MECHANISM gcm_m = {CKM_AES_GCM, &gcm, sizeof gcm};
  ROW("encryptinit_aes_gcm", f->C_EncryptInit(s, &gcm_m, k));
  return 0;
}

static int table_admin(const char *so_pin) {
  CK_OBJECT_HANDLE pub, priv, target, wk;
  ROW("genkeypair_rsa", rsa_pair(&pub, &priv));
  ROW("genkey_aes_target", gen_aes(&target, yes, yes, no, no, yes));
  ROW("genkey_aes_wrapkey", gen_aes(&wk, no, no, yes, yes, no));
  CK_MECHANISM pkcs = {CKM_RSA_PKCS, NULL, 0};
  ROW("encryptinit_rsa_pkcs", f->C_EncryptInit(s, &pkcs, pub));
  ROW("signinit_rsa_pkcs", f->C_SignInit(s, &pkcs, priv));
  CK_BYTE iv[16] = {0};
  CK_MECHANISM cbc_pad = {CKM_AES_CBC_PAD, iv, sizeof iv};
  ROW("encryptinit_aes_cbc_pad", f->C_EncryptInit(s, &cbc_pad, target));
  CK_MECHANISM cbc = {CKM_AES_CBC, iv, sizeof iv};
  ROW("encryptinit_aes_cbc", f->C_EncryptInit(s, &cbc, target));
  CK_BYTE out[1024];
  CK_ULONG olen = sizeof out;
  ROW("wrap_rsa_pkcs", wrap(CKM_RSA_PKCS, NULL, 0, pub, target, out, &olen));
  olen = sizeof out;
  ROW("wrap_aes_cbc_pad", wrap(CKM_AES_CBC_PAD, iv, sizeof iv, wk, target, out, &olen));
  CK_BYTE blob[256] = {0};
  CK_OBJECT_HANDLE h = CK_INVALID_HANDLE;
  CK_ATTRIBUTE t[] = {A(CKA_CLASS, secret), A(CKA_KEY_TYPE, aes), A(CKA_TOKEN, no)};
  ROW("unwrap_rsa_pkcs", f->C_UnwrapKey(s, &pkcs, priv, blob, 256, t, 3, &h));
  ROW("logout", f->C_Logout(s));
  ROW("login_so", f->C_Login(s, CKU_SO, (CK_UTF8CHAR *)so_pin, strlen(so_pin)));
  return 0;
}

int main(int argc, char **argv) {
  if (argc != 5) {
    fprintf(stderr, "usage: %s MODULE USER_PIN SO_PIN GROUP\n", argv[0]);
    return 2;
  }
  void *lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
  if (lib == NULL) {
    fprintf(stderr, "dlopen: %s\n", dlerror());
    return 2;
  }
  CK_C_GetFunctionList gfl = (CK_C_GetFunctionList)dlsym(lib, "C_GetFunctionList");
  if (gfl == NULL || gfl(&f) != CKR_OK)
    return 2;
  CK_RV rv = f->C_Initialize(NULL);
  printf("initialize 0x%lx\n", (unsigned long)rv);
  if (strcmp(argv[4], "initialize") == 0 || rv != CKR_OK)
    return 0;
  /* The first initialized token: SoftHSM2 also lists a free slot, in no fixed order. */
  CK_SLOT_ID slots[16];
  CK_ULONG nslots = 16;
  if (f->C_GetSlotList(CK_TRUE, slots, &nslots) != CKR_OK || nslots < 1)
    return 2;
  slot = slots[0];
  for (CK_ULONG i = 0; i < nslots; i++) {
    CK_TOKEN_INFO ti;
    if (f->C_GetTokenInfo(slots[i], &ti) == CKR_OK && (ti.flags & CKF_TOKEN_INITIALIZED)) {
      slot = slots[i];
      break;
    }
  }
  if (f->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &s) != CKR_OK)
    return 2;
  ROW("login_user", f->C_Login(s, CKU_USER, (CK_UTF8CHAR *)argv[2], strlen(argv[2])));
  int r = strcmp(argv[4], "admin") == 0 ? table_admin(argv[3]) : strcmp(argv[4], "gcm") == 0 ? table_gcm() : table_debian(argv[3]);
  f->C_CloseSession(s);
  f->C_Finalize(NULL);
  return r;
}
