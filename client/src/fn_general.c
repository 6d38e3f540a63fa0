/*
 * PKCS#11 general-purpose, slot and token functions: slot-level calls
 * go over the control connection (CONTROL_RPC, calls.h).
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>

#include "calls.h"

/* ---- general purpose ---- */

PX_EXPORT CK_RV C_Initialize(CK_VOID_PTR pInitArgs) {
  return px_state_initialize((CK_C_INITIALIZE_ARGS *)pInitArgs);
}

PX_EXPORT CK_RV C_Finalize(CK_VOID_PTR pReserved) {
  if (pReserved != NULL)
    return CKR_ARGUMENTS_BAD;
  return px_state_finalize();
}

PX_EXPORT CK_RV C_GetInfo(CK_INFO_PTR pInfo) {
  if (!px_state_is_initialized())
    return CKR_CRYPTOKI_NOT_INITIALIZED;
  if (pInfo == NULL)
    return CKR_ARGUMENTS_BAD;
  C_GetInfo_ret res;
  memset(&res, 0, sizeof res);
  CK_RV rv = CONTROL_RPC("C_GetInfo", CKR_FUNCTION_FAILED, c_getinfo_3, &res);
  if (rv != CKR_OK)
    return rv;
  rv = (CK_RV)res.rv;
  if (rv == CKR_OK) {
    const px_info *i = &res.info;
    pInfo->cryptokiVersion = px_version_in(&i->cryptokiVersion);
    px_pad_copy(pInfo->manufacturerID, sizeof pInfo->manufacturerID,
                i->manufacturerID.manufacturerID_val,
                i->manufacturerID.manufacturerID_len);
    pInfo->flags = (CK_FLAGS)i->flags;
    px_pad_copy(pInfo->libraryDescription, sizeof pInfo->libraryDescription,
                i->libraryDescription.libraryDescription_val,
                i->libraryDescription.libraryDescription_len);
    pInfo->libraryVersion = px_version_in(&i->libraryVersion);
  }
  xdr_free((xdrproc_t)xdr_C_GetInfo_ret, (char *)&res);
  return rv;
}

/* ---- slots and tokens ---- */

PX_EXPORT CK_RV C_GetSlotList(CK_BBOOL tokenPresent, CK_SLOT_ID_PTR pSlotList,
                              CK_ULONG_PTR pulCount) {
  if (!px_state_is_initialized())
    return CKR_CRYPTOKI_NOT_INITIALIZED;
  if (pulCount == NULL)
    return CKR_ARGUMENTS_BAD;
  CK_ULONG capacity = pSlotList ? *pulCount : 0;
  C_GetSlotList_args a = {.tokenPresent = tokenPresent ? 1 : 0,
                          .count = (px_ulong)capacity};
  C_GetSlotList_ret res;
  memset(&res, 0, sizeof res);
  CK_RV rv = CONTROL_RPC("C_GetSlotList", CKR_FUNCTION_FAILED,
                         c_getslotlist_3, a, &res);
  if (rv != CKR_OK)
    return rv;
  rv = px_list_out((CK_RV)res.rv, res.count, res.slotList.slotList_val,
                   res.slotList.slotList_len, pSlotList, capacity, pulCount);
  xdr_free((xdrproc_t)xdr_C_GetSlotList_ret, (char *)&res);
  return rv;
}

PX_EXPORT CK_RV C_GetSlotInfo(CK_SLOT_ID slotID, CK_SLOT_INFO_PTR pInfo) {
  if (!px_state_is_initialized())
    return CKR_CRYPTOKI_NOT_INITIALIZED;
  if (pInfo == NULL)
    return CKR_ARGUMENTS_BAD;
  C_GetSlotInfo_args a = {.slotID = (px_slot_id)slotID};
  C_GetSlotInfo_ret res;
  memset(&res, 0, sizeof res);
  CK_RV rv = CONTROL_RPC("C_GetSlotInfo", CKR_DEVICE_ERROR,
                         c_getslotinfo_3, a, &res);
  if (rv != CKR_OK)
    return rv;
  rv = (CK_RV)res.rv;
  if (rv == CKR_OK) {
    const px_slot_info *i = &res.info;
    px_pad_copy(pInfo->slotDescription, sizeof pInfo->slotDescription,
                i->slotDescription.slotDescription_val,
                i->slotDescription.slotDescription_len);
    px_pad_copy(pInfo->manufacturerID, sizeof pInfo->manufacturerID,
                i->manufacturerID.manufacturerID_val,
                i->manufacturerID.manufacturerID_len);
    pInfo->flags = (CK_FLAGS)i->flags;
    pInfo->hardwareVersion = px_version_in(&i->hardwareVersion);
    pInfo->firmwareVersion = px_version_in(&i->firmwareVersion);
  }
  xdr_free((xdrproc_t)xdr_C_GetSlotInfo_ret, (char *)&res);
  return rv;
}

PX_EXPORT CK_RV C_GetTokenInfo(CK_SLOT_ID slotID, CK_TOKEN_INFO_PTR pInfo) {
  if (!px_state_is_initialized())
    return CKR_CRYPTOKI_NOT_INITIALIZED;
  if (pInfo == NULL)
    return CKR_ARGUMENTS_BAD;
  C_GetTokenInfo_args a = {.slotID = (px_slot_id)slotID};
  C_GetTokenInfo_ret res;
  memset(&res, 0, sizeof res);
  CK_RV rv = CONTROL_RPC("C_GetTokenInfo", CKR_DEVICE_ERROR,
                         c_gettokeninfo_3, a, &res);
  if (rv != CKR_OK)
    return rv;
  rv = (CK_RV)res.rv;
  if (rv == CKR_OK) {
    const px_token_info *i = &res.info;
    px_pad_copy(pInfo->label, sizeof pInfo->label, i->label.label_val,
                i->label.label_len);
    px_pad_copy(pInfo->manufacturerID, sizeof pInfo->manufacturerID,
                i->manufacturerID.manufacturerID_val,
                i->manufacturerID.manufacturerID_len);
    px_pad_copy(pInfo->model, sizeof pInfo->model, i->model.model_val,
                i->model.model_len);
    px_pad_copy(pInfo->serialNumber, sizeof pInfo->serialNumber,
                i->serialNumber.serialNumber_val,
                i->serialNumber.serialNumber_len);
    pInfo->flags = (CK_FLAGS)i->flags;
    pInfo->ulMaxSessionCount = (CK_ULONG)i->maxSessionCount;
    pInfo->ulSessionCount = (CK_ULONG)i->sessionCount;
    pInfo->ulMaxRwSessionCount = (CK_ULONG)i->maxRwSessionCount;
    pInfo->ulRwSessionCount = (CK_ULONG)i->rwSessionCount;
    pInfo->ulMaxPinLen = (CK_ULONG)i->maxPinLen;
    pInfo->ulMinPinLen = (CK_ULONG)i->minPinLen;
    pInfo->ulTotalPublicMemory = (CK_ULONG)i->totalPublicMemory;
    pInfo->ulFreePublicMemory = (CK_ULONG)i->freePublicMemory;
    pInfo->ulTotalPrivateMemory = (CK_ULONG)i->totalPrivateMemory;
    pInfo->ulFreePrivateMemory = (CK_ULONG)i->freePrivateMemory;
    pInfo->hardwareVersion = px_version_in(&i->hardwareVersion);
    pInfo->firmwareVersion = px_version_in(&i->firmwareVersion);
    px_pad_copy(pInfo->utcTime, sizeof pInfo->utcTime, i->utcTime.utcTime_val,
                i->utcTime.utcTime_len);
  }
  xdr_free((xdrproc_t)xdr_C_GetTokenInfo_ret, (char *)&res);
  return rv;
}

/* Blocking waits would hold the control connection for an unbounded time;
 * only the CKF_DONT_BLOCK poll is forwarded. */
PX_EXPORT CK_RV C_WaitForSlotEvent(CK_FLAGS flags, CK_SLOT_ID_PTR pSlot,
                                   CK_VOID_PTR pReserved) {
  if (!px_state_is_initialized())
    return CKR_CRYPTOKI_NOT_INITIALIZED;
  if (pSlot == NULL || pReserved != NULL)
    return CKR_ARGUMENTS_BAD;
  if (!(flags & CKF_DONT_BLOCK))
    return CKR_FUNCTION_NOT_SUPPORTED;
  C_WaitForSlotEvent_args a = {.flags = (px_flags)flags};
  C_WaitForSlotEvent_ret res;
  memset(&res, 0, sizeof res);
  CK_RV rv = CONTROL_RPC("C_WaitForSlotEvent", CKR_FUNCTION_FAILED,
                         c_waitforslotevent_3, a, &res);
  if (rv != CKR_OK)
    return rv;
  rv = (CK_RV)res.rv;
  if (rv == CKR_OK)
    *pSlot = (CK_SLOT_ID)res.slotID;
  return rv;
}

PX_EXPORT CK_RV C_GetMechanismList(CK_SLOT_ID slotID,
                                   CK_MECHANISM_TYPE_PTR pMechanismList,
                                   CK_ULONG_PTR pulCount) {
  if (!px_state_is_initialized())
    return CKR_CRYPTOKI_NOT_INITIALIZED;
  if (pulCount == NULL)
    return CKR_ARGUMENTS_BAD;
  CK_ULONG capacity = pMechanismList ? *pulCount : 0;
  C_GetMechanismList_args a = {.slotID = (px_slot_id)slotID,
                               .count = (px_ulong)capacity};
  C_GetMechanismList_ret res;
  memset(&res, 0, sizeof res);
  CK_RV rv = CONTROL_RPC("C_GetMechanismList", CKR_DEVICE_ERROR,
                         c_getmechanismlist_3, a, &res);
  if (rv != CKR_OK)
    return rv;
  rv = px_list_out((CK_RV)res.rv, res.count,
                   res.mechanismList.mechanismList_val,
                   res.mechanismList.mechanismList_len, pMechanismList,
                   capacity, pulCount);
  xdr_free((xdrproc_t)xdr_C_GetMechanismList_ret, (char *)&res);
  return rv;
}

PX_EXPORT CK_RV C_GetMechanismInfo(CK_SLOT_ID slotID, CK_MECHANISM_TYPE type,
                                   CK_MECHANISM_INFO_PTR pInfo) {
  if (!px_state_is_initialized())
    return CKR_CRYPTOKI_NOT_INITIALIZED;
  if (pInfo == NULL)
    return CKR_ARGUMENTS_BAD;
  C_GetMechanismInfo_args a = {.slotID = (px_slot_id)slotID,
                               .type = (px_mechanism_type)type};
  C_GetMechanismInfo_ret res;
  memset(&res, 0, sizeof res);
  CK_RV rv = CONTROL_RPC("C_GetMechanismInfo", CKR_DEVICE_ERROR,
                         c_getmechanisminfo_3, a, &res);
  if (rv != CKR_OK)
    return rv;
  rv = (CK_RV)res.rv;
  if (rv == CKR_OK) {
    pInfo->ulMinKeySize = (CK_ULONG)res.info.minKeySize;
    pInfo->ulMaxKeySize = (CK_ULONG)res.info.maxKeySize;
    pInfo->flags = (CK_FLAGS)res.info.flags;
  }
  return rv;
}

PX_EXPORT CK_RV C_InitToken(CK_SLOT_ID slotID, CK_UTF8CHAR_PTR pPin,
                            CK_ULONG ulPinLen, CK_UTF8CHAR_PTR pLabel) {
  if (!px_state_is_initialized())
    return CKR_CRYPTOKI_NOT_INITIALIZED;
  if (bad_buf(pPin, ulPinLen) || pLabel == NULL)
    return CKR_ARGUMENTS_BAD;
  C_InitToken_args a = {.slotID = (px_slot_id)slotID};
  BYTES(a.pin, pPin, ulPinLen);
  BYTES(a.label, pLabel, 32); /* CK_TOKEN_INFO label: 32 blank-padded */
  px_rv res = 0;
  CK_RV rv = CONTROL_RPC("C_InitToken", CKR_DEVICE_ERROR,
                         c_inittoken_3, a, &res);
  return rv == CKR_OK ? (CK_RV)res : rv;
}
