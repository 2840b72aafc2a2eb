// BpfPrograms::put_new_inbound_sas, the restore's batched write of ov2_wire's
// inbound SA map: everything lands as single puts would leave it (entries and
// inbound_dests), and a batch that fails midway (a full map) leaves nothing of
// itself behind and reports why.  Its own BpfPrograms with a 16-entry sa_map.
#include <arpa/inet.h>
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "bpf_harness.h"
#include "common/error.h"

namespace ov2::test {
namespace {

constexpr uint32_t kCapacity = 16;

BpfPrograms& small_programs() {
  static BpfPrograms progs(BpfPrograms::Options{.cookie = 0x1122334455667788ULL, .inbound_sa_capacity = kCapacity});
  return progs;
}

ov2_sa_key key_for(uint32_t spi, uint8_t last_octet) {
  ov2_sa_key key{};
  key.spi_be = htonl(spi);
  key.family = OV2_AF_INET;
  const uint8_t dst[4] = {192, 0, 2, last_octet};
  std::memcpy(key.daddr, dst, sizeof dst);
  return key;
}

// `n` SAs from `first_spi`: every third UDP-encapsulated, to two destinations.
void make_sas(uint32_t first_spi, size_t n, std::vector<ov2_sa_key>& keys, std::vector<ov2_sa_value>& values) {
  for (size_t i = 0; i < n; ++i) {
    keys.push_back(key_for(first_spi + static_cast<uint32_t>(i), i % 2 == 0 ? 2 : 3));
    const bool udp = i % 3 == 0;
    values.push_back(
        ov2_sa_value{0x1000 + first_spi + i, udp ? OV2_SA_F_UDP_ENCAP : 0u, static_cast<uint16_t>(udp ? 4500 : 0), 0});
  }
}

size_t entries(BpfPrograms& p, const std::vector<ov2_sa_key>& keys) {
  size_t n = 0;
  for (const auto& k : keys) n += p.lookup_inbound_sa(k, nullptr) ? 1 : 0;
  return n;
}

TEST(WireBatch, ABatchWritesEveryEntryAndTheDestinationsAsSinglePutsWould) {
  BpfPrograms& p = small_programs();
  std::vector<ov2_sa_key> keys;
  std::vector<ov2_sa_value> values;
  make_sas(0x100, 12, keys, values);
  p.put_new_inbound_sas(keys, values);
  for (size_t i = 0; i < keys.size(); ++i) {
    ov2_sa_value v{};
    ASSERT_TRUE(p.lookup_inbound_sa(keys[i], &v)) << i;
    EXPECT_EQ(v.handle, values[i].handle);
    EXPECT_EQ(v.flags, values[i].flags);
    EXPECT_EQ(v.encap_dport, values[i].encap_dport);
  }
  const ov2_dest_sas two = p.inbound_destination_sas(keys[0]);  // SAs 0, 2, .. 10: UDP are 0, 6
  EXPECT_EQ(two.esp, 4u);
  EXPECT_EQ(two.udp_encap, 2u);
  const std::optional<ov2_dest_sas> in_map = p.inbound_destination(keys[0]);
  ASSERT_TRUE(in_map.has_value());
  EXPECT_EQ(in_map->esp, 1u);
  EXPECT_EQ(in_map->udp_encap, 1u);
  EXPECT_EQ(p.inbound_destinations_mismatch(), "");
  for (const auto& k : keys) p.delete_inbound_sa(k);
  EXPECT_EQ(entries(p, keys), 0u);
  EXPECT_FALSE(p.inbound_destination(keys[0]).has_value());
}

TEST(WireBatch, ABatchThatOverflowsTheMapLeavesNothingOfItselfAndSaysTheMapIsFull) {
  BpfPrograms& p = small_programs();
  // 6 SAs put one by one before (to 192.0.2.2 only), then a batch of 14: the map takes 10 of them.
  std::vector<ov2_sa_key> before_keys;
  std::vector<ov2_sa_value> before_values;
  for (uint32_t i = 0; i < 6; ++i) {
    before_keys.push_back(key_for(0x200 + i, 2));
    before_values.push_back(ov2_sa_value{0x2000 + i, 0, 0, 0});
    p.put_inbound_sa(before_keys.back(), before_values.back());
  }
  std::vector<ov2_sa_key> keys;
  std::vector<ov2_sa_value> values;
  make_sas(0x300, 14, keys, values);
  try {
    p.put_new_inbound_sas(keys, values);
    FAIL() << "a batch beyond the map's capacity was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::ResourceExhausted) << e.what();
    EXPECT_NE(std::string(e.what()).find("inbound SA map is full"), std::string::npos) << e.what();
  }
  EXPECT_EQ(entries(p, keys), 0u) << "entries of the failed batch stayed in the map";
  EXPECT_EQ(entries(p, before_keys), before_keys.size());
  // The counts are the 6 single puts' again, and the map agrees: 192.0.2.3 (the batch's only) is gone.
  const ov2_dest_sas two = p.inbound_destination_sas(before_keys[0]);
  EXPECT_EQ(two.esp, 6u);
  EXPECT_EQ(two.udp_encap, 0u);
  EXPECT_FALSE(p.inbound_destination(key_for(1, 3)).has_value());
  EXPECT_EQ(p.inbound_destinations_mismatch(), "");
  // The map is usable to its capacity afterwards.
  keys.resize(kCapacity - before_keys.size());
  values.resize(keys.size());
  p.put_new_inbound_sas(keys, values);
  EXPECT_EQ(entries(p, keys), keys.size());
  for (const auto& k : keys) p.delete_inbound_sa(k);
  for (const auto& k : before_keys) p.delete_inbound_sa(k);
}

}  // namespace
}  // namespace ov2::test
