// Message building and parsing that iproute2 cannot be compared with:
// UPDATE_SA (NEWAE), reading SAs back (parse_sa / parse_ae), refusals of
// requests the kernel could not express, the SA table, and the wording of
// kernel refusals.
#include "xfrm/xfrm_messages.h"

#include <gtest/gtest.h>
#include <linux/xfrm.h>

#include <cerrno>
#include <cstring>

#include "common/error.h"
#include "xfrm/netlink_decoder.h"
#include "xfrm/xfrm_sa_table.h"
#include "xfrm/xfrm_socket.h"

namespace ov2::xfrm {
namespace {

using test::decode_xfrm_message;
using test::Field;

std::string field(const std::vector<Field>& fields, const std::string& name) {
  for (const auto& f : fields)
    if (f.name == name) return f.value;
  return "<missing " + name + ">";
}

SaSpec esn_sa() {
  SaSpec sa;
  sa.dir = Direction::In;
  sa.mode = Mode::Tunnel;
  sa.src = IpAddr::parse("2001:db8::2");
  sa.dst = IpAddr::parse("2001:db8::1");
  sa.spi = 0xc0ffee01;
  sa.enc = EncAlg::AesGcm256;
  sa.enc_key = SecureBytes::from_hex("0x" + std::string(72, '5'));  // test-only
  sa.esn = true;
  sa.seq_hi = 41;
  sa.replay_window = 128;
  return sa;
}

TEST(XfrmMessages, UpdateSaIsNewAeWithReplaceAndTheFullReplayStateIncludingBitmap) {
  ReplayEsn st;
  st.seq = 1000;
  st.seq_hi = 42;
  st.replay_window = 128;
  st.bitmap = {0xffffffffu, 1u, 0u, 0x80000000u};
  const SaId id = sa_id_of(esn_sa());
  NetlinkRequest req = build_new_ae(id, 7, st);
  const auto m = decode_xfrm_message(req.bytes());
  EXPECT_EQ(m.type, XFRM_MSG_NEWAE);
  EXPECT_EQ(m.flags, NLM_F_REQUEST | NLM_F_ACK | NLM_F_REPLACE);
  EXPECT_EQ(field(m.body, "sa_id.spi"), std::to_string(0xc0ffee01u));
  EXPECT_EQ(field(m.body, "sa_id.family"), "10");
  EXPECT_EQ(field(m.body, "sa_id.proto"), "50");
  EXPECT_EQ(field(m.body, "reqid"), "7");
  ASSERT_EQ(m.attrs.size(), 1u);
  EXPECT_EQ(m.attrs[0].type, XFRMA_REPLAY_ESN_VAL);
  EXPECT_EQ(field(m.attrs[0].fields, "payload_len"), std::to_string(sizeof(xfrm_replay_state_esn) + 16));
  EXPECT_EQ(field(m.attrs[0].fields, "bmp_len"), "4");
  EXPECT_EQ(field(m.attrs[0].fields, "seq_hi"), "42");
  EXPECT_EQ(field(m.attrs[0].fields, "seq"), "1000");
  EXPECT_EQ(field(m.attrs[0].fields, "bmp"), "ffffffff010000000000000000000080");

  // And the kernel's reply format parses back to the same state.
  const AeReadback back = parse_ae(req.header());
  ASSERT_TRUE(back.replay_esn);
  EXPECT_EQ(back.replay_esn->seq_hi, 42u);
  EXPECT_EQ(back.replay_esn->bitmap, st.bitmap);
}

TEST(XfrmMessages, UpdateSaWithoutABitmapCoveringTheWindowIsRefused) {
  ReplayEsn st;
  st.replay_window = 64;
  st.bitmap = {0};
  EXPECT_THROW(build_new_ae(sa_id_of(esn_sa()), 1, st), Error);
  st.bitmap.clear();
  EXPECT_THROW(build_new_ae(sa_id_of(esn_sa()), 1, st), Error);
}

TEST(XfrmMessages, GetAeAndGetSaAskForTheSaByItsKernelKey) {
  const SaId id = sa_id_of(esn_sa());
  const auto ae = decode_xfrm_message(build_get_ae(id, 3).bytes());
  EXPECT_EQ(ae.type, XFRM_MSG_GETAE);
  EXPECT_EQ(field(ae.body, "flags"), std::to_string(XFRM_AE_RVAL));
  EXPECT_EQ(field(ae.body, "sa_id.spi"), std::to_string(0xc0ffee01u));
  const auto sa = decode_xfrm_message(build_get_sa(id).bytes());
  EXPECT_EQ(sa.type, XFRM_MSG_GETSA);
  EXPECT_EQ(field(sa.body, "spi"), std::to_string(0xc0ffee01u));
  ASSERT_EQ(sa.attrs.size(), 1u);
  EXPECT_EQ(sa.attrs[0].type, XFRMA_SRCADDR);
  EXPECT_EQ(field(sa.attrs[0].fields, "addr"), "20010db8000000000000000000000002");
}

TEST(XfrmMessages, ParseSaReadsCountersReplayStateAndOffloadFromAStateMessage) {
  NewSaOptions options;
  options.ifindex = 5;
  options.reqid = 11;
  NetlinkRequest req = build_new_sa(esn_sa(), options);
  // Fill in what the kernel would report.
  auto* info = static_cast<xfrm_usersa_info*>(NLMSG_DATA(req.header()));
  info->curlft.bytes = 123456;
  info->curlft.packets = 789;
  info->stats.integrity_failed = 3;
  info->stats.replay = 2;
  const SaReadback r = parse_sa(req.header());
  EXPECT_EQ(r.spi, 0xc0ffee01u);
  EXPECT_EQ(r.dst, IpAddr::parse("2001:db8::1"));
  EXPECT_EQ(r.src, IpAddr::parse("2001:db8::2"));
  EXPECT_EQ(r.reqid, 11u);
  EXPECT_EQ(r.flags & XFRM_STATE_ESN, XFRM_STATE_ESN);
  EXPECT_EQ(r.bytes, 123456u);
  EXPECT_EQ(r.packets, 789u);
  EXPECT_EQ(r.integrity_failures, 3u);
  EXPECT_EQ(r.replay_failures, 2u);
  ASSERT_TRUE(r.replay_esn);
  EXPECT_EQ(r.replay_esn->seq_hi, 41u);
  EXPECT_EQ(r.replay_esn->replay_window, 128u);
  ASSERT_TRUE(r.offload_ifindex);
  EXPECT_EQ(*r.offload_ifindex, 5);
  EXPECT_EQ(r.offload_flags, XFRM_OFFLOAD_INBOUND);
}

TEST(XfrmMessages, ParseSaRefusesTruncatedAndForeignMessages) {
  NetlinkRequest req = build_new_sa(esn_sa(), NewSaOptions{.reqid = 1, .offload = OffloadKind::None});
  req.header()->nlmsg_len = NLMSG_LENGTH(10);
  EXPECT_THROW(parse_sa(req.header()), Error);
  NetlinkRequest del = build_delete_sa(sa_id_of(esn_sa()));
  EXPECT_THROW(parse_sa(del.header()), Error);
  EXPECT_THROW(parse_ae(del.header()), Error);
}

TEST(XfrmMessages, OffloadWithoutADeviceAndMixedFamiliesAreRefused) {
  NewSaOptions options;
  options.offload = OffloadKind::Crypto;
  options.ifindex = 0;
  EXPECT_THROW(build_new_sa(esn_sa(), options), Error);
  SaSpec mixed = esn_sa();
  mixed.src = IpAddr::parse("192.0.2.1");
  options.ifindex = 2;
  EXPECT_THROW(build_new_sa(mixed, options), Error);
}

TEST(XfrmMessages, SaDirAttributeIsSentOnlyWhenAsked) {
  NewSaOptions options;
  options.ifindex = 2;
  auto without = decode_xfrm_message(build_new_sa(esn_sa(), options).bytes());
  for (const auto& a : without.attrs) EXPECT_NE(a.type, kXfrmaSaDir);
  options.sa_dir_attr = true;
  auto with = decode_xfrm_message(build_new_sa(esn_sa(), options).bytes());
  ASSERT_EQ(with.attrs.back().type, kXfrmaSaDir);
  EXPECT_EQ(field(with.attrs.back().fields, "raw"), "01");  // XFRM_SA_DIR_IN
}

// ---------------------------------------------------------------------------

XfrmSaEntry entry(uint32_t spi, const char* dst, Direction dir) {
  XfrmSaEntry e;
  e.key = XfrmSaKey{spi, IpAddr::parse(dst), 50, dir};
  e.src = IpAddr::parse("192.0.2.9");
  e.reqid = spi;
  e.ifindex = 4;
  return e;
}

TEST(XfrmSaTable, HandlesMapToKernelKeysAndBack) {
  XfrmSaTable t;
  t.insert(0x11, entry(0x100, "192.0.2.1", Direction::In));
  t.insert(0x12, entry(0x100, "192.0.2.1", Direction::Out));  // same SPI/dst, other direction
  t.insert(0x13, entry(0x100, "2001:db8::1", Direction::In));
  EXPECT_EQ(t.size(), 3u);
  ASSERT_NE(t.find(0x12), nullptr);
  EXPECT_EQ(t.find(0x12)->key.dir, Direction::Out);
  EXPECT_EQ(t.find(0x13)->key.family(), Family::V6);
  EXPECT_EQ(t.find(XfrmSaKey{0x100, IpAddr::parse("2001:db8::1"), 50, Direction::In}), std::optional<uint64_t>(0x13));
  EXPECT_EQ(t.find(XfrmSaKey{0x101, IpAddr::parse("192.0.2.1"), 50, Direction::In}), std::nullopt);
  const SaId id = t.find(0x11)->id();
  EXPECT_EQ(id.spi, 0x100u);
  EXPECT_EQ(id.src, IpAddr::parse("192.0.2.9"));
  EXPECT_TRUE(t.erase(0x11));
  EXPECT_FALSE(t.erase(0x11));
  EXPECT_EQ(t.find(0x11), nullptr);
  EXPECT_EQ(t.find(XfrmSaKey{0x100, IpAddr::parse("192.0.2.1"), 50, Direction::In}), std::nullopt);
  t.insert(0x14, entry(0x100, "192.0.2.1", Direction::In));  // the key is free again
}

TEST(XfrmSaTable, HandleZeroAndDuplicatesAreRefused) {
  XfrmSaTable t;
  try {
    t.insert(0, entry(1, "192.0.2.1", Direction::In));
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::InvalidArgument);
  }
  t.insert(1, entry(1, "192.0.2.1", Direction::In));
  try {
    t.insert(1, entry(2, "192.0.2.1", Direction::In));
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::Exists);
  }
  try {
    t.insert(2, entry(1, "192.0.2.1", Direction::In));
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::Exists);
    EXPECT_NE(std::string(e.what()).find("inbound SA spi 0x00000001 to 192.0.2.1"), std::string::npos) << e.what();
  }
  EXPECT_EQ(t.size(), 1u);
}

// ---------------------------------------------------------------------------

TEST(KernelRefusalWords, EachErrnoBecomesAnActionableSentence) {
  RequestContext add{XfrmOperation::AddSa, "outbound SA spi 0x00000100 to 192.0.2.2", "eth0", "rfc4106(gcm(aes))"};
  EXPECT_EQ(describe_kernel_refusal(add, EPROTONOSUPPORT, "Requested type not found"),
            "the kernel refused the SA (outbound SA spi 0x00000100 to 192.0.2.2): it has no ESP support "
            "(CONFIG_INET_ESP is off) — use --engine afxdp [kernel: Requested type not found]");
  EXPECT_NE(describe_kernel_refusal(add, ENOSYS, "Requested AEAD algorithm not found")
                .find("it has no implementation of rfc4106(gcm(aes))"),
            std::string::npos);
  EXPECT_EQ(describe_kernel_refusal(add, EOPNOTSUPP, "Device failed to offload this state"),
            "device eth0 cannot offload this SA (outbound SA spi 0x00000100 to 192.0.2.2): Device failed to "
            "offload this state — check `ethtool -k eth0` (esp-hw-offload) or use --engine afxdp");
  EXPECT_NE(
      describe_kernel_refusal(add, EINVAL, "Device doesn't support offload").find("device eth0 cannot offload this SA"),
      std::string::npos);
  EXPECT_NE(describe_kernel_refusal(add, EINVAL, "Invalid replay window").find("it considers the request invalid"),
            std::string::npos);
  EXPECT_NE(describe_kernel_refusal(add, EEXIST, "").find("already installed"), std::string::npos);
  EXPECT_NE(describe_kernel_refusal(add, EPERM, "").find("CAP_NET_ADMIN"), std::string::npos);
  RequestContext del{XfrmOperation::DeleteSa, "SA spi 0x00000100 to 192.0.2.2", "", ""};
  EXPECT_EQ(describe_kernel_refusal(del, ESRCH, ""),
            "the kernel failed deleting the SA (SA spi 0x00000100 to 192.0.2.2): the kernel has no such SA "
            "(already deleted, expired, or never installed)");
  EXPECT_EQ(error_code_for_errno(ESRCH), ErrorCode::NotFound);
  EXPECT_EQ(error_code_for_errno(EEXIST), ErrorCode::Exists);
  EXPECT_EQ(error_code_for_errno(EPROTONOSUPPORT), ErrorCode::Unsupported);
  EXPECT_EQ(error_code_for_errno(EOPNOTSUPP), ErrorCode::Unsupported);
  EXPECT_EQ(error_code_for_errno(EINVAL), ErrorCode::InvalidArgument);
  EXPECT_EQ(error_code_for_errno(EIO), ErrorCode::Kernel);
}

}  // namespace
}  // namespace ov2::xfrm
