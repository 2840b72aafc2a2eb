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
#include "fake_engine.h"

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

}  // namespace
}  // namespace ov2
