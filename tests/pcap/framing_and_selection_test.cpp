// Which SA encrypt picks, how frames are kept (VLAN tags, link types, pcapng),
// bundles, and what decrypt leaves alone (IKE and NAT keepalives on port 4500).
#include <gtest/gtest.h>
#include <pcap/pcap.h>

#include <fstream>

#include "pcap_test_support.h"
#include "sa_fixtures.h"

namespace ov2::pcap::test {
namespace {

uint32_t be32_at(const Bytes& b, size_t off) {
  return static_cast<uint32_t>(b[off]) << 24 | static_cast<uint32_t>(b[off + 1]) << 16 |
         static_cast<uint32_t>(b[off + 2]) << 8 | b[off + 3];
}

RunResult encrypt(const TempDir& dir, std::vector<std::string> extra = {}) {
  std::vector<std::string> args = {
      "pcap", "encrypt", "--json", "--sa-file", dir.path("sa.json"), dir.path("plain.pcap"), dir.path("esp.pcap")};
  args.insert(args.end(), extra.begin(), extra.end());
  return run_cli(args);
}

RunResult decrypt(const TempDir& dir, const std::string& in = "esp.pcap") {
  return run_cli({"pcap", "decrypt", "--json", "--sa-file", dir.path("sa.json"), dir.path(in), dir.path("back.pcap")});
}

TEST(Pcapng, PcapngInputFromEditcapRoundTrips) {
  TempDir dir;
  write_text(dir.path("sa.json"), twin_sas(gcm128(), false, false).dump());
  std::vector<Bytes> frames;
  for (uint8_t i = 0; i < 4; ++i) {
    frames.push_back(ethernet_frame(ipv4_packet(kHostA4, kHostB4, 17, 30u * i, i)));
    frames.push_back(ethernet_frame(ipv6_packet(kHostA6, kHostB6, 6, 30u * i, i)));
  }
  write_capture(dir.path("plain0.pcap"), DLT_EN10MB, frames);
  const RunResult conv = run_command("editcap -F pcapng " + dir.path("plain0.pcap") + " " + dir.path("plain.pcap"));
  ASSERT_EQ(conv.exit_code, 0) << "editcap (package tshark) must be installed: " << conv.out;
  {
    std::ifstream f(dir.path("plain.pcap"), std::ios::binary);
    char magic[4] = {};
    f.read(magic, 4);
    ASSERT_EQ(std::string(magic, 4), std::string("\x0a\x0d\x0d\x0a", 4)) << "editcap wrote pcapng";
  }
  const RunResult enc = encrypt(dir);
  ASSERT_EQ(enc.exit_code, 0) << enc.out << enc.err;
  // Decrypt from pcapng too.
  ASSERT_EQ(run_command("editcap -F pcapng " + dir.path("esp.pcap") + " " + dir.path("esp.pcapng")).exit_code, 0);
  const RunResult dec = decrypt(dir, "esp.pcapng");
  ASSERT_EQ(dec.exit_code, 0) << dec.out << dec.err;
  EXPECT_EQ(read_capture(dir.path("back.pcap")).frames, frames);
}

TEST(Vlan, TaggedFramesKeepTheirTagThroughEncryptAndDecrypt) {
  TempDir dir;
  write_text(dir.path("sa.json"), twin_sas(gcm128(), false, false).dump());
  const std::vector<Bytes> frames = {ethernet_frame(ipv4_packet(kHostA4, kHostB4, 17, 50, 1), 42),
                                     ethernet_frame(ipv6_packet(kHostA6, kHostB6, 17, 50, 2), 43)};
  write_capture(dir.path("plain.pcap"), DLT_EN10MB, frames);
  const RunResult enc = encrypt(dir);
  ASSERT_EQ(enc.exit_code, 0) << enc.out << enc.err;
  EXPECT_EQ(nlohmann::json::parse(enc.out)["encrypted"], 2);
  const Capture esp = read_capture(dir.path("esp.pcap"));
  ASSERT_EQ(esp.frames.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_TRUE(std::equal(frames[i].begin(), frames[i].begin() + 18, esp.frames[i].begin())) << "MACs + tag kept";
    const uint8_t proto = i == 0 ? esp.frames[i][18 + 9] : esp.frames[i][18 + 6];
    EXPECT_EQ(proto, 50);
  }
  const RunResult dec = decrypt(dir);
  ASSERT_EQ(dec.exit_code, 0) << dec.out << dec.err;
  EXPECT_EQ(read_capture(dir.path("back.pcap")).frames, frames);
}

TEST(Selection, TransportSaTakesItsHostsBeforeAnEarlierTunnelSa) {
  TempDir dir;
  auto sas = nlohmann::json::array({sa_object(gcm128(), "out", "tunnel", kGwA6, kGwB6, 0x1002, false, 1),
                                    sa_object(gcm128(), "out", "transport", kHostA6, kHostB6, 0x2002, false, 2)});
  write_text(dir.path("sa.json"), sas.dump());
  write_capture(dir.path("plain.pcap"), DLT_RAW,
                {ipv6_packet(kHostA6, kHostB6, 17, 5, 1), ipv6_packet("2001:db8::7", kHostB6, 17, 5, 2)});
  ASSERT_EQ(encrypt(dir).exit_code, 0);
  const Capture esp = read_capture(dir.path("esp.pcap"));
  ASSERT_EQ(esp.frames.size(), 2u);
  EXPECT_EQ(be32_at(esp.frames[0], 40), 0x2002u) << "A->B: transport SA";
  EXPECT_EQ(be32_at(esp.frames[1], 40), 0x1002u) << "other hosts: tunnel SA";
}

TEST(Selection, TunnelSaOfThePacketsFamilyComesFirstThenAnyTunnel) {
  TempDir dir;
  auto sas = nlohmann::json::array({sa_object(gcm128(), "out", "tunnel", kGwA6, kGwB6, 0x1002, false, 1),
                                    sa_object(gcm128(), "in", "tunnel", kGwA6, kGwB6, 0x1002, false, 1)});
  write_text(dir.path("sa.json"), sas.dump());
  // Only an IPv6 tunnel: IPv4 packets go 4-in-6.
  const std::vector<Bytes> frames = {ethernet_frame(ipv4_packet(kHostA4, kHostB4, 1, 20, 1))};
  write_capture(dir.path("plain.pcap"), DLT_EN10MB, frames);
  ASSERT_EQ(encrypt(dir).exit_code, 0);
  const Capture esp = read_capture(dir.path("esp.pcap"));
  ASSERT_EQ(esp.frames.size(), 1u);
  EXPECT_EQ(esp.frames[0][12], 0x86) << "EtherType follows the outer family";
  EXPECT_EQ(esp.frames[0][13], 0xdd);
  EXPECT_EQ(esp.frames[0][14] >> 4, 6);
  const RunResult dec = decrypt(dir);
  ASSERT_EQ(dec.exit_code, 0) << dec.out;
  EXPECT_EQ(read_capture(dir.path("back.pcap")).frames, frames) << "EtherType back to IPv4";
}

TEST(Selection, SpiOptionPicksTheNamedSa) {
  TempDir dir;
  auto sas = nlohmann::json::array({sa_object(gcm128(), "out", "tunnel", kGwA6, kGwB6, 0x1002, false, 1),
                                    sa_object(gcm128(), "out", "tunnel", kGwA6, kGwB6, 0x1003, false, 2)});
  write_text(dir.path("sa.json"), sas.dump());
  write_capture(dir.path("plain.pcap"), DLT_RAW, {ipv6_packet(kHostA6, kHostB6, 17, 5, 1)});
  ASSERT_EQ(encrypt(dir).exit_code, 0);
  EXPECT_EQ(be32_at(read_capture(dir.path("esp.pcap")).frames.at(0), 40), 0x1002u) << "first by default";
  ASSERT_EQ(encrypt(dir, {"--spi", "0x1003"}).exit_code, 0);
  EXPECT_EQ(be32_at(read_capture(dir.path("esp.pcap")).frames.at(0), 40), 0x1003u);
  ASSERT_EQ(encrypt(dir, {"--spi", "4098"}).exit_code, 0);
  EXPECT_EQ(be32_at(read_capture(dir.path("esp.pcap")).frames.at(0), 40), 0x1002u);
}

TEST(LinkTypes, Ipv4LinkTypeInputIsWrittenAsRaw) {
  TempDir dir;
  write_text(dir.path("sa.json"), twin_sas(gcm128(), false, false).dump());
  const Bytes p = ipv4_packet(kHostA4, kHostB4, 17, 5, 1);
  write_capture(dir.path("plain.pcap"), DLT_IPV4, {p});
  const RunResult enc = encrypt(dir);
  ASSERT_EQ(enc.exit_code, 0) << enc.out << enc.err;
  const Capture esp = read_capture(dir.path("esp.pcap"));
  EXPECT_EQ(esp.dlt, DLT_RAW);
  ASSERT_EQ(esp.frames.size(), 1u);
  EXPECT_EQ(esp.frames[0][9], 50);
  ASSERT_EQ(decrypt(dir).exit_code, 0);
  const Capture back = read_capture(dir.path("back.pcap"));
  ASSERT_EQ(back.frames.size(), 1u);
  EXPECT_EQ(Bytes(back.frames[0].begin() + 14, back.frames[0].end()), p);
}

TEST(Bundle, TransportInsideTunnelRoundTripsAndCarriesBothSpis) {
  TempDir dir;
  // [0] out tunnel carrying [1] out transport; [2] in tunnel carrying [3] in transport.
  auto sas =
      nlohmann::json::array({sa_object(gcm128(), "out", "tunnel", kGwA6, kGwB6, 0x5001, false, 1),
                             sa_object(all_algorithms()[3], "out", "transport", kHostA6, kHostB6, 0x5002, false, 2),
                             sa_object(gcm128(), "in", "tunnel", kGwA6, kGwB6, 0x5001, false, 1),
                             sa_object(all_algorithms()[3], "in", "transport", kHostA6, kHostB6, 0x5002, false, 2)});
  sas[0]["inner"] = 1;
  sas[2]["inner"] = 3;
  write_text(dir.path("sa.json"), sas.dump());
  const std::vector<Bytes> frames = {ethernet_frame(ipv6_packet(kHostA6, kHostB6, 17, 100, 1)),
                                     ethernet_frame(ipv6_packet(kHostA6, kHostB6, 6, 0, 2))};
  write_capture(dir.path("plain.pcap"), DLT_EN10MB, frames);
  const RunResult enc = encrypt(dir);
  ASSERT_EQ(enc.exit_code, 0) << enc.out << enc.err;
  EXPECT_EQ(nlohmann::json::parse(enc.out)["encrypted"], 2);
  const Capture esp = read_capture(dir.path("esp.pcap"));
  ASSERT_EQ(esp.frames.size(), 2u);
  EXPECT_EQ(be32_at(esp.frames[0], 14 + 40), 0x5001u) << "outer SPI: the tunnel SA";
  const RunResult dec = decrypt(dir);
  ASSERT_EQ(dec.exit_code, 0) << dec.out << dec.err;
  EXPECT_EQ(nlohmann::json::parse(dec.out)["opened"], 2);
  EXPECT_EQ(read_capture(dir.path("back.pcap")).frames, frames);
}

TEST(Bundle, TamperedTransportLayerIsReportedAsTransportAuthFailure) {
  TempDir dir;
  // Same keys, but the inbound transport SA's key differs: the tunnel opens,
  // the transport layer does not.
  auto sas = nlohmann::json::array({sa_object(gcm128(), "out", "tunnel", kGwA6, kGwB6, 0x5001, false, 1),
                                    sa_object(gcm128(), "out", "transport", kHostA6, kHostB6, 0x5002, false, 2),
                                    sa_object(gcm128(), "in", "tunnel", kGwA6, kGwB6, 0x5001, false, 1),
                                    sa_object(gcm128(), "in", "transport", kHostA6, kHostB6, 0x5002, false, 77)});
  sas[0]["inner"] = 1;
  sas[2]["inner"] = 3;
  write_text(dir.path("sa.json"), sas.dump());
  write_capture(dir.path("plain.pcap"), DLT_RAW, {ipv6_packet(kHostA6, kHostB6, 17, 10, 1)});
  ASSERT_EQ(encrypt(dir).exit_code, 0);
  const RunResult dec = decrypt(dir);
  EXPECT_EQ(dec.exit_code, 1);
  const auto s = nlohmann::json::parse(dec.out);
  ASSERT_EQ(s["outcomes"].size(), 1u) << dec.out;
  EXPECT_EQ(s["outcomes"][0]["status"], "CRYPTO_TRANSPORT_ESP_AUTH_FAILED") << dec.out;
  EXPECT_EQ(s["outcomes"][0]["reason"], "auth-failed");
}

TEST(NatT, IkeAndKeepalivesOnPort4500AreNotEspAndPassUnchanged) {
  TempDir dir;
  write_text(dir.path("sa.json"), twin_sas(gcm128(), false, /*natt=*/true).dump());
  auto udp4500 = [](const Bytes& payload) {
    Bytes p = ipv4_packet(kHostA4, kHostB4, 17, payload.size(), 1);
    p[20] = 0x11, p[21] = 0x94, p[22] = 0x11, p[23] = 0x94;  // ports 4500
    std::copy(payload.begin(), payload.end(), p.begin() + 28);
    return p;
  };
  const Bytes ike = udp4500({0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8});  // non-ESP marker
  const Bytes keepalive = udp4500({0xff});
  write_capture(dir.path("in.pcap"), DLT_RAW, {ike, keepalive});
  const RunResult dec = decrypt(dir, "in.pcap");
  EXPECT_EQ(dec.exit_code, 0) << dec.out;
  const auto s = nlohmann::json::parse(dec.out);
  EXPECT_EQ(s["esp"], 0);
  EXPECT_EQ(s["not_esp"], 2);
  const Capture back = read_capture(dir.path("back.pcap"));
  ASSERT_EQ(back.frames.size(), 2u);
  EXPECT_EQ(Bytes(back.frames[0].begin() + 14, back.frames[0].end()), ike);
}

TEST(Timestamps, NanosecondTimestampsArePreserved) {
  TempDir dir;
  write_text(dir.path("sa.json"), twin_sas(gcm128(), false, false).dump());
  const uint64_t t = 1700000123ull * 1000000000ull + 456789123ull;
  write_capture_ns(dir.path("plain.pcap"), DLT_RAW, {ipv4_packet(kHostA4, kHostB4, 17, 5, 1)}, {t});
  ASSERT_EQ(encrypt(dir).exit_code, 0);
  EXPECT_EQ(read_capture(dir.path("esp.pcap")).timestamps_ns.at(0), t);
  ASSERT_EQ(decrypt(dir).exit_code, 0);
  EXPECT_EQ(read_capture(dir.path("back.pcap")).timestamps_ns.at(0), t);
}

TEST(Timestamps, CaptureTimeDrivesLifetimes) {
  TempDir dir;
  auto sas = twin_sas(gcm128(), false, false);
  sas[0]["lifetime-seconds"] = "0,10";  // outbound: stops sending 10 s after the first packet
  sas[2]["lifetime-seconds"] = "0,5";   // inbound: asks to be deleted 5 s after the first packet
  write_text(dir.path("sa.json"), sas.dump());
  const uint64_t t0 = 1700000000ull * 1000000000ull;
  std::vector<Bytes> frames;
  for (uint8_t i = 0; i < 4; ++i) frames.push_back(ipv4_packet(kHostA4, kHostB4, 17, 5, i));
  // 0 s, 1 s, 6 s, 11 s after the first packet.
  write_capture_ns(dir.path("plain.pcap"), DLT_RAW, frames,
                   {t0, t0 + 1000000000ull, t0 + 6000000000ull, t0 + 11000000000ull});
  const RunResult enc = encrypt(dir);
  EXPECT_EQ(enc.exit_code, 1) << enc.out;
  const auto es = nlohmann::json::parse(enc.out);
  EXPECT_EQ(es["encrypted"], 3) << enc.out;
  EXPECT_EQ(es["failed"], 1);
  const RunResult dec = decrypt(dir);
  EXPECT_EQ(dec.exit_code, 0) << dec.out;
  const auto ds = nlohmann::json::parse(dec.out);
  EXPECT_EQ(ds["opened"], 3);
  EXPECT_EQ(ds["sa_delete_requests"], 1) << "only the packet at 6 s is past the inbound hard lifetime";
}

}  // namespace
}  // namespace ov2::pcap::test
