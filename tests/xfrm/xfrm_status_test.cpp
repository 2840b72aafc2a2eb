// The NDIS receive word <-> Linux struct xfrm_offload {flags, status}
// conversion: every status, every flag bit, and the inputs it must refuse.
#include "xfrm/xfrm_status.h"

#include <gtest/gtest.h>

#include "ov2_abi.h"

namespace ov2::xfrm {
namespace {

struct StatusPair {
  uint32_t ndis;
  uint32_t linux_bit;
};
// NDIS enumeration value -> Linux bit, from ntddndis.h and include/net/xfrm.h.
constexpr StatusPair kStatusTable[] = {
    {CRYPTO_SUCCESS, 1},
    {CRYPTO_GENERIC_ERROR, 2},
    {CRYPTO_TRANSPORT_AH_AUTH_FAILED, 4},
    {CRYPTO_TRANSPORT_ESP_AUTH_FAILED, 8},
    {CRYPTO_TUNNEL_AH_AUTH_FAILED, 16},
    {CRYPTO_TUNNEL_ESP_AUTH_FAILED, 32},
    {CRYPTO_INVALID_PACKET_SYNTAX, 64},
    {CRYPTO_INVALID_PROTOCOL, 128},
};

TEST(XfrmStatus, LinuxConstantsHaveTheKernelsValues) {
  EXPECT_EQ(xfrm_offload_SA_DELETE_REQ, 1u);
  EXPECT_EQ(xfrm_offload_CRYPTO_DONE, 2u);
  EXPECT_EQ(xfrm_offload_CRYPTO_NEXT_DONE, 4u);
  EXPECT_EQ(xfrm_offload_CRYPTO_FALLBACK, 8u);
  EXPECT_EQ(xfrm_offload_XFRM_GSO_SEGMENT, 16u);
  EXPECT_EQ(xfrm_offload_XFRM_GRO, 32u);
  EXPECT_EQ(xfrm_offload_XFRM_ESP_NO_TRAILER, 64u);
  EXPECT_EQ(xfrm_offload_XFRM_DEV_RESUME, 128u);
  EXPECT_EQ(xfrm_offload_XFRM_XMIT, 256u);
  EXPECT_EQ(xfrm_offload_CRYPTO_SUCCESS, 1u);
  EXPECT_EQ(xfrm_offload_CRYPTO_INVALID_PROTOCOL, 128u);
}

TEST(XfrmStatus, EveryNdisStatusWithCryptoDoneMapsToItsLinuxBitAndBack) {
  for (const auto& p : kStatusTable) {
    const uint32_t word = ov2_rx_make(0, 1, 0, p.ndis);
    const auto lx = xfrm_offload_from_ndis_rx(word);
    ASSERT_TRUE(lx) << "ndis status " << p.ndis;
    EXPECT_EQ(lx->flags, xfrm_offload_CRYPTO_DONE) << "ndis status " << p.ndis;
    EXPECT_EQ(lx->status, p.linux_bit) << "ndis status " << p.ndis;
    const auto back = ndis_rx_from_xfrm_offload(*lx);
    ASSERT_TRUE(back);
    EXPECT_EQ(*back, word) << "ndis status " << p.ndis;
  }
}

TEST(XfrmStatus, FlagBitsMapBothWays) {
  // SaDeleteReq alone (no crypto information), and with CryptoDone/NextCryptoDone.
  struct {
    uint32_t word;
    XfrmOffloadRx lx;
  } const cases[] = {
      {0, {0, 0}},
      {OV2_RX_SA_DELETE_REQ, {xfrm_offload_SA_DELETE_REQ, 0}},
      {OV2_RX_CRYPTO_DONE, {xfrm_offload_CRYPTO_DONE, xfrm_offload_CRYPTO_SUCCESS}},
      {OV2_RX_CRYPTO_DONE | OV2_RX_NEXT_CRYPTO_DONE,
       {xfrm_offload_CRYPTO_DONE | xfrm_offload_CRYPTO_NEXT_DONE, xfrm_offload_CRYPTO_SUCCESS}},
      {OV2_RX_SA_DELETE_REQ | OV2_RX_CRYPTO_DONE | OV2_RX_NEXT_CRYPTO_DONE |
           (uint32_t{CRYPTO_TUNNEL_ESP_AUTH_FAILED} << OV2_RX_STATUS_SHIFT),
       {xfrm_offload_SA_DELETE_REQ | xfrm_offload_CRYPTO_DONE | xfrm_offload_CRYPTO_NEXT_DONE,
        xfrm_offload_CRYPTO_TUNNEL_ESP_AUTH_FAILED}},
  };
  for (const auto& c : cases) {
    const auto lx = xfrm_offload_from_ndis_rx(c.word);
    ASSERT_TRUE(lx) << std::hex << c.word;
    EXPECT_EQ(*lx, c.lx) << std::hex << c.word;
    const auto back = ndis_rx_from_xfrm_offload(c.lx);
    ASSERT_TRUE(back) << std::hex << c.word;
    EXPECT_EQ(*back, c.word);
  }
}

TEST(XfrmStatus, InvalidNdisWordsAreRefused) {
  EXPECT_FALSE(xfrm_offload_from_ndis_rx(OV2_RX_CRYPTO_DONE | (1u << 3)));  // reserved bit
  EXPECT_FALSE(xfrm_offload_from_ndis_rx(OV2_RX_CRYPTO_DONE | 0x8000u));    // reserved bit 15
  EXPECT_FALSE(xfrm_offload_from_ndis_rx(ov2_rx_make(0, 1, 0, 8)));         // status past the enum
  EXPECT_FALSE(xfrm_offload_from_ndis_rx(ov2_rx_make(0, 1, 0, 0xffff)));
  EXPECT_FALSE(xfrm_offload_from_ndis_rx(OV2_RX_NEXT_CRYPTO_DONE));                     // next without done
  EXPECT_FALSE(xfrm_offload_from_ndis_rx(ov2_rx_make(0, 0, 0, CRYPTO_GENERIC_ERROR)));  // status without done
}

TEST(XfrmStatus, KernelProcessingFlagsAreIgnoredAndUnknownFlagsRefused) {
  for (uint32_t internal : {8u, 16u, 32u, 64u, 128u, 256u}) {
    const auto w = ndis_rx_from_xfrm_offload({xfrm_offload_CRYPTO_DONE | internal, xfrm_offload_CRYPTO_SUCCESS});
    ASSERT_TRUE(w) << internal;
    EXPECT_EQ(*w, OV2_RX_CRYPTO_DONE) << internal;
  }
  EXPECT_FALSE(ndis_rx_from_xfrm_offload({xfrm_offload_CRYPTO_DONE | 512u, xfrm_offload_CRYPTO_SUCCESS}));
  EXPECT_FALSE(ndis_rx_from_xfrm_offload({0x80000000u, 0}));
  EXPECT_FALSE(ndis_rx_from_xfrm_offload({xfrm_offload_CRYPTO_NEXT_DONE, xfrm_offload_CRYPTO_SUCCESS}));
  EXPECT_FALSE(ndis_rx_from_xfrm_offload({xfrm_offload_CRYPTO_DONE, 256u}));  // status bit past INVALID_PROTOCOL
}

TEST(XfrmStatus, StatusIsIgnoredWithoutCryptoDone) {
  const auto w = ndis_rx_from_xfrm_offload({xfrm_offload_SA_DELETE_REQ, xfrm_offload_CRYPTO_GENERIC_ERROR});
  ASSERT_TRUE(w);
  EXPECT_EQ(*w, OV2_RX_SA_DELETE_REQ);
}

TEST(XfrmStatus, ZeroLinuxStatusIsAGenericError) {
  const auto w = ndis_rx_from_xfrm_offload({xfrm_offload_CRYPTO_DONE, 0});
  ASSERT_TRUE(w);
  EXPECT_EQ(ov2_rx_crypto_status(*w), uint32_t{CRYPTO_GENERIC_ERROR});
  EXPECT_TRUE(ov2_rx_crypto_done(*w));
}

TEST(XfrmStatus, SeveralLinuxStatusBitsFailClosedToTheMostSpecificFailure) {
  auto status_of = [](uint32_t linux_status) {
    const auto w = ndis_rx_from_xfrm_offload({xfrm_offload_CRYPTO_DONE, linux_status});
    return w ? ov2_rx_crypto_status(*w) : 0xdeadu;
  };
  // A failure bit beats SUCCESS.
  EXPECT_EQ(status_of(xfrm_offload_CRYPTO_SUCCESS | xfrm_offload_CRYPTO_TUNNEL_ESP_AUTH_FAILED),
            uint32_t{CRYPTO_TUNNEL_ESP_AUTH_FAILED});
  EXPECT_EQ(status_of(xfrm_offload_CRYPTO_SUCCESS | xfrm_offload_CRYPTO_GENERIC_ERROR), uint32_t{CRYPTO_GENERIC_ERROR});
  // Auth failures beat protocol/syntax/generic; lower auth bit first.
  EXPECT_EQ(status_of(xfrm_offload_CRYPTO_GENERIC_ERROR | xfrm_offload_CRYPTO_INVALID_PROTOCOL |
                      xfrm_offload_CRYPTO_TRANSPORT_ESP_AUTH_FAILED),
            uint32_t{CRYPTO_TRANSPORT_ESP_AUTH_FAILED});
  EXPECT_EQ(status_of(xfrm_offload_CRYPTO_TRANSPORT_AH_AUTH_FAILED | xfrm_offload_CRYPTO_TUNNEL_ESP_AUTH_FAILED),
            uint32_t{CRYPTO_TRANSPORT_AH_AUTH_FAILED});
  EXPECT_EQ(status_of(xfrm_offload_CRYPTO_INVALID_PACKET_SYNTAX | xfrm_offload_CRYPTO_INVALID_PROTOCOL),
            uint32_t{CRYPTO_INVALID_PROTOCOL});
  EXPECT_EQ(status_of(xfrm_offload_CRYPTO_INVALID_PACKET_SYNTAX | xfrm_offload_CRYPTO_GENERIC_ERROR),
            uint32_t{CRYPTO_INVALID_PACKET_SYNTAX});
}

TEST(XfrmStatus, EveryValidNdisWordRoundTrips) {
  int valid = 0;
  for (uint32_t flags = 0; flags < 8; ++flags) {
    for (uint32_t status = 0; status < 10; ++status) {
      const uint32_t word = flags | (status << OV2_RX_STATUS_SHIFT);
      const auto lx = xfrm_offload_from_ndis_rx(word);
      if (!lx) continue;
      ++valid;
      const auto back = ndis_rx_from_xfrm_offload(*lx);
      ASSERT_TRUE(back) << std::hex << word;
      EXPECT_EQ(*back, word) << std::hex << word;
    }
  }
  // 2 words without CryptoDone (SaDeleteReq 0/1) + 2 x 2 x 8 with it.
  EXPECT_EQ(valid, 2 + 2 * 2 * 8);
}

}  // namespace
}  // namespace ov2::xfrm
