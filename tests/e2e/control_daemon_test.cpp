// End-to-end tests of the control plane: the REAL ipsecov2d, started in a
// fresh network namespace (veth as the wire), driven by the REAL ipsecov2ctl
// as a subprocess.  Checks exit codes, messages, that keys never appear in
// any output or the daemon's log, the peer-credential check, garbage on the
// socket, clean shutdown, and that `sa add` writes the BPF map ov2_wire reads.
//
// Reading the daemon's map: BPF maps are global (not per network namespace),
// so the test finds the daemon's `sa_map` through the map ids listed in
// /proc/<daemon pid>/fdinfo/* ("map_id:" lines), opens it with
// bpf_map_get_fd_by_id() and reads it with libbpf.  This picks the map of
// exactly this daemon even when several daemons run on the machine, and
// needs neither bpffs pinning nor a debug request.
//
// Needs root (namespaces, BPF).  Namespaces are named ov2t<pid><letter>.
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <fcntl.h>
#include <gmock/gmock.h>
#include <grp.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "daemon_harness.h"
#include "ov2_abi.h"

namespace {

using namespace ov2::daemon_test;
using nlohmann::json;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

// Key material used by the tests: searched for in every output.
const std::string kGcmKey = "5ec7e75ec7e75ec7e75ec7e75ec7e75ec7e7a1b2";                           // 20 bytes
const std::string kCbcKey = "cb0cb0cb0cb0cb0cb0cb0cb0cb0cb0cb";                                   // 16 bytes
const std::string kHmacKey = "aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11";  // 32 bytes

ov2_sa_key key_for(uint32_t spi, const char* dst) {
  ov2_sa_key k{};
  k.spi_be = htonl(spi);
  if (std::strchr(dst, ':')) {
    k.family = OV2_AF_INET6;
    inet_pton(AF_INET6, dst, k.daddr);
  } else {
    k.family = OV2_AF_INET;
    inet_pton(AF_INET, dst, k.daddr);
  }
  return k;
}

size_t map_entries(int fd) {
  size_t n = 0;
  ov2_sa_key key{}, next{};
  const void* prev = nullptr;
  while (bpf_map_get_next_key(fd, prev, &next) == 0) {
    ++n;
    key = next;
    prev = &key;
  }
  return n;
}

uint64_t handle_of(const std::string& out) { return std::stoull(out, nullptr, 16); }

class ControlE2e : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root (network namespaces, BPF)";
  }
};

TEST_F(ControlE2e, CapsReportsNdisCapabilitiesAsTableAndJson) {
  DaemonInNamespace d('a');
  Result r = d.ctl({"caps"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("SaOffloadCapacity"));
  EXPECT_THAT(r.out, HasSubstr("262144"));
  EXPECT_THAT(r.out, HasSubstr("chacha20-poly1305"));
  r = d.ctl({"--json", "caps"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json caps = json::parse(r.out)["caps"];
  EXPECT_EQ(caps["Ah"], false);
  EXPECT_EQ(caps["Esp"], true);
  EXPECT_EQ(caps["LsoSupported"], false);
  EXPECT_EQ(caps["SaOffloadCapacity"], OV2_MAX_SAS);
  EXPECT_EQ(caps["EncryptionAlgorithms"].get<uint32_t>() & IPSEC_OFFLOAD_V2_ENCRYPTION_3_DES_CBC, 0u);
}

TEST_F(ControlE2e, SaLifecycleAddListShowUpdateDelete) {
  DaemonInNamespace d('b');
  const std::string key = d.key_file("gcm", "0x" + kGcmKey + "\n");
  Result add = d.ctl({"sa", "add", "--dir", "out", "--mode", "tunnel", "--src", "192.0.2.1", "--dst", "192.0.2.2",
                      "--spi", "0x1000", "--aead", "aes-gcm-128", "--key-file", key, "--esn", "--seq-hi", "4"});
  ASSERT_EQ(add.exit_code, 0) << add.err;
  ASSERT_THAT(add.out, StartsWith("0x"));
  const std::string handle = add.out.substr(0, add.out.find('\n'));

  Result list = d.ctl({"sa", "list"});
  ASSERT_EQ(list.exit_code, 0) << list.err;
  EXPECT_THAT(list.out, HasSubstr("HANDLE"));
  EXPECT_THAT(list.out, HasSubstr(handle));
  EXPECT_THAT(list.out, HasSubstr("aes-gcm-128 (20-byte key)"));

  Result show = d.ctl({"sa", "show", handle});
  ASSERT_EQ(show.exit_code, 0) << show.err;
  EXPECT_THAT(show.out, HasSubstr("seq-hi"));
  EXPECT_THAT(show.out, HasSubstr("20 bytes"));

  Result upd = d.ctl({"sa", "update", handle, "--seq-hi", "77"});
  ASSERT_EQ(upd.exit_code, 0) << upd.err;
  Result shown = d.ctl({"--json", "sa", "show", handle});
  ASSERT_EQ(shown.exit_code, 0) << shown.err;
  EXPECT_EQ(json::parse(shown.out)["sa"]["seq-hi"], 77);

  Result del = d.ctl({"sa", "del", handle});
  ASSERT_EQ(del.exit_code, 0) << del.err;
  EXPECT_THAT(del.out, HasSubstr("deleted SA " + handle));
  Result empty = d.ctl({"--json", "sa", "list"});
  EXPECT_TRUE(json::parse(empty.out)["sas"].empty());
  Result again = d.ctl({"sa", "show", handle});
  EXPECT_NE(again.exit_code, 0);
  EXPECT_THAT(again.err, HasSubstr("no SA has handle " + handle));
}

TEST_F(ControlE2e, SaAddWritesTheInboundBpfMapAndDeleteRemovesIt) {
  DaemonInNamespace d('c');
  const int map = d.sa_map_fd();
  ASSERT_GE(map, 0) << "the daemon's sa_map was not found";
  EXPECT_EQ(map_entries(map), 0u);

  const std::string key = d.key_file("gcm", kGcmKey);
  Result in6 = d.ctl({"--json",        "sa",     "add",           "--dir",       "in",
                      "--mode",        "tunnel", "--src",         "2001:db8::1", "--dst",
                      "2001:db8::2",   "--spi",  "305419896",     "--aead",      "aes-gcm-128",
                      "--key-file",    key,      "--esn",         "--encap",     "udp",
                      "--encap-sport", "4600",   "--encap-dport", "4501"});
  ASSERT_EQ(in6.exit_code, 0) << in6.err;
  const uint64_t h6 = std::stoull(json::parse(in6.out)["handle"].get<std::string>(), nullptr, 16);

  Result in4 = d.ctl({"sa",     "add",         "--dir",           "in",
                      "--mode", "transport",   "--src",           "10.0.0.1",
                      "--dst",  "10.0.0.2",    "--spi",           "0x2000",
                      "--enc",  "aes-cbc-128", "--enc-key-file",  d.key_file("cbc", kCbcKey),
                      "--auth", "hmac-sha256", "--auth-key-file", d.key_file("hmac", kHmacKey)});
  ASSERT_EQ(in4.exit_code, 0) << in4.err;
  const uint64_t h4 = handle_of(in4.out);

  // Outbound SAs are found by handle in the worker, not in ov2_wire's map.
  Result out = d.ctl({"sa", "add", "--dir", "out", "--mode", "transport", "--src", "10.0.0.2", "--dst", "10.0.0.1",
                      "--spi", "0x2001", "--aead", "aes-gcm-128", "--key-file", key});
  ASSERT_EQ(out.exit_code, 0) << out.err;
  EXPECT_EQ(map_entries(map), 2u);

  ov2_sa_value v{};
  ov2_sa_key k6 = key_for(0x12345678, "2001:db8::2");
  ASSERT_EQ(bpf_map_lookup_elem(map, &k6, &v), 0);
  EXPECT_EQ(v.handle, h6);
  EXPECT_EQ(v.flags, unsigned(OV2_SA_F_UDP_ENCAP | OV2_SA_F_ESN | OV2_SA_F_TUNNEL));
  EXPECT_EQ(v.encap_dport, 4501);

  ov2_sa_key k4 = key_for(0x2000, "10.0.0.2");
  ASSERT_EQ(bpf_map_lookup_elem(map, &k4, &v), 0);
  EXPECT_EQ(v.handle, h4);
  EXPECT_EQ(v.flags, 0u);
  EXPECT_EQ(v.encap_dport, 0);

  ASSERT_EQ(d.ctl({"sa", "del", in6.out.substr(in6.out.find("0x"), in6.out.rfind('"') - in6.out.find("0x"))}).exit_code,
            0);
  EXPECT_NE(bpf_map_lookup_elem(map, &k6, &v), 0);
  EXPECT_EQ(map_entries(map), 1u);
  close(map);
}

TEST_F(ControlE2e, KeyFromStandardInputAndXfrmNames) {
  DaemonInNamespace d('d');
  Result r = d.ctl({"--json", "sa", "add", "--dir", "in", "--mode", "tunnel", "--src", "10.0.0.1", "--dst", "10.0.0.2",
                    "--spi", "0x3000", "--aead", "rfc4106(gcm(aes))", "--key-file", "-"},
                   "  " + kGcmKey + kGcmKey.substr(0, 32) + "\n");  // 36 bytes: AES-256
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string handle = json::parse(r.out)["handle"];
  Result show = d.ctl({"--json", "sa", "show", handle});
  EXPECT_EQ(json::parse(show.out)["sa"]["aead"], "aes-gcm-256");
  EXPECT_EQ(json::parse(show.out)["sa"]["key-bytes"], 36);
}

TEST_F(ControlE2e, PoliciesAddListDeleteAndInUseRefusal) {
  DaemonInNamespace d('e');
  const std::string key = d.key_file("gcm", kGcmKey);
  Result sa = d.ctl({"sa", "add", "--dir", "out", "--mode", "tunnel", "--src", "192.0.2.1", "--dst", "192.0.2.2",
                     "--spi", "0x1000", "--aead", "aes-gcm-128", "--key-file", key});
  ASSERT_EQ(sa.exit_code, 0) << sa.err;
  const std::string handle = sa.out.substr(0, sa.out.find('\n'));
  Result p = d.ctl({"policy", "add", "--dir", "out", "--src", "10.1.0.0/16", "--dst", "10.2.0.0/16", "--proto", "tcp",
                    "--dport", "443", "--action", "protect", "--sa", handle, "--priority", "10"});
  ASSERT_EQ(p.exit_code, 0) << p.err;
  const std::string id = p.out.substr(0, p.out.find('\n'));
  Result bypass =
      d.ctl({"policy", "add", "--dir", "out", "--src", "0.0.0.0/0", "--dst", "0.0.0.0/0", "--action", "bypass"});
  ASSERT_EQ(bypass.exit_code, 0) << bypass.err;
  EXPECT_NE(bypass.out, p.out);

  Result list = d.ctl({"policy", "list"});
  EXPECT_THAT(list.out, HasSubstr("protect"));
  EXPECT_THAT(list.out, HasSubstr("443"));
  EXPECT_THAT(list.out, HasSubstr(handle));

  // policy update: the policy keeps its id and moves to another SA (the rekey switch),
  // in the daemon's record and in ov2_tx's SPD entries; refusals change nothing.
  Result sa2 = d.ctl({"sa", "add", "--dir", "out", "--mode", "tunnel", "--src", "192.0.2.1", "--dst", "192.0.2.2",
                      "--spi", "0x1001", "--aead", "aes-gcm-128", "--key-file", key});
  ASSERT_EQ(sa2.exit_code, 0) << sa2.err;
  const std::string handle2 = sa2.out.substr(0, sa2.out.find('\n'));
  Result moved = d.ctl({"policy", "update", id, "--sa", handle2});
  ASSERT_EQ(moved.exit_code, 0) << moved.err;
  EXPECT_EQ(moved.out, "updated policy " + id + "\n");
  const int entries = d.map_fd("spd_entries", sizeof(uint32_t), sizeof(ov2_spd_entry));
  ASSERT_GE(entries, 0);
  int live_slots = 0;
  for (uint32_t slot = 0; slot < 64; ++slot) {
    ov2_spd_entry e{};
    if (bpf_map_lookup_elem(entries, &slot, &e) != 0 || !e.valid || e.policy_id != std::stoul(id)) continue;
    if (e.offload_handle == handle_of(handle2)) ++live_slots;
  }
  close(entries);
  EXPECT_GE(live_slots, 1) << "ov2_tx does not see the new SA for policy " << id;
  Result bad_id = d.ctl({"policy", "update", "999", "--sa", handle});
  EXPECT_EQ(bad_id.exit_code, 1);
  EXPECT_THAT(bad_id.err, HasSubstr("no policy has id 999"));
  Result bad_sa = d.ctl({"policy", "update", id, "--sa", "0x7777777"});
  EXPECT_EQ(bad_sa.exit_code, 1);
  EXPECT_THAT(bad_sa.err, HasSubstr("no SA has this handle"));
  EXPECT_THAT(d.ctl({"policy", "list"}).out, HasSubstr(handle2));
  Result old_free = d.ctl({"sa", "del", handle});  // no policy names the old SA any more
  EXPECT_EQ(old_free.exit_code, 0) << old_free.err;

  Result refused = d.ctl({"sa", "del", handle2});
  EXPECT_NE(refused.exit_code, 0);
  EXPECT_THAT(refused.err, HasSubstr("is used by policy " + id));
  Result forced = d.ctl({"sa", "del", "--force", handle2});
  ASSERT_EQ(forced.exit_code, 0) << forced.err;
  EXPECT_THAT(forced.out, HasSubstr("deleted policy " + id));
  Result after = d.ctl({"--json", "policy", "list"});
  EXPECT_EQ(json::parse(after.out)["policies"].size(), 1u);

  Result pdel = d.ctl({"policy", "del", "999"});
  EXPECT_NE(pdel.exit_code, 0);
  EXPECT_THAT(pdel.err, HasSubstr("no policy has id 999"));
}

TEST_F(ControlE2e, OutboundBundlePolicyIsLoadedIntoTheTxSpdMaps) {
  DaemonInNamespace d('n');
  const std::string key = d.key_file("gcm", kGcmKey);
  Result inner = d.ctl({"sa", "add", "--dir", "out", "--mode", "transport", "--src", "10.1.0.1", "--dst", "10.2.0.1",
                        "--spi", "0x5000", "--aead", "aes-gcm-128", "--key-file", key});
  ASSERT_EQ(inner.exit_code, 0) << inner.err;
  const std::string inner_handle = inner.out.substr(0, inner.out.find('\n'));
  Result outer = d.ctl({"sa",         "add",   "--dir",     "out",   "--mode",  "tunnel",    "--src",
                        "192.0.2.1",  "--dst", "192.0.2.2", "--spi", "0x5001",  "--aead",    "aes-gcm-128",
                        "--key-file", key,     "--encap",   "udp",   "--inner", inner_handle});
  ASSERT_EQ(outer.exit_code, 0) << outer.err;
  const std::string outer_handle = outer.out.substr(0, outer.out.find('\n'));
  Result show = d.ctl({"sa", "show", inner_handle});
  EXPECT_THAT(show.out, HasSubstr("inside bundle"));
  EXPECT_THAT(show.out, HasSubstr(outer_handle));

  Result p = d.ctl({"policy", "add", "--dir", "out", "--src", "10.1.0.1/32", "--dst", "10.2.0.0/24", "--proto", "udp",
                    "--dport", "53", "--action", "protect", "--sa", outer_handle, "--priority", "5"});
  ASSERT_EQ(p.exit_code, 0) << p.err;
  const uint32_t id = static_cast<uint32_t>(std::stoul(p.out));

  const int entries = d.map_fd("spd_entries", sizeof(uint32_t), sizeof(ov2_spd_entry));
  ASSERT_GE(entries, 0) << "the daemon's spd_entries map was not found";
  bool found = false;
  for (uint32_t slot = 0; slot < 64 && !found; ++slot) {
    ov2_spd_entry e{};
    if (bpf_map_lookup_elem(entries, &slot, &e) != 0 || !e.valid || e.policy_id != id) continue;
    found = true;
    EXPECT_EQ(e.action, OV2_SPD_PROTECT);
    EXPECT_EQ(e.offload_handle, handle_of(inner_handle));  // NDIS OffloadHandle: the transport SA
    EXPECT_EQ(e.tunnel_handle, handle_of(outer_handle));   // NDIS TunnelHandle: the tunnel SA
    EXPECT_EQ(e.proto, 17);
    EXPECT_EQ(e.dport_lo, 53);
    EXPECT_EQ(e.dport_hi, 53);
    EXPECT_EQ(e.priority, 5u);
  }
  EXPECT_TRUE(found) << "policy " << id << " is not in spd_entries";
  close(entries);

  // The inner SA cannot go while the bundle exists; both together can, with --force for the policy.
  Result refused = d.ctl({"sa", "del", inner_handle});
  EXPECT_NE(refused.exit_code, 0);
  EXPECT_THAT(refused.err, HasSubstr("is the inner SA of the bundle " + outer_handle));
  Result both = d.ctl({"sa", "del", "--force", inner_handle, outer_handle});
  EXPECT_EQ(both.exit_code, 0) << both.err;
}

struct BadCase {
  std::vector<std::string> args;
  std::string expected;
};

TEST_F(ControlE2e, EveryValidationErrorExitsNonZeroWithOneLineReason) {
  DaemonInNamespace d('f');
  const std::string gcm = d.key_file("gcm", kGcmKey);
  const std::string short_key = d.key_file("short", kGcmKey.substr(0, 30));
  const std::string not_hex = d.key_file("nothex", "zz" + kGcmKey);
  const std::string cbc = d.key_file("cbc", kCbcKey);
  const std::string hmac = d.key_file("hmac", kHmacKey);
  auto sa = [&](std::vector<std::string> extra) {
    std::vector<std::string> a = {"sa",     "add",   "--dir",    "in",    "--mode",
                                  "tunnel", "--src", "10.0.0.1", "--dst", "10.0.0.2"};
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
  };
  Result esn = d.ctl(sa({"--spi", "0x500", "--aead", "aes-gcm-128", "--key-file", gcm, "--esn"}));
  Result plain = d.ctl(sa({"--spi", "0x501", "--aead", "aes-gcm-128", "--key-file", gcm}));
  Result transport_out = d.ctl({"sa", "add", "--dir", "out", "--mode", "transport", "--src", "10.0.0.2", "--dst",
                                "10.0.0.1", "--spi", "0x502", "--aead", "aes-gcm-128", "--key-file", gcm});
  ASSERT_EQ(plain.exit_code, 0) << plain.err;
  ASSERT_EQ(transport_out.exit_code, 0) << transport_out.err;
  const std::string plain_handle = plain.out.substr(0, plain.out.find('\n'));
  const std::string out_handle = transport_out.out.substr(0, transport_out.out.find('\n'));
  ASSERT_EQ(d.ctl({"policy", "add", "--dir", "in", "--src", "10.9.0.0/16", "--dst", "10.8.0.0/16", "--action",
                   "protect", "--sa", plain_handle})
                .exit_code,
            0);

  const std::vector<BadCase> cases = {
      {sa({"--spi", "5", "--aead", "aes-gcm-128", "--key-file", gcm}), "SPI 5 is in the range 1-255 reserved"},
      {sa({"--spi", "0", "--aead", "aes-gcm-128", "--key-file", gcm}), "SPI 0 is reserved"},
      {sa({"--spi", "banana", "--aead", "aes-gcm-128", "--key-file", gcm}), "'spi' must be a number"},
      {sa({"--spi", "0x600", "--aead", "aes-gcm-100", "--key-file", gcm}), "unknown AEAD algorithm 'aes-gcm-100'"},
      {sa({"--spi", "0x600", "--enc", "des", "--enc-key-file", cbc, "--auth", "hmac-sha256", "--auth-key-file", hmac}),
       "DES is refused"},
      {sa({"--spi", "0x600", "--enc", "aes-cbc-128", "--enc-key-file", cbc, "--auth", "hmac-md5", "--auth-key-file",
           hmac}),
       "HMAC-MD5 is refused"},
      {sa({"--spi", "0x600", "--aead", "aes-gcm-128", "--key-file", short_key}), "needs 20 bytes of key material"},
      {sa({"--spi", "0x600", "--aead", "aes-gcm-128", "--key-file", not_hex}), "key is not hex"},
      {sa({"--spi", "0x600", "--aead", "aes-gcm-128", "--key-file", "/nonexistent/key"}),
       "cannot read key file /nonexistent/key: No such file or directory"},
      {sa({"--spi", "0x600", "--aead", "aes-gcm-128"}), "--aead needs --key-file"},
      {sa({"--spi", "0x600", "--aead", "aes-gcm-128", "--key-file", gcm, "--auth", "hmac-sha256"}),
       "give either --aead"},
      {sa({"--spi", "0x600", "--enc", "aes-cbc-128", "--enc-key-file", cbc}), "--enc needs --auth"},
      {sa({"--spi", "0x600", "--enc", "aes-cbc-128", "--enc-key-file", cbc, "--auth", "aes-gmac-128", "--auth-key-file",
           d.key_file("gmac", kGcmKey)}),
       "works only with --enc null"},
      {sa({"--spi", "0x600", "--aead", "aes-gcm-128", "--key-file", gcm, "--seq-hi", "3"}), "it needs --esn"},
      {sa({"--spi", "0x600", "--aead", "aes-gcm-128", "--key-file", gcm, "--encap-dport", "4501"}), "need --encap udp"},
      {sa({"--spi", "0x600", "--aead", "aes-gcm-128", "--key-file", gcm, "--lifetime-packets", "100,50"}),
       "soft limit (100) must be below the hard limit (50)"},
      {sa({"--spi", "0x600", "--aead", "aes-gcm-128", "--key-file", gcm, "--replay-window", "100000"}),
       "replay window 100000 is too large"},
      {{"sa", "add", "--dir", "in", "--mode", "tunnel", "--src", "10.0.0.1", "--dst", "2001:db8::2", "--spi", "0x600",
        "--aead", "aes-gcm-128", "--key-file", gcm},
       "different address families"},
      {sa({"--spi", "0x501", "--aead", "aes-gcm-128", "--key-file", gcm}), "exists already"},
      {sa({"--spi", "0x600", "--aead", "aes-gcm-128", "--key-file", gcm, "--inner", out_handle}), "same direction"},
      {sa({"--spi", "0x600", "--aead", "aes-gcm-128", "--key-file", gcm, "--inner", plain_handle}),
       "must be a transport-mode SA"},
      {{"sa", "update", "0x77000000", "--seq-hi", "1"}, "no SA has handle 0x77000000 (invalid parameter)"},
      {{"sa", "update", plain_handle, "--seq-hi", "1"}, "was added without --esn"},
      {{"sa", "del", plain_handle, "0x77000000"}, "no SA has handle 0x77000000; nothing was deleted"},
      {{"sa", "del", plain_handle}, "is used by policy"},
      {{"sa", "show", "nonsense"}, "is not an SA handle"},
      {{"policy", "add", "--dir", "out", "--src", "10.0.0.0/8", "--dst", "10.0.0.0/8", "--action", "protect", "--sa",
        "0x77000000"},
       "--sa 0x77000000: no SA has this handle"},
      {{"policy", "add", "--dir", "out", "--src", "10.0.0.0/8", "--dst", "10.0.0.0/8", "--action", "protect", "--sa",
        plain_handle},
       "an outbound policy needs an outbound SA"},
      {{"policy", "add", "--dir", "out", "--src", "10.0.0.0/8", "--dst", "10.0.0.0/8", "--dport", "80", "--action",
        "bypass"},
       "port selectors need --proto tcp, udp or sctp"},
      {{"policy", "add", "--dir", "out", "--src", "10.0.0.1/8", "--dst", "10.0.0.0/8", "--action", "bypass"},
       "did you mean 10.0.0.0/8?"},
      {{"policy", "add", "--dir", "out", "--src", "10.0.0.0/8", "--dst", "10.0.0.0/8", "--action", "protect"},
       "action protect needs --sa HANDLE"},
      {{"sa", "add", "--dir", "sideways"}, "--dir"},
      // Usage errors name what was wrong, not the first requirement CLI11 checks.
      {{"status"}, "unknown command 'status' (one of: caps, sa, policy, stats, monitor, pcap)"},
      {{"sa", "frob"}, "unknown command 'frob' for 'sa' (one of: add, add-batch, del, update, list, show)"},
      {{"sa", "add", "--bogus"}, "unknown option --bogus for 'sa add'"},
      {{"sa", "list", "extra"}, "unexpected argument 'extra' for 'sa list'"},
      {{"sa"}, "'sa' needs a command (one of: add,"},
  };
  ASSERT_EQ(esn.exit_code, 0) << esn.err;
  const std::string before = d.ctl({"--json", "sa", "list"}).out;
  for (const auto& c : cases) {
    Result r = d.ctl(c.args);
    std::string joined;
    for (const auto& a : c.args) joined += a + " ";
    EXPECT_NE(r.exit_code, 0) << joined;
    EXPECT_THAT(r.err, StartsWith("ipsecov2ctl: error: ")) << joined;
    EXPECT_THAT(r.err, HasSubstr(c.expected)) << joined;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << joined << r.err;
    EXPECT_TRUE(r.out.empty()) << joined << r.out;
  }
  // None of the failures changed anything.
  EXPECT_EQ(d.ctl({"--json", "sa", "list"}).out, before);
}

TEST_F(ControlE2e, KeysNeverAppearInAnyOutputOrTheDaemonLog) {
  DaemonInNamespace d('g');
  const std::string gcm = d.key_file("gcm", kGcmKey);
  const std::string bad = d.key_file("bad", kGcmKey + "0");  // odd length
  Result a = d.ctl({"sa", "add", "--dir", "in", "--mode", "tunnel", "--src", "10.0.0.1", "--dst", "10.0.0.2", "--spi",
                    "0x1000", "--aead", "aes-gcm-128", "--key-file", gcm});
  ASSERT_EQ(a.exit_code, 0) << a.err;
  const std::string handle = a.out.substr(0, a.out.find('\n'));
  d.ctl({"sa",     "add",         "--dir",           "out",
         "--mode", "tunnel",      "--src",           "10.0.0.1",
         "--dst",  "10.0.0.2",    "--spi",           "0x1001",
         "--enc",  "aes-cbc-128", "--enc-key-file",  d.key_file("cbc", kCbcKey),
         "--auth", "hmac-sha256", "--auth-key-file", d.key_file("hmac", kHmacKey)});
  d.ctl({"sa", "add", "--dir", "in", "--mode", "tunnel", "--src", "10.0.0.1", "--dst", "10.0.0.2", "--spi", "0x1002",
         "--aead", "aes-gcm-128", "--key-file", bad});
  d.ctl({"sa", "add", "--dir", "in", "--mode", "tunnel", "--src", "10.0.0.1", "--dst", "10.0.0.2", "--spi", "0x1000",
         "--aead", "aes-gcm-128", "--key-file", "-"},
        kGcmKey);  // duplicate: refused
  d.ctl({"sa", "list"});
  d.ctl({"--json", "sa", "list"});
  d.ctl({"sa", "show", handle});
  d.ctl({"--json", "sa", "show", handle});
  d.ctl({"sa", "del", handle});
  ASSERT_EQ(d.stop(), 0);
  const std::string everything = d.transcript() + d.log();
  EXPECT_THAT(everything, HasSubstr("added inbound SA"));  // the log is there and was read
  for (const std::string& k : {kGcmKey, kCbcKey, kHmacKey}) {
    for (size_t off = 0; off + 8 <= k.size(); off += 8) {
      std::string piece = k.substr(off, 8);
      std::string upper = piece;
      for (auto& ch : upper) ch = static_cast<char>(std::toupper(ch));
      EXPECT_THAT(everything, Not(HasSubstr(piece))) << "key bytes leaked";
      EXPECT_THAT(everything, Not(HasSubstr(upper))) << "key bytes leaked";
    }
  }
}

TEST_F(ControlE2e, NonRootCallerIsRefused) {
  DaemonInNamespace d('h');
  auto drop_to_nobody = [] {
    const gid_t none = 65534;
    if (setgroups(0, nullptr) != 0 || setgid(none) != 0 || setuid(65534) != 0) _exit(126);
  };
  // The socket's mode (0660 root) already stops nobody at connect().
  Result fs = d.ctl({"caps"}, "", drop_to_nobody);
  EXPECT_NE(fs.exit_code, 0);
  EXPECT_THAT(fs.err, HasSubstr("cannot connect to " + d.socket_path() + ": Permission denied"));

  // With the file opened up, the daemon's own SO_PEERCRED check refuses.
  ASSERT_EQ(chmod(d.socket_path().c_str(), 0666), 0);
  ASSERT_EQ(chmod((d.socket_path().substr(0, d.socket_path().rfind('/'))).c_str(), 0755), 0);
  Result cred = d.ctl({"caps"}, "", drop_to_nobody);
  EXPECT_NE(cred.exit_code, 0);
  EXPECT_THAT(cred.err, HasSubstr("uid 65534"));
  EXPECT_THAT(cred.err, HasSubstr("may not use the ipsecov2d control socket"));
  EXPECT_THAT(d.log(), HasSubstr("refused a connection"));
  // Root still gets through.
  EXPECT_EQ(d.ctl({"caps"}).exit_code, 0);
}

TEST_F(ControlE2e, GroupMembersAreAdmittedWithGroupOptionOthersNot) {
  // "users" (gid 100): a supplementary group of the caller, not its primary
  // one, so the daemon must look at SO_PEERGROUPS.
  const group* users = getgrnam("users");
  if (users == nullptr) GTEST_SKIP() << "no group 'users' on this machine";
  const gid_t gid = users->gr_gid;
  DaemonInNamespace d('i', {"--group", "users"});
  struct stat st {};
  ASSERT_EQ(stat(d.socket_path().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0660u);
  EXPECT_EQ(st.st_gid, gid);
  Result member = d.ctl({"caps"}, "", [gid] {
    if (setgroups(1, &gid) != 0 || setgid(65534) != 0 || setuid(65534) != 0) _exit(126);
  });
  EXPECT_EQ(member.exit_code, 0) << member.err;

  // Someone else, even with the file opened up, is refused by the daemon.
  ASSERT_EQ(chmod(d.socket_path().c_str(), 0666), 0);
  ASSERT_EQ(chmod((d.socket_path().substr(0, d.socket_path().rfind('/'))).c_str(), 0755), 0);
  Result stranger = d.ctl({"caps"}, "", [] {
    if (setgroups(0, nullptr) != 0 || setgid(65534) != 0 || setuid(65534) != 0) _exit(126);
  });
  EXPECT_NE(stranger.exit_code, 0);
  EXPECT_THAT(stranger.err, HasSubstr("it accepts root and members of group 'users'"));
}

TEST_F(ControlE2e, GarbageOnTheSocketIsAnsweredAndTheDaemonKeepsServing) {
  DaemonInNamespace d('j');
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, d.socket_path().c_str(), sizeof addr.sun_path - 1);
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  timeval tv{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  const std::string garbage = "\x7f\x45\x4c\x46 \xff\xfe garbage {{{\n{\"version\":99,\"op\":\"caps\"}\n";
  ASSERT_EQ(send(fd, garbage.data(), garbage.size(), MSG_NOSIGNAL), ssize_t(garbage.size()));
  std::string answers;
  char buf[4096];
  while (std::count(answers.begin(), answers.end(), '\n') < 2) {
    const ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    answers.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  std::istringstream lines(answers);
  std::string first, second;
  std::getline(lines, first);
  std::getline(lines, second);
  EXPECT_EQ(json::parse(first)["error"]["code"], "invalid-argument");
  EXPECT_EQ(json::parse(second)["error"]["code"], "unsupported");

  // A client that sends half a request and vanishes.
  const int half = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_EQ(connect(half, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  (void)!send(half, "{\"version\":1,\"op\":\"sa.add\",\"sa\":{", 33, MSG_NOSIGNAL);
  close(half);

  Result r = d.ctl({"--json", "sa", "list"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(json::parse(r.out)["sas"].empty());
  EXPECT_EQ(d.ctl({"caps"}).exit_code, 0);
}

TEST_F(ControlE2e, SigtermRemovesSocketDeviceProgramsAndMapsAndExitsZero) {
  DaemonInNamespace d('k');
  const std::vector<uint32_t> maps = d.map_ids();
  ASSERT_FALSE(maps.empty());
  const std::string sock = d.socket_path();
  // Running: the offload device exists and the wire has an XDP program.
  EXPECT_EQ(run({"/usr/sbin/ip", "-n", d.netns(), "link", "show", "ov2"}).exit_code, 0);
  EXPECT_THAT(run({"/usr/sbin/ip", "-n", d.netns(), "link", "show", "wire0"}).out, HasSubstr("xdp"));
  EXPECT_EQ(d.stop(), 0);
  EXPECT_NE(run({"/usr/sbin/ip", "-n", d.netns(), "link", "show", "ov2"}).exit_code, 0) << "offload device left behind";
  EXPECT_THAT(run({"/usr/sbin/ip", "-n", d.netns(), "link", "show", "wire0"}).out, Not(HasSubstr("xdp")))
      << "XDP program left on the wire";
  EXPECT_NE(access(sock.c_str(), F_OK), 0) << "socket file left behind";
  EXPECT_NE(access(sock.substr(0, sock.rfind('/')).c_str(), F_OK), 0) << "socket directory left behind";
  // Maps are freed once the last reference goes (asynchronously): poll.
  bool all_gone = false;
  for (int i = 0; i < 200 && !all_gone; ++i) {
    all_gone = true;
    for (uint32_t id : maps) {
      const int fd = bpf_map_get_fd_by_id(id);
      if (fd >= 0) {
        all_gone = false;
        close(fd);
      }
    }
    if (!all_gone) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_TRUE(all_gone) << "BPF maps of the daemon still exist after it exited";
}

TEST_F(ControlE2e, TwoDaemonsInTwoNamespacesDoNotCollide) {
  DaemonInNamespace one('l');
  DaemonInNamespace two('m');
  const std::vector<std::string> add = {"sa",     "add",    "--dir",    "in",          "--mode",
                                        "tunnel", "--src",  "10.0.0.1", "--dst",       "10.0.0.2",
                                        "--spi",  "0x4242", "--aead",   "aes-gcm-128", "--key-file"};
  auto a1 = add, a2 = add;
  a1.push_back(one.key_file("k", kGcmKey));
  a2.push_back(two.key_file("k", kGcmKey));
  Result r1 = one.ctl(a1);
  Result r2 = two.ctl(a2);
  ASSERT_EQ(r1.exit_code, 0) << r1.err;
  ASSERT_EQ(r2.exit_code, 0) << r2.err;
  const int m1 = one.sa_map_fd();
  const int m2 = two.sa_map_fd();
  ASSERT_GE(m1, 0);
  ASSERT_GE(m2, 0);
  ov2_sa_key k = key_for(0x4242, "10.0.0.2");
  ov2_sa_value v{};
  ASSERT_EQ(bpf_map_lookup_elem(m1, &k, &v), 0);
  EXPECT_EQ(v.handle, handle_of(r1.out));
  ASSERT_EQ(bpf_map_lookup_elem(m2, &k, &v), 0);
  EXPECT_EQ(v.handle, handle_of(r2.out));
  ASSERT_EQ(one.ctl({"sa", "del", r1.out.substr(0, r1.out.find('\n'))}).exit_code, 0);
  EXPECT_NE(bpf_map_lookup_elem(m1, &k, &v), 0);
  EXPECT_EQ(bpf_map_lookup_elem(m2, &k, &v), 0) << "deleting in one daemon touched the other";
  close(m1);
  close(m2);
}

TEST_F(ControlE2e, ConfigFileIsReadAndCommandLineWins) {
  const std::string cfg = "/tmp/ov2t" + std::to_string(getpid()) + "-cfg.toml";
  const std::string unused_socket = "/tmp/ov2t" + std::to_string(getpid()) + "-cfg-unused.sock";
  std::ofstream(cfg) << "[daemon]\nlog_level = \"debug\"\n[control]\nsocket = \"" << unused_socket
                     << "\"\ngroup = \"nogroup\"\n";
  {
    DaemonInNamespace d('o', {"--config", cfg});
    struct stat st {};
    ASSERT_EQ(stat(d.socket_path().c_str(), &st), 0);
    EXPECT_EQ(st.st_gid, 65534u) << "[control] group from the config file was not applied";
    EXPECT_NE(access(unused_socket.c_str(), F_OK), 0) << "--socket must override the config file";
  }
  std::ofstream(cfg) << "[control]\nsocket = 42\n";
  Result bad = run({kDaemon, "--config", cfg});
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_THAT(bad.err, HasSubstr("ipsecov2d: error: " + cfg));
  EXPECT_THAT(bad.err, HasSubstr("socket"));
  std::filesystem::remove(cfg);
}

TEST_F(ControlE2e, DaemonUsageErrorsExitTwoWithOneLineThatNamesTheArgument) {
  const struct {
    std::vector<std::string> args;
    std::string line;
  } cases[] = {
      {{"--bogus"}, "ipsecov2d: error: unknown option --bogus (see --help)\n"},
      {{"start"}, "ipsecov2d: error: unexpected argument 'start' (see --help)\n"},
      {{"--engine", "frob"}, "ipsecov2d: error: --engine: frob not in {afxdp,nic,auto} (see --help)\n"},
  };
  for (const auto& c : cases) {
    std::vector<std::string> argv{kDaemon};
    argv.insert(argv.end(), c.args.begin(), c.args.end());
    Result r = run(argv);
    EXPECT_EQ(r.exit_code, 2) << c.args.front();
    EXPECT_EQ(r.err, c.line);
    EXPECT_TRUE(r.out.empty()) << r.out;
  }
}

TEST_F(ControlE2e, DaemonNotRunningAndNicEngineWithoutNicGiveClearErrors) {
  Result r = run({kCtl, "--socket", "/tmp/ov2t-none/ipsecov2.sock", "caps"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_EQ(r.err,
            "ipsecov2ctl: error: cannot connect to /tmp/ov2t-none/ipsecov2.sock: No such file or directory (is "
            "ipsecov2d running?)\n");
  Result nic = run({kDaemon, "--engine", "nic", "--socket", "/tmp/ov2t-none/x.sock"});
  EXPECT_NE(nic.exit_code, 0);
  EXPECT_THAT(nic.err, HasSubstr("--engine nic needs the offload NIC in --wire"));
}

// This kernel has no ESP (CONFIG_INET_ESP off) and the veth no esp-hw-offload:
// the NIC engine passes the SA to the kernel and reports its refusal in plain
// words; nothing is installed, neither in XFRM nor in the daemon.
TEST_F(ControlE2e, NicEngineReportsTheKernelRefusalInPlainWordsAndInstallsNothing) {
  DaemonInNamespace d('n', {"--engine", "nic"});
  const std::string key = d.key_file("gcm", kGcmKey);
  Result add = d.ctl({"sa", "add", "--dir", "out", "--mode", "tunnel", "--src", "192.0.2.1", "--dst", "192.0.2.2",
                      "--spi", "0x1000", "--aead", "aes-gcm-128", "--key-file", key});
  EXPECT_NE(add.exit_code, 0);
  EXPECT_THAT(add.err, StartsWith("ipsecov2ctl: error: "));
  EXPECT_THAT(add.err, HasSubstr("the kernel refused the SA"));
  EXPECT_THAT(add.err, Not(HasSubstr(kGcmKey.substr(0, 16))));
  Result list = d.ctl({"--json", "sa", "list"});
  ASSERT_EQ(list.exit_code, 0) << list.err;
  EXPECT_TRUE(json::parse(list.out)["sas"].empty());
  Result xfrm = run({"/usr/sbin/ip", "-n", d.netns(), "xfrm", "state"});
  EXPECT_EQ(xfrm.out, "") << "nothing may stay in the kernel's SAD";
  Result caps = d.ctl({"--json", "caps"});
  ASSERT_EQ(caps.exit_code, 0) << caps.err;
  EXPECT_EQ(json::parse(caps.out)["caps"]["Esp"], false) << "a veth has no esp-hw-offload";
}

TEST_F(ControlE2e, AutoEngineFallsBackToAfXdpOnANicWithoutEspOffload) {
  DaemonInNamespace d('o', {"--engine", "auto"});
  const std::string key = d.key_file("gcm", kGcmKey);
  Result add = d.ctl({"sa", "add", "--dir", "in", "--mode", "tunnel", "--src", "192.0.2.2", "--dst", "192.0.2.1",
                      "--spi", "0x2000", "--aead", "aes-gcm-128", "--key-file", key});
  ASSERT_EQ(add.exit_code, 0) << add.err;
  const int map = d.sa_map_fd();
  ASSERT_GE(map, 0);
  ov2_sa_key k{};
  k.spi_be = htonl(0x2000);
  k.family = OV2_AF_INET;
  const uint8_t dst[4] = {192, 0, 2, 1};
  std::memcpy(k.daddr, dst, 4);
  ov2_sa_value v{};
  EXPECT_EQ(bpf_map_lookup_elem(map, &k, &v), 0) << "the SA went to the AF_XDP engine's wire map";
  EXPECT_EQ(v.handle, handle_of(add.out));
  close(map);
  EXPECT_THAT(d.log(), HasSubstr("every SA goes to the AF_XDP engine"));
  Result show = d.ctl({"--json", "sa", "show", add.out.substr(0, add.out.find('\n'))});
  ASSERT_EQ(show.exit_code, 0) << show.err;
  EXPECT_EQ(json::parse(show.out)["sa"]["engine"], "afxdp") << "sa show says which engine holds the SA";
  Result list = d.ctl({"sa", "list"});
  EXPECT_THAT(list.out, HasSubstr("ENGINE"));
  EXPECT_THAT(list.out, HasSubstr("afxdp"));
}

// The SPD of --engine nic becomes the kernel's own XFRM policies (crypto
// offload needs the kernel's SPD to steer packets to NIC-held SAs).  This
// kernel takes policies (only SAs are refused), so they are checked live in
// the daemon's namespace: they appear, go on `policy del`, an untranslatable
// one changes nothing, and nothing is left when the daemon stops.
TEST_F(ControlE2e, NicEngineInstallsTheSpdAsKernelXfrmPoliciesAndLeavesNothingBehind) {
  DaemonInNamespace d('x', {"--engine", "nic"});
  auto kernel_policies = [&] { return run({"/usr/sbin/ip", "-n", d.netns(), "xfrm", "policy"}).out; };
  Result ike = d.ctl({"policy", "add", "--dir", "out", "--src", "0.0.0.0/0", "--dst", "0.0.0.0/0", "--proto", "udp",
                      "--dport", "500", "--action", "bypass", "--priority", "10"});
  ASSERT_EQ(ike.exit_code, 0) << ike.err;
  Result block = d.ctl({"policy", "add", "--dir", "in", "--src", "10.9.0.0/16", "--dst", "10.1.0.0/24", "--action",
                        "discard", "--priority", "2000"});
  ASSERT_EQ(block.exit_code, 0) << block.err;
  std::string now = kernel_policies();
  EXPECT_THAT(now, HasSubstr("src 0.0.0.0/0 dst 0.0.0.0/0 proto udp dport 500 \n\tdir out priority 10"));
  EXPECT_THAT(now, HasSubstr("src 10.9.0.0/16 dst 10.1.0.0/24 \n\tdir in action block priority 2000"));

  Result ranged = d.ctl({"policy", "add", "--dir", "out", "--src", "10.1.0.0/24", "--dst", "10.2.0.0/24", "--proto",
                         "tcp", "--dport", "1000-2000", "--action", "discard"});
  EXPECT_NE(ranged.exit_code, 0);
  EXPECT_THAT(ranged.err, HasSubstr("destination port range 1000-2000 cannot be said in the kernel's SPD"));
  EXPECT_EQ(kernel_policies(), now) << "a refused policy changes nothing in the kernel";
  Result list = d.ctl({"--json", "policy", "list"});
  ASSERT_EQ(list.exit_code, 0) << list.err;
  EXPECT_EQ(json::parse(list.out)["policies"].size(), 2u) << "nor in the daemon";

  Result del = d.ctl({"policy", "del", ike.out.substr(0, ike.out.find('\n'))});
  ASSERT_EQ(del.exit_code, 0) << del.err;
  now = kernel_policies();
  EXPECT_THAT(now, Not(HasSubstr("dport 500")));
  EXPECT_THAT(now, HasSubstr("action block"));

  EXPECT_EQ(d.stop(), 0) << d.log();
  EXPECT_EQ(kernel_policies(), "") << "the daemon left policies in the kernel";
}

TEST_F(ControlE2e, NicOffloadTypeIsChosenOnTheCommandLineAndBadValuesAreRefused) {
  DaemonInNamespace d('y', {"--engine", "nic", "--nic-offload", "packet"});
  EXPECT_THAT(d.log(), HasSubstr("through XFRM device offload (packet offload)"));
  Result bad = run({kDaemon, "--engine", "nic", "--nic-offload", "full", "--socket", "/tmp/ov2t-none/x.sock"});
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_THAT(bad.err, HasSubstr("--nic-offload"));
  EXPECT_THAT(bad.err, HasSubstr("full"));
}

}  // namespace
