// The AF_XDP engine against the real BPF programs without a data plane
// (root): inbound SAs land in ov2_wire's map with the right key and value,
// outbound SAs do not, deletes remove them, the SPDs reach ov2_tx's maps and
// the inbound snapshot.  (With a data plane: tests/e2e/control_*.)
#include "engine/afxdp_engine.h"

#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include "common/error.h"
#include "control/control_plane.h"
#include "control/request_handler.h"
#include "fake_engine.h"
#include "model/sa_json.h"

namespace ov2 {
namespace {

using test::gcm_sa;

class AfXdpEngineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root (BPF)";
    programs_ = std::make_unique<BpfPrograms>(BpfPrograms::Options{});
    engine_ =
        std::make_unique<AfXdpEngine>(*programs_, nullptr, [this](const std::string& m) { warnings_.push_back(m); });
  }
  std::unique_ptr<BpfPrograms> programs_;
  std::unique_ptr<AfXdpEngine> engine_;
  std::vector<std::string> warnings_;
};

TEST_F(AfXdpEngineTest, InboundSaIsWrittenToTheWireMapAndDeleted) {
  auto sa = gcm_sa(Direction::In, Mode::Tunnel, "192.0.2.1", "192.0.2.2", 0xabcdef01);
  sa.esn = true;
  sa.udp_encap = true;
  sa.encap_dport = 4600;
  engine_->add_sa(0x1000005, sa);

  ov2_sa_key key{};
  key.spi_be = htonl(0xabcdef01);
  key.family = OV2_AF_INET;
  inet_pton(AF_INET, "192.0.2.2", key.daddr);
  ov2_sa_value v{};
  ASSERT_TRUE(programs_->lookup_inbound_sa(key, &v));
  EXPECT_EQ(v.handle, 0x1000005u);
  EXPECT_EQ(v.flags, unsigned(OV2_SA_F_UDP_ENCAP | OV2_SA_F_ESN | OV2_SA_F_TUNNEL));
  EXPECT_EQ(v.encap_dport, 4600);

  engine_->update_sa(0x1000005, 42);
  EXPECT_THROW(engine_->update_sa(0x2000005, 42), Error);

  engine_->delete_sa(0x1000005);
  EXPECT_FALSE(programs_->lookup_inbound_sa(key, &v));
  engine_->delete_sa(0x1000005);  // unknown by now: nothing happens
  EXPECT_TRUE(warnings_.empty());
}

TEST_F(AfXdpEngineTest, OutboundSaIsNotInTheWireMap) {
  auto sa = gcm_sa(Direction::Out, Mode::Transport, "10.0.0.1", "10.0.0.2", 0x1234);
  engine_->add_sa(0x1000001, sa);
  ov2_sa_value v{};
  EXPECT_FALSE(programs_->lookup_inbound_sa(AfXdpEngine::inbound_key(sa), &v));
  engine_->update_sa(0x1000001, 1);  // known to the engine
}

TEST_F(AfXdpEngineTest, SpdSnapshotsAndOutboundMapsAreReplaced) {
  PolicySpec p;
  p.dir = Direction::Out;
  p.src = IpPrefix::parse("10.0.0.0/8");
  p.dst = IpPrefix::parse("10.2.0.0/16");
  p.action = PolicyAction::Bypass;
  engine_->set_outbound_spd({CompiledPolicy{7, p, 0, 0}});
  EXPECT_EQ(engine_->outbound_policies()->ordered.size(), 1u);
  uint32_t slot = 0;
  bool found = false;
  for (slot = 0; slot < 16; ++slot) {
    ov2_spd_entry e{};
    if (bpf_map_lookup_elem(programs_->spd_entries_fd(), &slot, &e) == 0 && e.valid && e.policy_id == 7) found = true;
  }
  EXPECT_TRUE(found);
  engine_->set_outbound_spd({});
  EXPECT_TRUE(engine_->outbound_policies()->ordered.empty());

  p.dir = Direction::In;
  engine_->set_inbound_spd({CompiledPolicy{8, p, 0, 0}});
  PacketSelector s{IpAddr::parse("10.1.1.1"), IpAddr::parse("10.2.1.1"), 6, 1, 2};
  ASSERT_NE(engine_->inbound_policies()->lookup(s), nullptr);
  EXPECT_EQ(engine_->inbound_policies()->lookup(s)->id, 8u);
}

// The per-destination counts of inbound SAs (BpfPrograms keeps them; ov2_wire
// reads inbound_dests) stay exactly right through everything the control
// plane does: single adds, batches, a batch refused half-way (by the SA
// database and by a full destination map) and rolled back, deletes, and a
// restore into freshly loaded programs (a daemon restart).  After each step
// the real BPF map is read back and compared with the counts.
class InboundDestinationsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root (BPF)";
    programs_ = std::make_unique<BpfPrograms>(BpfPrograms::Options{});
    engine_ = std::make_unique<AfXdpEngine>(*programs_, nullptr, [](const std::string&) {});
    plane_ = std::make_unique<ControlPlane>(*engine_, 20000);
    handler_ = std::make_unique<RequestHandler>(*plane_);
  }

  static nlohmann::json sa(uint32_t spi, const std::string& dst, bool natt = false, const char* dir = "in") {
    const char* src = dst.find(':') == std::string::npos ? "198.51.100.1" : "2001:db8::1";
    nlohmann::json j = {{"dir", dir},
                        {"mode", "tunnel"},
                        {"src", src},
                        {"dst", dst},
                        {"spi", spi},
                        {"aead", "aes-gcm-128"},
                        {"key", "000102030405060708090a0b0c0d0e0f10111213"}};
    if (natt) j["encap"] = "udp";
    return j;
  }
  nlohmann::json call(const nlohmann::json& request) {
    nlohmann::json r = request;
    r["version"] = 1;
    return nlohmann::json::parse(handler_->handle_line(r.dump()));
  }
  nlohmann::json add_batch(const nlohmann::json& sas) { return call({{"op", "sa.add"}, {"sas", sas}}); }
  static ov2_sa_key key_of(const std::string& dst) {
    ov2_sa_key k{};
    const IpAddr a = IpAddr::parse(dst);
    k.family = a.family == Family::V4 ? OV2_AF_INET : OV2_AF_INET6;
    std::copy(a.bytes.begin(), a.bytes.end(), k.daddr);
    return k;
  }
  // (ESP count, NAT-T count) of a destination, after checking the BPF map agrees with every count.
  std::pair<uint32_t, uint32_t> counts(const std::string& dst) {
    EXPECT_EQ(programs_->inbound_destinations_mismatch(), "");
    const ov2_dest_sas n = programs_->inbound_destination_sas(key_of(dst));
    const auto entry = programs_->inbound_destination(key_of(dst));
    EXPECT_EQ(entry.has_value(), n.esp + n.udp_encap != 0) << dst;
    return {n.esp, n.udp_encap};
  }
  using Counts = std::pair<uint32_t, uint32_t>;

  std::unique_ptr<BpfPrograms> programs_;
  std::unique_ptr<AfXdpEngine> engine_;
  std::unique_ptr<ControlPlane> plane_;
  std::unique_ptr<RequestHandler> handler_;
};

TEST_F(InboundDestinationsTest, CountsFollowAddsBatchesRollbacksDeletesAndARestore) {
  ASSERT_TRUE(call({{"op", "sa.add"}, {"sa", sa(0x100, "192.0.2.10")}})["ok"].get<bool>());
  ASSERT_TRUE(call({{"op", "sa.add"}, {"sa", sa(0x101, "192.0.2.10", true)}})["ok"].get<bool>());
  ASSERT_TRUE(call({{"op", "sa.add"}, {"sa", sa(0x102, "192.0.2.10", false, "out")}})["ok"].get<bool>());
  EXPECT_EQ(counts("192.0.2.10"), (Counts{1, 1})) << "an outbound SA does not count";
  nlohmann::json batch = nlohmann::json::array(
      {sa(0x200, "192.0.2.10"), sa(0x201, "192.0.2.11"), sa(0x202, "192.0.2.11", true), sa(0x203, "2001:db8::11")});
  const nlohmann::json added = add_batch(batch);
  ASSERT_TRUE(added["ok"].get<bool>()) << added.dump();
  EXPECT_EQ(counts("192.0.2.10"), (Counts{2, 1}));
  EXPECT_EQ(counts("192.0.2.11"), (Counts{1, 1}));
  EXPECT_EQ(counts("2001:db8::11"), (Counts{1, 0}));

  // Refused by the SA database at its 4th entry (the SPI of an SA already there): the three before it
  // (one to a new address) were installed and are taken back.
  const nlohmann::json refused = add_batch(nlohmann::json::array(
      {sa(0x300, "192.0.2.10"), sa(0x301, "192.0.2.12", true), sa(0x302, "192.0.2.11"), sa(0x201, "192.0.2.11")}));
  ASSERT_FALSE(refused["ok"].get<bool>());
  EXPECT_THAT(refused["error"]["message"].get<std::string>(), ::testing::HasSubstr("sas[3]"));
  EXPECT_EQ(counts("192.0.2.10"), (Counts{2, 1}));
  EXPECT_EQ(counts("192.0.2.11"), (Counts{1, 1}));
  EXPECT_EQ(counts("192.0.2.12"), (Counts{0, 0}));

  // Deleted: an address keeps its entry while an SA of that kind is left.
  ASSERT_TRUE(call({{"op", "sa.del"}, {"handles", {added["handles"][0], added["handles"][2]}}})["ok"].get<bool>());
  EXPECT_EQ(counts("192.0.2.10"), (Counts{1, 1}));
  EXPECT_EQ(counts("192.0.2.11"), (Counts{1, 0}));

  // A restart: the same SAs restored into freshly loaded programs count the same, and the map agrees.
  std::vector<SaRecord> saved;
  for (const SaRecord* r : plane_->sas().list()) saved.push_back(*r);
  handler_.reset();
  plane_.reset();
  engine_.reset();
  programs_ = std::make_unique<BpfPrograms>(BpfPrograms::Options{});
  engine_ = std::make_unique<AfXdpEngine>(*programs_, nullptr, [](const std::string&) {});
  plane_ = std::make_unique<ControlPlane>(*engine_, 20000);
  handler_ = std::make_unique<RequestHandler>(*plane_);
  EXPECT_EQ(counts("192.0.2.10"), (Counts{0, 0}));
  plane_->restore(saved, {}, 100, 1, nullptr);
  EXPECT_EQ(counts("192.0.2.10"), (Counts{1, 1}));
  EXPECT_EQ(counts("192.0.2.11"), (Counts{1, 0}));
  EXPECT_EQ(counts("2001:db8::11"), (Counts{1, 0}));

  // Everything deleted: no entry left.
  nlohmann::json all = nlohmann::json::array();
  for (const SaRecord* r : plane_->sas().list()) all.push_back(handle_to_string(r->handle));
  ASSERT_TRUE(call({{"op", "sa.del"}, {"handles", all}})["ok"].get<bool>());
  for (const char* dst : {"192.0.2.10", "192.0.2.11", "2001:db8::11"}) EXPECT_EQ(counts(dst), (Counts{0, 0})) << dst;
}

// A batch that the data plane refuses half-way (the destination map is full:
// OV2_MAX_INBOUND_DESTS addresses) is rolled back: the counts and the map are
// what they were before it, SAs to addresses already there included.
TEST_F(InboundDestinationsTest, ABatchRefusedByAFullDestinationMapLeavesTheCountsAsTheyWere) {
  auto address = [](uint32_t i) {
    return "10." + std::to_string(i >> 16) + "." + std::to_string((i >> 8) & 255) + "." + std::to_string(i & 255);
  };
  nlohmann::json fill = nlohmann::json::array();
  for (uint32_t i = 0; i < OV2_MAX_INBOUND_DESTS - 1; ++i) {
    fill.push_back(sa(0x1000 + i, address(i)));
    if (fill.size() == 1000 || i == OV2_MAX_INBOUND_DESTS - 2) {
      ASSERT_TRUE(add_batch(fill)["ok"].get<bool>());
      fill = nlohmann::json::array();
    }
  }
  const nlohmann::json refused = add_batch(nlohmann::json::array({
      sa(0x90000, address(3), true),                    // a second SA, of the other kind, to an address there
      sa(0x90001, address(OV2_MAX_INBOUND_DESTS - 1)),  // the last free destination
      sa(0x90002, address(OV2_MAX_INBOUND_DESTS - 1)),  // a second SA to it
      sa(0x90003, address(OV2_MAX_INBOUND_DESTS)),      // one destination too many
  }));
  ASSERT_FALSE(refused["ok"].get<bool>()) << refused.dump();
  EXPECT_THAT(refused["error"]["message"].get<std::string>(),
              ::testing::HasSubstr("sas[3]: inbound destination map is full"));
  EXPECT_EQ(counts(address(3)), (Counts{1, 0}));
  EXPECT_EQ(counts(address(OV2_MAX_INBOUND_DESTS - 1)), (Counts{0, 0}));
  EXPECT_EQ(counts(address(OV2_MAX_INBOUND_DESTS)), (Counts{0, 0}));
  EXPECT_EQ(plane_->sas().size(), size_t{OV2_MAX_INBOUND_DESTS - 1});
  // The same batch without the one too many goes in.
  ASSERT_TRUE(
      add_batch(nlohmann::json::array({sa(0x90000, address(3), true), sa(0x90001, address(OV2_MAX_INBOUND_DESTS - 1)),
                                       sa(0x90002, address(OV2_MAX_INBOUND_DESTS - 1))}))["ok"]
          .get<bool>());
  EXPECT_EQ(counts(address(3)), (Counts{1, 1}));
  EXPECT_EQ(counts(address(OV2_MAX_INBOUND_DESTS - 1)), (Counts{2, 0}));
}

}  // namespace
}  // namespace ov2
