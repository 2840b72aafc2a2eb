// ctl/common and ctl/model basics: IpPrefix parsing and matching, SecureBytes
// hex parsing (and that its errors never quote the input), validation
// messages for policies, and the refused algorithms.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "common/error.h"
#include "common/ip_addr.h"
#include "common/secure_bytes.h"
#include "error_of.h"
#include "model/algorithms.h"
#include "model/policy_spec.h"

namespace ov2 {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

using test::error_of;

TEST(IpPrefix, ParsesV4AndV6AndBareAddresses) {
  const IpPrefix p = IpPrefix::parse("10.1.0.0/16");
  EXPECT_EQ(p.len, 16);
  EXPECT_EQ(p.to_string(), "10.1.0.0/16");
  EXPECT_EQ(IpPrefix::parse("192.0.2.7").len, 32);
  EXPECT_EQ(IpPrefix::parse("2001:db8::/32").len, 32);
  EXPECT_EQ(IpPrefix::parse("::1").len, 128);
  EXPECT_EQ(IpPrefix::parse("0.0.0.0/0").len, 0);
}

TEST(IpPrefix, RejectsBadLengthsAndHostBits) {
  EXPECT_THAT(error_of([] { IpPrefix::parse("10.0.0.0/33"); }),
              HasSubstr("prefix length must be a number from 0 to 32"));
  EXPECT_THAT(error_of([] { IpPrefix::parse("10.0.0.0/"); }), HasSubstr("prefix length"));
  EXPECT_THAT(error_of([] { IpPrefix::parse("10.0.0.1/24"); }), HasSubstr("did you mean 10.0.0.0/24?"));
  EXPECT_THAT(error_of([] { IpPrefix::parse("300.0.0.0/8"); }), HasSubstr("not a valid IPv4 address"));
  EXPECT_THAT(error_of([] { IpPrefix::parse("2001:db8::zz/64"); }), HasSubstr("not a valid IPv6 address"));
}

TEST(IpPrefix, ContainsRespectsFamilyAndBits) {
  const IpPrefix p = IpPrefix::parse("10.1.0.0/16");
  EXPECT_TRUE(p.contains(IpAddr::parse("10.1.255.1")));
  EXPECT_FALSE(p.contains(IpAddr::parse("10.2.0.1")));
  EXPECT_FALSE(p.contains(IpAddr::parse("::a01:1")));
  EXPECT_TRUE(IpPrefix::parse("0.0.0.0/0").contains(IpAddr::parse("8.8.8.8")));
  EXPECT_TRUE(IpPrefix::parse("10.0.0.0/8").contains(p));
  EXPECT_FALSE(p.contains(IpPrefix::parse("10.0.0.0/8")));
}

TEST(SecureBytesHex, AcceptsPrefixWhitespaceAndCase) {
  const SecureBytes k = SecureBytes::from_hex("  0xAB cd\n\tEF01\n");
  ASSERT_EQ(k.size(), 4u);
  EXPECT_EQ(k.data()[0], 0xab);
  EXPECT_EQ(k.data()[1], 0xcd);
  EXPECT_EQ(k.data()[2], 0xef);
  EXPECT_EQ(k.data()[3], 0x01);
}

TEST(SecureBytesHex, ErrorsNeverQuoteTheKey) {
  std::string msg = error_of([] { SecureBytes::from_hex("deadbeefq1"); });
  EXPECT_THAT(msg, HasSubstr("not hex"));
  EXPECT_THAT(msg, Not(HasSubstr("deadbeef")));
  msg = error_of([] { SecureBytes::from_hex("deadbeef1"); });
  EXPECT_THAT(msg, HasSubstr("odd number of hex digits"));
  EXPECT_THAT(msg, Not(HasSubstr("deadbeef")));
  msg = error_of([] { SecureBytes::from_hex(std::string(130, 'a')); });
  EXPECT_THAT(msg, HasSubstr("longer than 64 bytes"));
}

TEST(SecureBytesHex, ReleasedKeysGoBackToTheArena) {
  const size_t before = key_arena_stats().slots_in_use;
  {
    SecureBytes a = SecureBytes::from_hex("0102");
    SecureBytes b = a;
    EXPECT_EQ(key_arena_stats().slots_in_use, before + 2);
  }
  EXPECT_EQ(key_arena_stats().slots_in_use, before);
}

TEST(PolicyValidation, MessagesSayWhatToDo) {
  PolicySpec p;
  p.src = IpPrefix::parse("10.0.0.0/8");
  p.dst = IpPrefix::parse("10.0.0.0/8");
  p.action = PolicyAction::Bypass;
  p.dport = PortRange{80, 80};
  EXPECT_THAT(error_of([&] { validate_policy(p); }), HasSubstr("port selectors need --proto tcp, udp or sctp"));
  p.proto = parse_proto("tcp");
  EXPECT_NO_THROW(validate_policy(p));
  p.sa_handle = 0x1000000;
  EXPECT_THAT(error_of([&] { validate_policy(p); }), HasSubstr("--sa is only for action protect"));
  EXPECT_THAT(error_of([] { parse_port_range("90-80"); }), HasSubstr("LO <= HI"));
  EXPECT_THAT(error_of([] { parse_proto("tcpp"); }), HasSubstr("protocol must be"));
  EXPECT_EQ(parse_proto("icmpv6"), 58);
  EXPECT_EQ(parse_proto("47"), 47);
}

TEST(Algorithms, BrokenOnesAreRefusedWithAReason) {
  EXPECT_THAT(error_of([] { parse_enc_alg("3des"); }), HasSubstr("Sweet32"));
  EXPECT_THAT(error_of([] { parse_auth_alg("hmac(md5)"); }), HasSubstr("MD5 is broken"));
  EXPECT_THAT(error_of([] { parse_enc_alg("aes-gcm-128"); }), HasSubstr("use --aead aes-gcm-128 instead of --enc"));
  EXPECT_EQ(parse_aead_alg("RFC4106(GCM(AES))"), EncAlg::AesGcm128);
}

}  // namespace
}  // namespace ov2
