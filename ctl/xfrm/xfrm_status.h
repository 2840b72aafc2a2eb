// The one conversion between the NDIS receive word (our ABI, shared/ov2_abi.h)
// and Linux's struct xfrm_offload {flags, status} (include/net/xfrm.h).
//
// Both sides use the same names with different numbers: NDIS CryptoStatus is
// an enumeration 0..7 (CRYPTO_SUCCESS == 0), Linux xo->status is a set of bit
// flags (CRYPTO_SUCCESS == 1 ... CRYPTO_INVALID_PROTOCOL == 128).  Nothing else
// in the project may translate between them.
#pragma once

#include <cstdint>
#include <optional>

namespace ov2::xfrm {

// struct xfrm_offload.flags (include/net/xfrm.h; not UAPI, so defined here).
inline constexpr uint32_t xfrm_offload_SA_DELETE_REQ = 1;
inline constexpr uint32_t xfrm_offload_CRYPTO_DONE = 2;
inline constexpr uint32_t xfrm_offload_CRYPTO_NEXT_DONE = 4;
// The kernel's own processing bits: they say nothing about the receive verdict.
inline constexpr uint32_t xfrm_offload_CRYPTO_FALLBACK = 8;
inline constexpr uint32_t xfrm_offload_XFRM_GSO_SEGMENT = 16;
inline constexpr uint32_t xfrm_offload_XFRM_GRO = 32;
inline constexpr uint32_t xfrm_offload_XFRM_ESP_NO_TRAILER = 64;
inline constexpr uint32_t xfrm_offload_XFRM_DEV_RESUME = 128;
inline constexpr uint32_t xfrm_offload_XFRM_XMIT = 256;
inline constexpr uint32_t xfrm_offload_INTERNAL_FLAGS = xfrm_offload_CRYPTO_FALLBACK | xfrm_offload_XFRM_GSO_SEGMENT |
                                                        xfrm_offload_XFRM_GRO | xfrm_offload_XFRM_ESP_NO_TRAILER |
                                                        xfrm_offload_XFRM_DEV_RESUME | xfrm_offload_XFRM_XMIT;

// struct xfrm_offload.status bit flags.
inline constexpr uint32_t xfrm_offload_CRYPTO_SUCCESS = 1;
inline constexpr uint32_t xfrm_offload_CRYPTO_GENERIC_ERROR = 2;
inline constexpr uint32_t xfrm_offload_CRYPTO_TRANSPORT_AH_AUTH_FAILED = 4;
inline constexpr uint32_t xfrm_offload_CRYPTO_TRANSPORT_ESP_AUTH_FAILED = 8;
inline constexpr uint32_t xfrm_offload_CRYPTO_TUNNEL_AH_AUTH_FAILED = 16;
inline constexpr uint32_t xfrm_offload_CRYPTO_TUNNEL_ESP_AUTH_FAILED = 32;
inline constexpr uint32_t xfrm_offload_CRYPTO_INVALID_PACKET_SYNTAX = 64;
inline constexpr uint32_t xfrm_offload_CRYPTO_INVALID_PROTOCOL = 128;
inline constexpr uint32_t xfrm_offload_STATUS_ALL = 0xff;

// The receive-side part of struct xfrm_offload.
struct XfrmOffloadRx {
  uint32_t flags = 0;
  uint32_t status = 0;
  bool operator==(const XfrmOffloadRx&) const = default;
};

// NDIS receive word -> Linux {flags, status}.  Returns nullopt for a word the
// NDIS definition does not allow: reserved bits 3..15 set, CryptoStatus > 7,
// NextCryptoDone without CryptoDone, or a non-zero CryptoStatus without
// CryptoDone (no offload information must mean status 0).  CryptoDone=0 gives
// status 0 (Linux looks at status only when CRYPTO_DONE is set).
std::optional<XfrmOffloadRx> xfrm_offload_from_ndis_rx(uint32_t ndis_rx_word);

// Linux {flags, status} -> NDIS receive word.  Never throws, never allocates
// (usable per packet).
//  - flags: SA_DELETE_REQ, CRYPTO_DONE, CRYPTO_NEXT_DONE map to their NDIS
//    bits; the kernel's processing bits (CRYPTO_FALLBACK, XFRM_GSO_SEGMENT,
//    XFRM_GRO, XFRM_ESP_NO_TRAILER, XFRM_DEV_RESUME, XFRM_XMIT) are ignored;
//    any other bit, or CRYPTO_NEXT_DONE without CRYPTO_DONE, -> nullopt.
//  - status is read only with CRYPTO_DONE (without it the word carries status 0,
//    like xfrm_input ignores it).  Bits above 128 -> nullopt.
//  - Exactly CRYPTO_SUCCESS -> NDIS CRYPTO_SUCCESS.  Zero -> CRYPTO_GENERIC_ERROR
//    (xfrm_input drops it as a buffer error).  Several bits: we fail closed —
//    any failure bit wins over CRYPTO_SUCCESS (the kernel would accept
//    SUCCESS|failure; NDIS cannot say both, and a packet some check failed on
//    must not be accepted).  Among failures the most specific wins, in the
//    order xfrm_input tests them: the auth-failed bits (lowest first), then
//    INVALID_PROTOCOL, then INVALID_PACKET_SYNTAX, then GENERIC_ERROR.
std::optional<uint32_t> ndis_rx_from_xfrm_offload(const XfrmOffloadRx& linux_rx);

}  // namespace ov2::xfrm
