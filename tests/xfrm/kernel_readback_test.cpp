// Statistics read back from the kernel: GETSA / GETAE replies shaped as the
// kernel builds them (net/xfrm/xfrm_user.c copy_to_user_state_extra() and
// build_aevent(): the xfrm_usersa_info body with curlft and stats, then the
// algorithm with its key, XFRMA_LASTUSED, XFRMA_OFFLOAD_DEV, the replay state
// as XFRMA_REPLAY_VAL or XFRMA_REPLAY_ESN_VAL, XFRMA_SA_DIR), parsed and
// turned into the counters `ipsecov2ctl stats` and `sa show` print.
// This kernel has no ESP, so no real state can be read back here: the
// messages are built byte for byte in the kernel's layout.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <linux/xfrm.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cstring>
#include <vector>

#include "common/error.h"
#include "engine/nic_engine.h"
#include "xfrm/kernel_shaped.h"
#include "xfrm/netlink_decoder.h"
#include "xfrm/xfrm_messages.h"

namespace ov2::xfrm::test {
namespace {

// The AEAD attribute the kernel echoes (with the key: the parser must ignore it).
std::vector<uint8_t> aead_attr() {
  std::vector<uint8_t> a(sizeof(xfrm_algo_aead) + 20, 0);
  auto* alg = reinterpret_cast<xfrm_algo_aead*>(a.data());
  std::strcpy(alg->alg_name, "rfc4106(gcm(aes))");
  alg->alg_key_len = 160;
  alg->alg_icv_len = 128;
  for (int i = 0; i < 20; ++i) alg->alg_key[i] = static_cast<char>(0xa0 + i);
  return a;
}

void append_common_tail(std::vector<uint8_t>& msg, uint8_t offload_flags, uint8_t sa_dir) {
  append_attr(msg, XFRMA_ALG_AEAD, aead_attr());
  const uint64_t lastused = 1764730004;
  append_attr(msg, XFRMA_LASTUSED, bytes_of(lastused));
  xfrm_user_offload xuo{};
  xuo.ifindex = 3;
  xuo.flags = offload_flags;
  append_attr(msg, XFRMA_OFFLOAD_DEV, bytes_of(xuo));
  append_attr(msg, kXfrmaSaDir, {&sa_dir, 1});
}

// XFRMA_REPLAY_ESN_VAL with a bitmap of `words` words; `fill` sets the fields.
template <typename Fill>
void append_esn_state(std::vector<uint8_t>& msg, uint32_t words, Fill fill) {
  std::vector<uint8_t> esn(sizeof(xfrm_replay_state_esn) + words * sizeof(uint32_t), 0);
  auto* rs = reinterpret_cast<xfrm_replay_state_esn*>(esn.data());
  rs->bmp_len = words;
  fill(*rs);
  append_attr(msg, XFRMA_REPLAY_ESN_VAL, esn);
}

TEST(KernelReadback, InboundStateWithLegacyReplayGivesPacketsBytesFailuresAndTheTopOfTheWindow) {
  xfrm_usersa_info si = state_body(AF_INET, "192.0.2.2", "192.0.2.1", 0x2001);
  si.replay_window = 32;
  si.curlft.bytes = 1500000;
  si.curlft.packets = 1000;
  si.stats.replay_window = 1;
  si.stats.replay = 3;
  si.stats.integrity_failed = 2;
  auto msg = kernel_message(XFRM_MSG_NEWSA, si);
  append_common_tail(msg, XFRM_OFFLOAD_INBOUND, kXfrmSaDirIn);
  xfrm_replay_state rs{};
  rs.oseq = 0;
  rs.seq = 1234;
  rs.bitmap = 0xffff7fff;
  append_attr(msg, XFRMA_REPLAY_VAL, bytes_of(rs));

  const SaReadback r = parse_sa(reinterpret_cast<const nlmsghdr*>(msg.data()));
  EXPECT_EQ(r.spi, 0x2001u);
  EXPECT_EQ(r.dst, IpAddr::parse("192.0.2.1"));
  EXPECT_EQ(r.src, IpAddr::parse("192.0.2.2"));
  EXPECT_EQ(r.reqid, 9u);
  EXPECT_EQ(r.packets, 1000u);
  EXPECT_EQ(r.bytes, 1500000u);
  EXPECT_EQ(r.use_time, 1764730005u);
  ASSERT_TRUE(r.replay_esn) << "the legacy replay state is read too";
  EXPECT_EQ(r.replay_esn->seq, 1234u);
  EXPECT_EQ(r.replay_esn->seq_hi, 0u);
  EXPECT_EQ(r.replay_esn->replay_window, 32u);
  EXPECT_EQ(r.replay_esn->bitmap, std::vector<uint32_t>{0xffff7fff});
  ASSERT_TRUE(r.offload_ifindex);
  EXPECT_EQ(*r.offload_ifindex, 3);

  const SaRuntimeCounters c = counters_from_kernel(r, Direction::In);
  EXPECT_EQ(c.packets, 1000u);
  EXPECT_EQ(c.bytes, 1500000u);
  EXPECT_EQ(c.by_reason[static_cast<size_t>(esp::Reason::Replayed)], 4u);  // replay + outside the window
  EXPECT_EQ(c.by_reason[static_cast<size_t>(esp::Reason::AuthFailed)], 2u);
  EXPECT_EQ(c.highest_seq, 1234u);
  EXPECT_EQ(c.next_seq, 0u);
}

TEST(KernelReadback, OutboundEsnStateGivesTheNext64BitSequenceNumber) {
  xfrm_usersa_info si = state_body(AF_INET6, "2001:db8::1", "2001:db8::2", 0x3001);
  si.flags = XFRM_STATE_ESN;
  si.curlft.packets = 0x1fffffff0ull;
  auto msg = kernel_message(XFRM_MSG_NEWSA, si);
  append_common_tail(msg, 0, kXfrmSaDirOut);
  append_esn_state(msg, 4, [](xfrm_replay_state_esn& rs) {
    rs.oseq = 0xfffffff0;
    rs.oseq_hi = 7;
    rs.replay_window = 128;
  });

  const SaReadback r = parse_sa(reinterpret_cast<const nlmsghdr*>(msg.data()));
  EXPECT_EQ(r.dst, IpAddr::parse("2001:db8::2"));
  ASSERT_TRUE(r.replay_esn);
  EXPECT_EQ(r.replay_esn->bitmap.size(), 4u);
  const SaRuntimeCounters c = counters_from_kernel(r, Direction::Out);
  EXPECT_EQ(c.packets, 0x1fffffff0ull);
  EXPECT_EQ(c.next_seq, (uint64_t{7} << 32 | 0xfffffff0u) + 1);
  EXPECT_EQ(c.highest_seq, 0u);
}

TEST(KernelReadback, ATruncatedReplayStateIsRefusedNotMisread) {
  auto msg = kernel_message(XFRM_MSG_NEWSA, state_body(AF_INET, "192.0.2.2", "192.0.2.1", 0x2001));
  const uint32_t half[2] = {1, 2};  // 8 of xfrm_replay_state's 12 bytes
  append_attr(msg, XFRMA_REPLAY_VAL, bytes_of(half));
  EXPECT_THROW(parse_sa(reinterpret_cast<const nlmsghdr*>(msg.data())), Error);
  auto esn = kernel_message(XFRM_MSG_NEWSA, state_body(AF_INET, "192.0.2.2", "192.0.2.1", 0x2001));
  append_attr(esn, XFRMA_REPLAY_ESN_VAL, bytes_of(half));
  EXPECT_THROW(parse_sa(reinterpret_cast<const nlmsghdr*>(esn.data())), Error);
}

// build_aevent(): xfrm_aevent_id, XFRMA_REPLAY_ESN_VAL, XFRMA_LTIME_VAL,
// XFRMA_REPLAY_THRESH, XFRMA_ETIMER_THRESH.
TEST(KernelReadback, ReplayEventGivesTheEsnStateAndTheLifetimeCounters) {
  xfrm_aevent_id ae{};
  ae.sa_id.spi = htonl(0x2001);
  ae.sa_id.family = AF_INET;
  ae.sa_id.proto = IPPROTO_ESP;
  ae.reqid = 9;
  ae.flags = XFRM_AE_RVAL;
  auto msg = kernel_message(XFRM_MSG_NEWAE, ae);
  append_esn_state(msg, 2, [](xfrm_replay_state_esn& rs) {
    rs.seq = 500;
    rs.seq_hi = 3;
    rs.replay_window = 64;
    rs.bmp[0] = 0xffffffff;
    rs.bmp[1] = 0x1;
  });
  xfrm_lifetime_cur cur{};
  cur.bytes = 9000;
  cur.packets = 6;
  append_attr(msg, XFRMA_LTIME_VAL, bytes_of(cur));
  const uint32_t rthresh = 0, ethresh = 10;
  append_attr(msg, XFRMA_REPLAY_THRESH, bytes_of(rthresh));
  append_attr(msg, XFRMA_ETIMER_THRESH, bytes_of(ethresh));

  const AeReadback r = parse_ae(reinterpret_cast<const nlmsghdr*>(msg.data()));
  ASSERT_TRUE(r.replay_esn);
  EXPECT_EQ(r.replay_esn->seq, 500u);
  EXPECT_EQ(r.replay_esn->seq_hi, 3u);
  EXPECT_EQ(r.replay_esn->bitmap, (std::vector<uint32_t>{0xffffffff, 0x1}));
  EXPECT_EQ(r.bytes, 9000u);
  EXPECT_EQ(r.packets, 6u);
}

}  // namespace
}  // namespace ov2::xfrm::test
