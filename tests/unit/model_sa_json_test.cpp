// SA and policy JSON (ctl/model/sa_json.h): parsing, the ip-xfrm spellings,
// validation messages that name the field and never the key, and the public
// view without key bytes.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "common/error.h"
#include "model/sa_json.h"

namespace ov2 {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;
using ::testing::Not;

const std::string kGcm128 = "feedface0102030405060708090a0b0c0d0e0f10";  // 20 bytes

json gcm_sa() {
  return {{"dir", "in"},     {"mode", "tunnel"},      {"src", "10.0.0.1"}, {"dst", "10.0.0.2"},
          {"spi", "0x1000"}, {"aead", "aes-gcm-128"}, {"key", kGcm128}};
}

std::string error_of(const json& j) {
  try {
    sa_spec_from_json(j);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(SaJson, ParsesAnAeadSa) {
  const SaSpec sa = sa_spec_from_json(gcm_sa());
  EXPECT_EQ(sa.dir, Direction::In);
  EXPECT_EQ(sa.mode, Mode::Tunnel);
  EXPECT_EQ(sa.spi, 0x1000u);
  EXPECT_EQ(sa.enc, EncAlg::AesGcm128);
  ASSERT_EQ(sa.enc_key.size(), 20u);
  EXPECT_EQ(sa.enc_key.data()[0], 0xfe);
  EXPECT_EQ(sa.enc_key.data()[19], 0x10);
}

TEST(SaJson, SpiAcceptsDecimalHexAndNumbers) {
  json j = gcm_sa();
  j["spi"] = "4097";
  EXPECT_EQ(sa_spec_from_json(j).spi, 4097u);
  j["spi"] = 4098;
  EXPECT_EQ(sa_spec_from_json(j).spi, 4098u);
  j["spi"] = "0xFFFFFFFF";
  EXPECT_EQ(sa_spec_from_json(j).spi, 0xffffffffu);
  j["spi"] = "0x100000000";
  EXPECT_THAT(error_of(j), HasSubstr("'spi' is 4294967296; the maximum is 4294967295"));
  j["spi"] = "12ab";
  EXPECT_THAT(error_of(j), HasSubstr("'spi' must be a number"));
  j["spi"] = 5;
  EXPECT_THAT(error_of(j), HasSubstr("SPI 5 is in the range 1-255 reserved"));
}

TEST(SaJson, XfrmSpellingTakesTheSizeFromTheKeyButOurNamesDoNot) {
  json j = gcm_sa();
  j["aead"] = "rfc4106(gcm(aes))";
  j["key"] = std::string(72, 'a');  // 36 bytes: AES-256 + salt
  EXPECT_EQ(sa_spec_from_json(j).enc, EncAlg::AesGcm256);
  j["aead"] = "aes-gcm-128";
  EXPECT_THAT(error_of(j), HasSubstr("aes-gcm-128 needs 20 bytes of key material"));

  json cbc = {{"dir", "out"},
              {"mode", "tunnel"},
              {"src", "10.0.0.1"},
              {"dst", "10.0.0.2"},
              {"spi", 300},
              {"enc", "cbc(aes)"},
              {"enc-key", std::string(48, 'b')},
              {"auth", "hmac(sha256)"},
              {"auth-key", std::string(64, 'c')}};
  const SaSpec sa = sa_spec_from_json(cbc);
  EXPECT_EQ(sa.enc, EncAlg::AesCbc192);
  EXPECT_EQ(sa.auth, AuthAlg::HmacSha256);

  json chacha = gcm_sa();
  chacha["aead"] = "rfc7539esp(chacha20,poly1305)";
  chacha["key"] = std::string(72, 'd');
  EXPECT_EQ(sa_spec_from_json(chacha).enc, EncAlg::ChaCha20Poly1305);
}

TEST(SaJson, NullEncryptionNeedsNoKey) {
  json j = {{"dir", "out"}, {"mode", "transport"}, {"src", "10.0.0.1"},     {"dst", "10.0.0.2"},
            {"spi", 300},   {"enc", "null"},       {"auth", "hmac-sha256"}, {"auth-key", std::string(64, 'c')}};
  const SaSpec sa = sa_spec_from_json(j);
  EXPECT_EQ(sa.enc, EncAlg::Null);
  EXPECT_TRUE(sa.enc_key.empty());
  j.erase("auth");
  EXPECT_THAT(error_of(j), HasSubstr("needs 'auth'"));
}

TEST(SaJson, MessagesNameTheFieldAndNeverTheKey) {
  json j = gcm_sa();
  j["key"] = kGcm128 + "zz";
  std::string msg = error_of(j);
  EXPECT_THAT(msg, HasSubstr("'key' is invalid: key is not hex"));
  EXPECT_THAT(msg, Not(HasSubstr("feedface")));
  j["key"] = kGcm128.substr(0, 38);
  msg = error_of(j);
  EXPECT_THAT(msg, HasSubstr("got 19"));
  EXPECT_THAT(msg, Not(HasSubstr("feedface")));

  j = gcm_sa();
  j["colour"] = "red";
  EXPECT_THAT(error_of(j), HasSubstr("unknown SA field 'colour'"));
  j = gcm_sa();
  j.erase("dst");
  EXPECT_THAT(error_of(j), HasSubstr("an SA needs 'dst'"));
  j = gcm_sa();
  j["auth"] = "hmac-sha256";
  EXPECT_THAT(error_of(j), HasSubstr("'auth' does not go with 'aead'"));
  j = gcm_sa();
  j["aead"] = "des";
  EXPECT_THAT(error_of(j), HasSubstr("DES is refused"));
  j = gcm_sa();
  j["src"] = "2001:db8::1";
  EXPECT_THAT(error_of(j), HasSubstr("different address families"));
  j = gcm_sa();
  j["seq-hi"] = 3;
  EXPECT_THAT(error_of(j), HasSubstr("--seq-hi is the ESN high-order sequence number: it needs --esn"));
  j = gcm_sa();
  j["lifetime-bytes"] = "10,5";
  EXPECT_THAT(error_of(j), HasSubstr("soft limit (10) must be below the hard limit (5)"));
  j["lifetime-bytes"] = "ten";
  EXPECT_THAT(error_of(j), HasSubstr("'lifetime-bytes' must be SOFT,HARD"));
  j = gcm_sa();
  j["encap-dport"] = 4501;
  EXPECT_THAT(error_of(j), HasSubstr("need --encap udp"));
  j = gcm_sa();
  j["mode"] = "transport";
  j["inner"] = "0x1000000";
  EXPECT_THAT(error_of(j), HasSubstr("this SA must be in tunnel mode"));
}

TEST(SaJson, InnerIsReturnedRawAndParsedAsHandle) {
  json j = gcm_sa();
  j["inner"] = "0x2000001";
  json inner;
  const SaSpec sa = sa_spec_from_json(j, &inner);
  EXPECT_EQ(sa.inner_handle, 0x2000001u);
  EXPECT_EQ(inner, "0x2000001");
  j["inner"] = 0;  // an index into an SA file: the caller resolves it
  EXPECT_EQ(sa_spec_from_json(j, &inner).inner_handle, 0u);
  EXPECT_EQ(inner, 0);
  EXPECT_THAT(error_of(j), HasSubstr("must be an SA handle"));
}

TEST(SaJson, PublicViewHasLengthsButNoKeyBytes) {
  json j = gcm_sa();
  j["esn"] = true;
  j["seq-hi"] = 9;
  j["encap"] = "udp";
  j["encap-dport"] = 4501;
  j["lifetime-packets"] = json::array({100, 200});
  const json pub = sa_spec_public_json(sa_spec_from_json(j));
  EXPECT_THAT(pub.dump(), Not(HasSubstr("feedface")));
  EXPECT_FALSE(pub.contains("key"));
  EXPECT_EQ(pub["key-bytes"], 20);
  EXPECT_EQ(pub["aead"], "aes-gcm-128");
  EXPECT_EQ(pub["seq-hi"], 9);
  EXPECT_EQ(pub["encap-dport"], 4501);
  EXPECT_EQ(pub["lifetime-packets"], json::array({100, 200}));
  // The public view round-trips except for the keys.
  EXPECT_EQ(pub["spi"], 0x1000);
}

TEST(PolicyJson, ParsesAndPrintsSelectors) {
  json j = {{"dir", "out"}, {"src", "10.1.0.0/16"}, {"dst", "2001:db8::/32"}, {"action", "bypass"}};
  try {
    policy_spec_from_json(j);
    FAIL();
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("different address families"));
  }
  j["dst"] = "10.2.0.0/16";
  j["proto"] = "udp";
  j["sport"] = 500;
  j["dport"] = "1000-2000";
  j["priority"] = 7;
  const PolicySpec p = policy_spec_from_json(j);
  EXPECT_EQ(p.proto, 17);
  EXPECT_EQ(p.sport, (PortRange{500, 500}));
  EXPECT_EQ(p.dport, (PortRange{1000, 2000}));
  const json back = policy_spec_json(p);
  EXPECT_EQ(back["proto"], "udp");
  EXPECT_EQ(back["sport"], "500");
  EXPECT_EQ(back["dport"], "1000-2000");
  EXPECT_EQ(back["priority"], 7);
  EXPECT_FALSE(back.contains("sa"));
  j["action"] = "protect";
  try {
    policy_spec_from_json(j);
    FAIL();
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("action protect needs --sa HANDLE"));
  }
  j["src"] = "10.1.0.1/16";
  try {
    policy_spec_from_json(j);
    FAIL();
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("has host bits set; did you mean 10.1.0.0/16?"));
  }
}

TEST(Handle, PrintsAndParsesHex) {
  EXPECT_EQ(handle_to_string(0x1000001), "0x1000001");
  EXPECT_EQ(parse_handle("0x1000001"), 0x1000001u);
  EXPECT_EQ(parse_handle("16777217"), 16777217u);
  EXPECT_THROW(parse_handle("0"), Error);
  EXPECT_THROW(parse_handle("0xzz"), Error);
  EXPECT_THROW(parse_handle(""), Error);
}

}  // namespace
}  // namespace ov2
