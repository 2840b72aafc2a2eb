// The BPF/C++ metadata ABI: sizes, offsets, NDIS bit positions and a
// round-trip of every field.
#include <gtest/gtest.h>

#include <cstring>

#include "ov2_abi.h"

namespace {

TEST(Abi, MetadataLayoutMatchesTheDesign) {
  EXPECT_EQ(sizeof(ov2_meta), 32u);
  EXPECT_EQ(sizeof(ov2_nbl_info), 8u);
  EXPECT_EQ(offsetof(ov2_meta, nbl), 0u);
  EXPECT_EQ(offsetof(ov2_meta, tunnel_handle), 8u);
  EXPECT_EQ(offsetof(ov2_meta, sa_handle), 16u);
  EXPECT_EQ(offsetof(ov2_meta, magic), 24u);
  EXPECT_EQ(sizeof(ov2_shim), 24u);
  EXPECT_EQ(sizeof(ov2_sa_key), 24u);
  EXPECT_EQ(sizeof(ov2_spd_entry), 56u);
}

TEST(Abi, ReceiveWordUsesNdisBitPositions) {
  EXPECT_EQ(OV2_RX_SA_DELETE_REQ, 0x1u);
  EXPECT_EQ(OV2_RX_CRYPTO_DONE, 0x2u);
  EXPECT_EQ(OV2_RX_NEXT_CRYPTO_DONE, 0x4u);
  EXPECT_EQ(OV2_RX_STATUS_SHIFT, 16);
  // CryptoStatus is an enumeration: SUCCESS is 0, INVALID_PROTOCOL is 7.
  EXPECT_EQ(CRYPTO_SUCCESS, 0);
  EXPECT_EQ(CRYPTO_GENERIC_ERROR, 1);
  EXPECT_EQ(CRYPTO_TRANSPORT_AH_AUTH_FAILED, 2);
  EXPECT_EQ(CRYPTO_TRANSPORT_ESP_AUTH_FAILED, 3);
  EXPECT_EQ(CRYPTO_TUNNEL_AH_AUTH_FAILED, 4);
  EXPECT_EQ(CRYPTO_TUNNEL_ESP_AUTH_FAILED, 5);
  EXPECT_EQ(CRYPTO_INVALID_PACKET_SYNTAX, 6);
  EXPECT_EQ(CRYPTO_INVALID_PROTOCOL, 7);
}

// The same bits as the NDIS C bit-field, on this (little-endian) ABI.
struct NdisReceive {
  uint32_t SaDeleteReq : 1;
  uint32_t CryptoDone : 1;
  uint32_t NextCryptoDone : 1;
  uint32_t Reserved : 13;
  uint32_t CryptoStatus : 16;
};

TEST(Abi, ReceiveWordRoundTripsEveryFieldAgainstTheNdisBitfield) {
  for (uint32_t del = 0; del < 2; ++del)
    for (uint32_t done = 0; done < 2; ++done)
      for (uint32_t next = 0; next < 2; ++next)
        for (uint32_t status = 0; status < OV2_CRYPTO_STATUS_COUNT; ++status) {
          const uint32_t w = ov2_rx_make(del, done, next, status);
          EXPECT_EQ(ov2_rx_sa_delete_req(w) != 0, del != 0);
          EXPECT_EQ(ov2_rx_crypto_done(w), done);
          EXPECT_EQ(ov2_rx_next_crypto_done(w), next);
          EXPECT_EQ(ov2_rx_crypto_status(w), status);
          EXPECT_EQ(w & OV2_RX_RESERVED_MASK, 0u);
          NdisReceive n;
          std::memcpy(&n, &w, sizeof n);
          EXPECT_EQ(n.SaDeleteReq, del);
          EXPECT_EQ(n.CryptoDone, done);
          EXPECT_EQ(n.NextCryptoDone, next);
          EXPECT_EQ(n.Reserved, 0u);
          EXPECT_EQ(n.CryptoStatus, status);
        }
}

TEST(Abi, MetadataRoundTripsThroughBytes) {
  ov2_meta m{};
  m.nbl.tx.offload_handle = 0x0123456789abcdefull;
  m.tunnel_handle = 0xfedcba9876543210ull;
  m.sa_handle = 0x1111222233334444ull;
  m.magic = OV2_META_MAGIC;
  m.version = OV2_META_VERSION;
  m.dir = OV2_META_DIR_TX;
  uint8_t bytes[OV2_META_SIZE];
  std::memcpy(bytes, &m, sizeof bytes);
  ov2_meta back{};
  std::memcpy(&back, bytes, sizeof back);
  EXPECT_EQ(back.nbl.tx.offload_handle, 0x0123456789abcdefull);
  EXPECT_EQ(back.tunnel_handle, 0xfedcba9876543210ull);
  EXPECT_EQ(back.sa_handle, 0x1111222233334444ull);
  EXPECT_EQ(back.magic, OV2_META_MAGIC);
  EXPECT_EQ(back.version, OV2_META_VERSION);
  EXPECT_EQ(back.dir, OV2_META_DIR_TX);
  // The receive word shares the first 4 bytes of the union.
  ov2_meta rx{};
  rx.nbl.rx.info = ov2_rx_make(1, 1, 0, CRYPTO_TUNNEL_ESP_AUTH_FAILED);
  std::memcpy(bytes, &rx, sizeof bytes);
  EXPECT_EQ(bytes[0], 0x03);  // SaDeleteReq | CryptoDone
  EXPECT_EQ(bytes[2], CRYPTO_TUNNEL_ESP_AUTH_FAILED);  // CryptoStatus at byte 2 on little endian
  EXPECT_EQ(bytes[3], 0);
}

TEST(Abi, NdisIdentifiersHaveTheirWindowsValues) {
  EXPECT_EQ(IPSEC_OFFLOAD_V2_INBOUND, 0x1);
  EXPECT_EQ(IPSEC_OFFLOAD_V2_IPV6, 0x10);
  EXPECT_EQ(IPSEC_OFFLOAD_V2_ESN_SA, 0x1);
  EXPECT_EQ(IPSEC_OFFLOAD_V2_AUTHENTICATION_SHA_256, 0x4);
  EXPECT_EQ(IPSEC_OFFLOAD_V2_AUTHENTICATION_AES_GCM_256, 0x20);
  EXPECT_EQ(IPSEC_OFFLOAD_V2_ENCRYPTION_AES_GCM_128, 0x8);
  EXPECT_EQ(IPSEC_OFFLOAD_V2_ENCRYPTION_AES_CBC_256, 0x100);
  EXPECT_EQ(IPSEC_OFFLOAD_V2_UDP_ESP_ENCAPSULATION_TRANSPORT_OVER_TUNNEL, 0x8);
  EXPECT_EQ(IPSEC_OFFLOAD_V2_TRANSPORT_OVER_UDP_ESP_ENCAPSULATION_TUNNEL, 0x4);
}

}  // namespace
