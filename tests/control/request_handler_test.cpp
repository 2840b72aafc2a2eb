// The control protocol's request handling: garbage, wrong shapes and wrong
// versions are answered with errors and change nothing; answers never carry
// key bytes.
#include "control/request_handler.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "control/protocol.h"
#include "fake_engine.h"
#include "model/sa_json.h"

namespace ov2 {
namespace {

using nlohmann::json;
using test::FakeEngine;
using ::testing::HasSubstr;
using ::testing::Not;

const char* kKeyHex = "c0ffee0102030405060708090a0b0c0d0e0fbeef";

std::string add_request(const char* spi = "0x1000", const char* key = kKeyHex) {
  return json{{"version", 1},
              {"op", "sa.add"},
              {"sa",
               {{"dir", "in"},
                {"mode", "tunnel"},
                {"src", "10.0.0.1"},
                {"dst", "10.0.0.2"},
                {"spi", spi},
                {"aead", "aes-gcm-128"},
                {"key", key}}}}
      .dump();
}

struct HandlerTest : ::testing::Test {
  FakeEngine engine;
  ControlPlane plane{engine, 64};
  RequestHandler handler{plane};

  json call(const std::string& line) { return json::parse(handler.handle_line(line)); }
  std::string error_code(const std::string& line) {
    json a = call(line);
    EXPECT_FALSE(a["ok"].get<bool>()) << a.dump();
    return a["error"]["code"].get<std::string>();
  }
};

TEST_F(HandlerTest, AddListShowUpdateDeleteRoundTrip) {
  json added = call(add_request());
  ASSERT_TRUE(added["ok"].get<bool>()) << added.dump();
  const std::string handle = added["handle"];
  EXPECT_EQ(handle.substr(0, 2), "0x");

  json list = call(R"({"version":1,"op":"sa.list"})");
  ASSERT_EQ(list["sas"].size(), 1u);
  EXPECT_EQ(list["sas"][0]["handle"], handle);
  EXPECT_EQ(list["sas"][0]["key-bytes"], 20);
  EXPECT_EQ(list["sas"][0]["aead"], "aes-gcm-128");

  json show = call(json{{"version", 1}, {"op", "sa.show"}, {"handle", handle}}.dump());
  EXPECT_EQ(show["sa"]["spi"], 0x1000);

  json upd = call(json{{"version", 1}, {"op", "sa.update"}, {"handle", handle}, {"seq-hi", 3}}.dump());
  EXPECT_FALSE(upd["ok"].get<bool>());  // not an ESN SA
  EXPECT_EQ(upd["error"]["code"], "invalid-argument");

  json del = call(json{{"version", 1}, {"op", "sa.del"}, {"handles", {handle}}}.dump());
  ASSERT_TRUE(del["ok"].get<bool>()) << del.dump();
  EXPECT_EQ(del["deleted"][0], handle);
  EXPECT_TRUE(engine.installed.empty());
}

TEST_F(HandlerTest, AnswersNeverContainKeyBytes) {
  std::string all = handler.handle_line(add_request());
  all += handler.handle_line(R"({"version":1,"op":"sa.list"})");
  all += handler.handle_line(R"({"version":1,"op":"sa.show","handle":"0x1000000"})");
  // A broken request right after a key: the parse error must not quote it.
  all += handler.handle_line(add_request("0x2000").substr(0, 150) + "\x01garbage");
  // A key of the wrong length is reported by length, not by value.
  all += handler.handle_line(add_request("0x3000", "c0ffee0102030405060708090a0b0c0d0e0fbe"));
  EXPECT_THAT(all, Not(HasSubstr("c0ffee")));
  EXPECT_THAT(all, HasSubstr("needs 20 bytes of key material"));
}

TEST_F(HandlerTest, GarbageTruncatedAndWrongShapesAreErrorsAndChangeNothing) {
  EXPECT_EQ(error_code("this is not json"), "invalid-argument");
  EXPECT_EQ(error_code(add_request().substr(0, 60)), "invalid-argument");  // truncated
  EXPECT_EQ(error_code("[1,2,3]"), "invalid-argument");
  EXPECT_EQ(error_code(R"({"version":1})"), "invalid-argument");
  EXPECT_EQ(error_code(R"({"version":1,"op":"sa.explode"})"), "invalid-argument");
  EXPECT_EQ(error_code(R"({"version":1,"op":"sa.add","sa":"nope"})"), "invalid-argument");
  EXPECT_EQ(error_code(R"({"version":1,"op":"sa.del","handles":"0x1"})"), "invalid-argument");
  EXPECT_EQ(error_code(R"({"version":1,"op":"sa.add","sa":{"dir":"in","bogus":1}})"), "invalid-argument");
  EXPECT_EQ(error_code(std::string(100000, '[')), "invalid-argument");               // deep nesting
  EXPECT_EQ(error_code("{\"version\":1,\"op\":\"\xff\xfe\"}"), "invalid-argument");  // bad UTF-8
  EXPECT_TRUE(engine.add_calls.empty());
  EXPECT_TRUE(plane.sas().list().empty());
}

TEST_F(HandlerTest, WrongOrMissingVersionIsRefused) {
  json a = call(R"({"version":2,"op":"caps"})");
  EXPECT_EQ(a["error"]["code"], "unsupported");
  EXPECT_THAT(a["error"]["message"].get<std::string>(), HasSubstr("speaks version 1"));
  EXPECT_EQ(error_code(R"({"op":"caps"})"), "invalid-argument");
  EXPECT_EQ(error_code(R"({"version":"1","op":"caps"})"), "unsupported");
}

TEST_F(HandlerTest, CapsUsesNdisFieldNames) {
  json caps = call(R"({"version":1,"op":"caps"})")["caps"];
  EXPECT_EQ(caps["Ah"], false);
  EXPECT_EQ(caps["AhEspCombined"], false);
  EXPECT_EQ(caps["LsoSupported"], false);
  EXPECT_EQ(caps["Esp"], true);
  EXPECT_EQ(caps["Transport"], true);
  EXPECT_EQ(caps["Tunnel"], true);
  EXPECT_EQ(caps["ExtendedSequenceNumbers"], true);
  EXPECT_EQ(caps["SaOffloadCapacity"], OV2_MAX_SAS);
  EXPECT_EQ(caps["EncryptionAlgorithms"], supported_enc_mask());
  EXPECT_EQ(caps["AuthenticationAlgorithms"], supported_auth_mask());
  EXPECT_EQ(caps["EncryptionAlgorithms"].get<uint32_t>() & IPSEC_OFFLOAD_V2_ENCRYPTION_DES_CBC, 0u);
  EXPECT_EQ(caps["AuthenticationAlgorithms"].get<uint32_t>() & IPSEC_OFFLOAD_V2_AUTHENTICATION_MD5, 0u);
  EXPECT_EQ(caps["ChaCha20Poly1305"], true);
  EXPECT_EQ(caps["Engine"], "afxdp");
}

TEST_F(HandlerTest, PolicyAddListDelete) {
  json added = call(add_request());
  json p = call(json{{"version", 1},
                     {"op", "policy.add"},
                     {"policy",
                      {{"dir", "in"},
                       {"src", "10.1.0.0/16"},
                       {"dst", "10.2.0.0/16"},
                       {"proto", "tcp"},
                       {"dport", "80-90"},
                       {"action", "protect"},
                       {"sa", added["handle"]}}}}
                    .dump());
  ASSERT_TRUE(p["ok"].get<bool>()) << p.dump();
  json list = call(R"({"version":1,"op":"policy.list"})");
  ASSERT_EQ(list["policies"].size(), 1u);
  EXPECT_EQ(list["policies"][0]["dport"], "80-90");
  EXPECT_EQ(list["policies"][0]["proto"], "tcp");
  EXPECT_EQ(list["policies"][0]["id"], p["id"]);
  json other = call(add_request("0x1001"));
  json upd = call(json{{"version", 1}, {"op", "policy.update"}, {"id", p["id"]}, {"sa", other["handle"]}}.dump());
  ASSERT_TRUE(upd["ok"].get<bool>()) << upd.dump();
  EXPECT_EQ(call(R"({"version":1,"op":"policy.list"})")["policies"][0]["sa"], other["handle"]);
  EXPECT_EQ(error_code(json{{"version", 1}, {"op", "policy.update"}, {"id", 999}, {"sa", other["handle"]}}.dump()),
            "not-found");
  EXPECT_EQ(error_code(json{{"version", 1}, {"op", "policy.update"}, {"id", p["id"]}}.dump()), "invalid-argument");
  json del = call(json{{"version", 1}, {"op", "policy.del"}, {"ids", {p["id"]}}}.dump());
  EXPECT_TRUE(del["ok"].get<bool>()) << del.dump();
  EXPECT_EQ(error_code(json{{"version", 1}, {"op", "policy.del"}, {"ids", {p["id"]}}}.dump()), "not-found");
}

json batch_sa(uint32_t spi, const char* key = kKeyHex) {
  return {{"dir", "in"}, {"mode", "tunnel"},      {"src", "10.0.0.1"}, {"dst", "10.0.0.2"},
          {"spi", spi},  {"aead", "aes-gcm-128"}, {"key", key}};
}

TEST_F(HandlerTest, BatchAddInstallsEverySaAndAnswersTheHandlesInOrder) {
  json sas = json::array();
  for (uint32_t spi = 0x2000; spi < 0x2005; ++spi) sas.push_back(batch_sa(spi));
  const json a = call(json{{"version", 1}, {"op", "sa.add"}, {"sas", sas}}.dump());
  ASSERT_TRUE(a["ok"].get<bool>()) << a.dump();
  ASSERT_EQ(a["handles"].size(), 5u);
  for (size_t i = 0; i < 5; ++i) {
    const SaRecord* r = plane.sas().find(parse_handle(a["handles"][i].get<std::string>()));
    ASSERT_NE(r, nullptr);
    EXPECT_EQ(r->spec.spi, 0x2000u + i);
  }
  EXPECT_THAT(a.dump(), Not(HasSubstr("c0ffee")));
}

TEST_F(HandlerTest, BatchAddIsAllOrNothingAndNamesTheBadEntry) {
  // A bad entry found by parsing: nothing reaches the engine.
  json sas = json::array({batch_sa(0x3000), batch_sa(0x3001), batch_sa(0x3002, "0011")});
  json a = call(json{{"version", 1}, {"op", "sa.add"}, {"sas", sas}}.dump());
  EXPECT_FALSE(a["ok"].get<bool>());
  EXPECT_THAT(a["error"]["message"].get<std::string>(), HasSubstr("sas[2]: "));
  EXPECT_THAT(a["error"]["message"].get<std::string>(), HasSubstr("no SA of the batch was installed"));
  EXPECT_TRUE(engine.add_calls.empty());
  // Refused by the tables midway (the same SPI twice): the first ones are taken back.
  sas = json::array({batch_sa(0x3000), batch_sa(0x3001), batch_sa(0x3000)});
  a = call(json{{"version", 1}, {"op", "sa.add"}, {"sas", sas}}.dump());
  EXPECT_FALSE(a["ok"].get<bool>());
  EXPECT_THAT(a["error"]["message"].get<std::string>(), HasSubstr("sas[2]: "));
  EXPECT_EQ(plane.sas().size(), 0u);
  EXPECT_TRUE(engine.installed.empty());
  EXPECT_EQ(engine.delete_calls.size(), 2u);
  call(add_request("0x9999"));  // one SA outside the batch stays
  ASSERT_EQ(plane.sas().size(), 1u);
  const size_t before = engine.add_calls.size();
  // Wrong shapes.
  for (const json& bad : {json(5), json::array(), json::array({json(1)})}) {
    a = call(json{{"version", 1}, {"op", "sa.add"}, {"sas", bad}}.dump());
    EXPECT_FALSE(a["ok"].get<bool>()) << bad.dump();
  }
  json too_many = json::array();
  for (uint32_t i = 0; i <= kMaxBatchSas; ++i) too_many.push_back(batch_sa(0x10000 + i));
  a = call(json{{"version", 1}, {"op", "sa.add"}, {"sas", too_many}}.dump());
  EXPECT_THAT(a["error"]["message"].get<std::string>(), HasSubstr("1 to " + std::to_string(kMaxBatchSas) + " SAs"));
  EXPECT_EQ(engine.add_calls.size(), before);
  EXPECT_EQ(plane.sas().size(), 1u);
}

TEST(WipeSecrets, OverwritesKeyStringsAnywhere) {
  json j = {{"sa", {{"key", "abcd"}, {"enc-key", "ef01"}, {"auth-key", "2345"}, {"spi", "0x1000"}}}};
  wipe_secrets(j);
  const std::string dumped = j.dump();
  EXPECT_THAT(dumped, Not(HasSubstr("abcd")));
  EXPECT_THAT(dumped, Not(HasSubstr("ef01")));
  EXPECT_THAT(dumped, Not(HasSubstr("2345")));
  EXPECT_THAT(dumped, HasSubstr("0x1000"));
}

}  // namespace
}  // namespace ov2
