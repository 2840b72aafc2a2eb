// encrypt -> decrypt gives back the packets we started from, for every
// algorithm, both modes, with and without NAT-T, Ethernet and raw-IP captures.
#include <gtest/gtest.h>
#include <pcap/pcap.h>

#include <tuple>

#include "pcap_test_support.h"
#include "sa_fixtures.h"

namespace ov2::pcap::test {
namespace {

struct Traffic {
  std::vector<Bytes> ip;      // plaintext IP packets A -> B (what the SAs take)
  std::vector<Bytes> frames;  // the capture's frames (IP packets framed, plus extras)
  size_t not_taken = 0;       // frames no SA takes (written unchanged)
};

// IPv4 and IPv6, TCP/UDP/ICMP, sizes from empty payload to 1400 bytes; Ethernet
// captures also get an ARP frame, and every capture a packet between other hosts.
Traffic make_traffic(bool ethernet, bool with_stranger) {
  Traffic t;
  uint8_t seed = 0;
  for (size_t len : {0, 1, 15, 100, 1400}) {
    for (uint8_t proto : {6, 17, 1}) {
      t.ip.push_back(ipv4_packet(kHostA4, kHostB4, proto, len, ++seed));
      t.ip.push_back(ipv6_packet(kHostA6, kHostB6, proto == 1 ? 58 : proto, len, ++seed));
    }
  }
  for (const auto& p : t.ip) t.frames.push_back(ethernet ? ethernet_frame(p) : p);
  if (ethernet) {
    t.frames.insert(t.frames.begin() + 3, arp_frame());
    ++t.not_taken;
  }
  if (with_stranger) {
    const Bytes stranger = ipv4_packet("10.9.9.9", "10.8.8.8", 17, 40, 99);
    t.frames.push_back(ethernet ? ethernet_frame(stranger) : stranger);
    ++t.not_taken;
  }
  return t;
}

// The IP protocol of an IP packet (IPv4 protocol / IPv6 next header).
uint8_t ip_proto(const Bytes& ip) { return (ip[0] >> 4) == 4 ? ip[9] : ip[6]; }

class RoundTrip : public ::testing::TestWithParam<std::tuple<size_t, bool, bool, bool>> {};

TEST_P(RoundTrip, DecryptGivesBackTheExactPlaintextAndEncryptHidesIt) {
  const auto& [alg_index, tunnel, natt, ethernet] = GetParam();
  const AlgCase& alg = all_algorithms()[alg_index];
  TempDir dir;
  write_text(dir.path("sa.json"), twin_sas(alg, tunnel, natt).dump(2));
  // Transport SAs take only A <-> B; tunnel SAs take everything.
  const Traffic t = make_traffic(ethernet, /*with_stranger=*/!tunnel);
  write_capture(dir.path("plain.pcap"), ethernet ? DLT_EN10MB : DLT_RAW, t.frames);

  const RunResult enc = run_cli(
      {"pcap", "encrypt", "--sa-file", dir.path("sa.json"), dir.path("plain.pcap"), dir.path("esp.pcap"), "--json"});
  ASSERT_EQ(enc.exit_code, 0) << enc.out << enc.err;
  const auto enc_summary = nlohmann::json::parse(enc.out);
  EXPECT_EQ(enc_summary["encrypted"], t.ip.size());
  EXPECT_EQ(enc_summary["passed_through"], t.not_taken);
  EXPECT_EQ(enc_summary["written"], t.frames.size());

  const Capture esp = read_capture(dir.path("esp.pcap"));
  ASSERT_EQ(esp.frames.size(), t.frames.size());
  EXPECT_EQ(esp.dlt, ethernet ? DLT_EN10MB : DLT_RAW);
  const Capture plain = read_capture(dir.path("plain.pcap"));
  size_t protected_frames = 0;
  for (size_t i = 0; i < esp.frames.size(); ++i) {
    EXPECT_EQ(esp.timestamps_ns[i], plain.timestamps_ns[i]) << "frame " << i;
    if (esp.frames[i] == t.frames[i]) continue;  // ARP / stranger
    ++protected_frames;
    const size_t l2 = ethernet ? 14 : 0;
    const Bytes ip(esp.frames[i].begin() + static_cast<long>(l2), esp.frames[i].end());
    EXPECT_EQ(ip_proto(ip), natt ? 17 : 50) << "frame " << i;
    if (ethernet) {
      EXPECT_TRUE(std::equal(t.frames[i].begin(), t.frames[i].begin() + 12, esp.frames[i].begin())) << "MACs kept";
    }
    // The plaintext payload must not appear in the ESP frame (except null encryption).
    if (alg.enc != "null" && ip.size() > 200) {
      const Bytes& original = t.frames[i];
      const Bytes tail(original.end() - 64, original.end());
      EXPECT_EQ(std::search(ip.begin(), ip.end(), tail.begin(), tail.end()), ip.end()) << "frame " << i;
    }
  }
  EXPECT_EQ(protected_frames, t.ip.size());

  const RunResult dec = run_cli(
      {"pcap", "decrypt", "--sa-file", dir.path("sa.json"), dir.path("esp.pcap"), dir.path("back.pcap"), "--json"});
  ASSERT_EQ(dec.exit_code, 0) << dec.out << dec.err;
  const auto dec_summary = nlohmann::json::parse(dec.out);
  EXPECT_EQ(dec_summary["opened"], t.ip.size());
  EXPECT_EQ(dec_summary["esp"], t.ip.size());
  EXPECT_EQ(dec_summary["failed"], 0);
  EXPECT_EQ(dec_summary["not_esp"], t.not_taken);

  const Capture back = read_capture(dir.path("back.pcap"));
  EXPECT_EQ(back.dlt, DLT_EN10MB);
  ASSERT_EQ(back.frames.size(), t.frames.size());
  for (size_t i = 0; i < back.frames.size(); ++i) {
    EXPECT_EQ(back.timestamps_ns[i], plain.timestamps_ns[i]) << "frame " << i;
    if (ethernet) {
      EXPECT_EQ(back.frames[i], t.frames[i]) << "frame " << i;
    } else {
      const Bytes& ip = t.frames[i];
      const Bytes expected_l2 = {0x02,
                                 0,
                                 0,
                                 0,
                                 0,
                                 0x02,
                                 0x02,
                                 0,
                                 0,
                                 0,
                                 0,
                                 0x01,
                                 static_cast<uint8_t>((ip[0] >> 4) == 6 ? 0x86 : 0x08),
                                 static_cast<uint8_t>((ip[0] >> 4) == 6 ? 0xdd : 0x00)};
      Bytes expected = expected_l2;
      expected.insert(expected.end(), ip.begin(), ip.end());
      EXPECT_EQ(back.frames[i], expected) << "frame " << i;
    }
  }
}

std::string case_name(const ::testing::TestParamInfo<RoundTrip::ParamType>& info) {
  const auto& [alg_index, tunnel, natt, ethernet] = info.param;
  return all_algorithms()[alg_index].name + (tunnel ? "_tunnel" : "_transport") + (natt ? "_natt" : "") +
         (ethernet ? "_ethernet" : "_rawip");
}

INSTANTIATE_TEST_SUITE_P(AllAlgorithms, RoundTrip,
                         ::testing::Combine(::testing::Range<size_t>(0, 6), ::testing::Bool(), ::testing::Bool(),
                                            ::testing::Bool()),
                         case_name);

}  // namespace
}  // namespace ov2::pcap::test
