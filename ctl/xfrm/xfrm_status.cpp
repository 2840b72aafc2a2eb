#include "xfrm/xfrm_status.h"

#include "ov2_abi.h"

namespace ov2::xfrm {

namespace {

// NDIS CryptoStatus value (the index) -> its Linux status bit.
constexpr uint32_t kLinuxStatusOfNdis[OV2_CRYPTO_STATUS_COUNT] = {
    xfrm_offload_CRYPTO_SUCCESS,                    // CRYPTO_SUCCESS = 0
    xfrm_offload_CRYPTO_GENERIC_ERROR,              // CRYPTO_GENERIC_ERROR = 1
    xfrm_offload_CRYPTO_TRANSPORT_AH_AUTH_FAILED,   // 2
    xfrm_offload_CRYPTO_TRANSPORT_ESP_AUTH_FAILED,  // 3
    xfrm_offload_CRYPTO_TUNNEL_AH_AUTH_FAILED,      // 4
    xfrm_offload_CRYPTO_TUNNEL_ESP_AUTH_FAILED,     // 5
    xfrm_offload_CRYPTO_INVALID_PACKET_SYNTAX,      // 6
    xfrm_offload_CRYPTO_INVALID_PROTOCOL,           // 7
};

uint32_t ndis_status_of_linux(uint32_t status) {
  if (status == xfrm_offload_CRYPTO_SUCCESS) return CRYPTO_SUCCESS;
  const uint32_t failures = status & ~xfrm_offload_CRYPTO_SUCCESS;
  // Most specific first (fail closed; see the header).
  static constexpr uint32_t kOrder[] = {
      CRYPTO_TRANSPORT_AH_AUTH_FAILED, CRYPTO_TRANSPORT_ESP_AUTH_FAILED, CRYPTO_TUNNEL_AH_AUTH_FAILED,
      CRYPTO_TUNNEL_ESP_AUTH_FAILED,   CRYPTO_INVALID_PROTOCOL,          CRYPTO_INVALID_PACKET_SYNTAX,
  };
  for (uint32_t ndis : kOrder)
    if (failures & kLinuxStatusOfNdis[ndis]) return ndis;
  return CRYPTO_GENERIC_ERROR;  // zero, or GENERIC_ERROR alone
}

}  // namespace

std::optional<XfrmOffloadRx> xfrm_offload_from_ndis_rx(uint32_t word) {
  if (word & OV2_RX_RESERVED_MASK) return std::nullopt;
  const uint32_t status = ov2_rx_crypto_status(word);
  if (status >= OV2_CRYPTO_STATUS_COUNT) return std::nullopt;
  const bool done = ov2_rx_crypto_done(word);
  const bool next_done = ov2_rx_next_crypto_done(word);
  if (next_done && !done) return std::nullopt;
  if (!done && status != CRYPTO_SUCCESS) return std::nullopt;

  XfrmOffloadRx rx;
  if (ov2_rx_sa_delete_req(word)) rx.flags |= xfrm_offload_SA_DELETE_REQ;
  if (done) {
    rx.flags |= xfrm_offload_CRYPTO_DONE;
    rx.status = kLinuxStatusOfNdis[status];
  }
  if (next_done) rx.flags |= xfrm_offload_CRYPTO_NEXT_DONE;
  return rx;
}

std::optional<uint32_t> ndis_rx_from_xfrm_offload(const XfrmOffloadRx& rx) {
  constexpr uint32_t kKnownFlags = xfrm_offload_SA_DELETE_REQ | xfrm_offload_CRYPTO_DONE |
                                   xfrm_offload_CRYPTO_NEXT_DONE | xfrm_offload_INTERNAL_FLAGS;
  if (rx.flags & ~kKnownFlags) return std::nullopt;
  const bool done = rx.flags & xfrm_offload_CRYPTO_DONE;
  const bool next_done = rx.flags & xfrm_offload_CRYPTO_NEXT_DONE;
  if (next_done && !done) return std::nullopt;
  if (done && (rx.status & ~xfrm_offload_STATUS_ALL)) return std::nullopt;
  const uint32_t status = done ? ndis_status_of_linux(rx.status) : static_cast<uint32_t>(CRYPTO_SUCCESS);
  return ov2_rx_make(rx.flags & xfrm_offload_SA_DELETE_REQ, done, next_done, status);
}

}  // namespace ov2::xfrm
