// Interop with independent implementations, both directions:
//  - scapy (SecurityAssociation) opens what the engine sealed and seals what
//    the engine must open, byte for byte (tests/esp/esp_peer.py);
//  - a from-the-RFCs Python reference (python3-cryptography + hmac) where
//    scapy 2.5 cannot: AES-GMAC, and CBC/NULL+HMAC with ESN;
//  - tshark decrypts the engine's packets from a pcap and checks the HMAC ICVs.
// A missing python3-scapy/cryptography or tshark FAILS these tests.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>

#include "esp/esp_test_util.h"

namespace ov2::esp::test {
namespace {

const std::string kPeer = std::string(OV2_SOURCE_DIR) + "/tests/esp/esp_peer.py";

struct Combo {
  const Suite* suite;
  Mode mode;
  bool v6;
  bool natt;
  bool esn;
  std::string impl;  // "scapy" | "pyref"
  uint32_t spi;
};

bool is_gmac(const Suite& s) { return s.auth == AuthAlg::AesGmac128 || s.auth == AuthAlg::AesGmac256; }
bool is_hmac(const Suite& s) { return s.auth == AuthAlg::HmacSha256 || s.auth == AuthAlg::HmacSha1; }

std::vector<Combo> combos() {
  std::vector<Combo> out;
  uint32_t spi = 0x10000;
  for (const Suite& s : all_suites())
    for (Mode mode : {Mode::Tunnel, Mode::Transport})
      for (bool v6 : {false, true})
        for (bool natt : {false, true})
          for (bool esn : {false, true}) {
            // ESN: scapy with AES-GCM (and ChaCha), the Python reference for HMAC and GMAC.
            if (esn && !(s.enc == EncAlg::AesGcm128 || s.enc == EncAlg::ChaCha20Poly1305 || is_hmac(s) || is_gmac(s)))
              continue;
            const std::string impl = is_gmac(s) || (esn && is_hmac(s)) ? "pyref" : "scapy";
            out.push_back({&s, mode, v6, natt, esn, impl, spi++});
          }
  return out;
}

const char* src_of(const Combo& c) { return c.v6 ? "2001:db8::10" : "192.0.2.10"; }
const char* dst_of(const Combo& c) { return c.v6 ? "2001:db8::20" : "192.0.2.20"; }

SaSpec spec_of(const Combo& c, Direction dir) {
  return make_spec(*c.suite, dir, c.mode, src_of(c), dst_of(c), c.spi, c.esn, c.natt);
}

nlohmann::json sa_json(const SaSpec& s) {
  return {{"enc", info(s.enc).name},
          {"auth", info(s.auth).name},
          {"enc_key", to_hex(s.enc_key.data(), s.enc_key.size())},
          {"auth_key", to_hex(s.auth_key.data(), s.auth_key.size())},
          {"spi", s.spi},
          {"mode", s.mode == Mode::Tunnel ? "tunnel" : "transport"},
          {"src", s.src.to_string()},
          {"dst", s.dst.to_string()},
          {"esn", s.esn},
          {"udp_encap", s.udp_encap},
          {"sport", s.encap_sport},
          {"dport", s.encap_dport}};
}

std::string name_of(const Combo& c) {
  return std::string(c.suite->name) + (c.mode == Mode::Tunnel ? "/tunnel" : "/transport") + (c.v6 ? "/v6" : "/v4") +
         (c.natt ? "/natt" : "") + (c.esn ? "/esn" : "") + "/" + c.impl;
}

// Plaintext packets for a combo: tunnel carries the other family inside for
// half the packets ("any mix"); transport uses the SA's family.
std::vector<Bytes> plaintexts(const Combo& c) {
  std::vector<Bytes> v;
  const size_t sizes[] = {0, 1, 100, 1400};
  for (size_t i = 0; i < 4; ++i) {
    const uint8_t tos = uint8_t(i * 4);
    if (c.mode == Mode::Transport) v.push_back(make_udp_packet(src_of(c), dst_of(c), sizes[i], tos));
    else if (i % 2) v.push_back(make_udp_packet("fd00::1", "fd00::2", sizes[i], tos));
    else v.push_back(make_udp_packet("10.0.0.1", "10.0.0.2", sizes[i], tos));
  }
  return v;
}

// First sequence number: ESN combos start just below 2^32 so the packets cross
// into the next subspace (the high bits then matter for the ICV).
uint64_t first_seq(const Combo& c) { return c.esn ? 0xfffffffeull : 1; }

nlohmann::json run_peer(const nlohmann::json& request) {
  const ProcessResult r = run_process({"/usr/bin/python3", kPeer}, request.dump());
  EXPECT_NE(r.status, 2) << "python3-scapy / python3-cryptography missing: " << r.out << r.err;
  EXPECT_TRUE(r.status == 0 || r.status == 1) << "peer crashed (status " << r.status << "): " << r.err;
  try {
    return nlohmann::json::parse(r.out);
  } catch (const std::exception& e) {
    ADD_FAILURE() << "peer output is not JSON: " << r.out << r.err;
    return {};
  }
}

TEST(EspInterop, PacketsSealedByTheEngineOpenInScapyAndThePythonReference) {
  const auto all = combos();
  nlohmann::json req = {{"jobs", nlohmann::json::array()}};
  std::vector<std::vector<Bytes>> expected;
  for (const Combo& c : all) {
    OutboundSa out(spec_of(c, Direction::Out), 0);
    out.set_next_seq(first_seq(c));
    nlohmann::json job = {{"op", "open"}, {"impl", c.impl}, {"sa", sa_json(spec_of(c, Direction::Out))},
                          {"packets", nlohmann::json::array()}};
    std::vector<Bytes> plains = plaintexts(c);
    uint64_t seq = first_seq(c);
    for (const Bytes& p : plains) {
      PacketBuffer buf(p);
      ASSERT_EQ(out.encapsulate(buf.packet(), 0), Reason::Ok) << name_of(c);
      job["packets"].push_back({{"hex", to_hex(buf.bytes())}, {"seq", seq++}});
    }
    req["jobs"].push_back(job);
    expected.push_back(plains);
  }
  const nlohmann::json ans = run_peer(req);
  ASSERT_TRUE(ans.contains("jobs")) << ans.dump();
  ASSERT_EQ(ans["jobs"].size(), all.size());
  size_t opened = 0;
  for (size_t i = 0; i < all.size(); ++i) {
    const auto& j = ans["jobs"][i];
    ASSERT_FALSE(j.contains("error")) << name_of(all[i]) << ": " << j["error"];
    for (size_t k = 0; k < expected[i].size(); ++k) {
      EXPECT_EQ(j["packets"][k].get<std::string>(), to_hex(expected[i][k])) << name_of(all[i]) << " packet " << k;
      ++opened;
    }
  }
  EXPECT_EQ(opened, all.size() * 4);
  EXPECT_GE(all.size(), 100u);
}

TEST(EspInterop, PacketsSealedByScapyAndThePythonReferenceOpenInTheEngineByteForByte) {
  const auto all = combos();
  nlohmann::json req = {{"jobs", nlohmann::json::array()}};
  std::vector<std::vector<Bytes>> plains;
  for (const Combo& c : all) {
    nlohmann::json job = {{"op", "seal"}, {"impl", c.impl}, {"sa", sa_json(spec_of(c, Direction::Out))},
                          {"packets", nlohmann::json::array()}};
    uint64_t seq = first_seq(c);
    plains.push_back(plaintexts(c));
    for (const Bytes& p : plains.back()) job["packets"].push_back({{"hex", to_hex(p)}, {"seq", seq++}});
    req["jobs"].push_back(job);
  }
  const nlohmann::json ans = run_peer(req);
  ASSERT_TRUE(ans.contains("jobs")) << ans.dump();
  ASSERT_EQ(ans["jobs"].size(), all.size());
  size_t opened = 0;
  for (size_t i = 0; i < all.size(); ++i) {
    const Combo& c = all[i];
    const auto& j = ans["jobs"][i];
    ASSERT_FALSE(j.contains("error")) << name_of(c) << ": " << j["error"];
    InboundSa in(spec_of(c, Direction::In), 0);
    if (c.esn) in.set_highest_seq(first_seq(c) - 1);
    uint64_t seq = first_seq(c);
    for (size_t k = 0; k < plains[i].size(); ++k, ++seq) {
      PacketBuffer buf(from_hex(j["packets"][k].get<std::string>()));
      const auto r = in.decapsulate(buf.packet(), 0);
      ASSERT_EQ(r.reason, Reason::Ok) << name_of(c) << " packet " << k << ": " << reason_name(r.reason);
      EXPECT_EQ(r.seq, seq) << name_of(c);
      EXPECT_EQ(to_hex(buf.bytes()), to_hex(plains[i][k])) << name_of(c) << " packet " << k;
      EXPECT_TRUE(buf.guards_intact());
      ++opened;
    }
  }
  EXPECT_EQ(opened, all.size() * 4);
}

// ---- tshark -------------------------------------------------------------------

void write_pcap(const std::string& path, const std::vector<Bytes>& packets) {
  std::ofstream f(path, std::ios::binary);
  auto put32 = [&](uint32_t v) { f.write(reinterpret_cast<const char*>(&v), 4); };
  auto put16 = [&](uint16_t v) { f.write(reinterpret_cast<const char*>(&v), 2); };
  put32(0xa1b2c3d4);
  put16(2);
  put16(4);
  put32(0);
  put32(0);
  put32(65535);
  put32(101);  // LINKTYPE_RAW: packets start with the IP header
  uint32_t t = 1;
  for (const Bytes& p : packets) {
    put32(t++);
    put32(0);
    put32(uint32_t(p.size()));
    put32(uint32_t(p.size()));
    f.write(reinterpret_cast<const char*>(p.data()), std::streamsize(p.size()));
  }
}

// tshark 4.0 knows AES-GCM, AES-CBC and NULL with HMAC-SHA-1/256; it has no
// ChaCha20-Poly1305, no GMAC and no ESN, and it decrypts AES-GCM without
// checking the tag (scapy checks those above).
const char* tshark_enc(EncAlg e) {
  switch (e) {
    case EncAlg::AesGcm128:
    case EncAlg::AesGcm192:
    case EncAlg::AesGcm256: return "AES-GCM with 16 octet ICV [RFC4106]";
    case EncAlg::AesCbc128:
    case EncAlg::AesCbc192:
    case EncAlg::AesCbc256: return "AES-CBC [RFC3602]";
    case EncAlg::Null: return "NULL";
    default: return nullptr;
  }
}
const char* tshark_auth(AuthAlg a) {
  switch (a) {
    case AuthAlg::None: return "NULL";
    case AuthAlg::HmacSha256: return "HMAC-SHA-256-128 [RFC4868]";
    case AuthAlg::HmacSha1: return "HMAC-SHA-1-96 [RFC2404]";
    default: return nullptr;
  }
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::string cur;
  for (char ch : s) {
    if (ch == sep) {
      out.push_back(cur);
      cur.clear();
    } else {
      cur += ch;
    }
  }
  out.push_back(cur);
  return out;
}

TEST(EspInterop, TsharkDecryptsTheEnginesPacketsAndFindsTheHmacIcvsGood) {
  std::vector<Bytes> wire;
  struct Expect {
    std::string name;
    uint32_t spi;
    std::string contained;
    bool hmac;
  };
  std::vector<Expect> expect;
  std::vector<std::string> args = {"/usr/bin/tshark", "-n", "-o", "esp.enable_encryption_decode:TRUE", "-o",
                                   "esp.enable_authentication_check:TRUE"};
  for (const Combo& c : combos()) {
    if (c.esn || !tshark_enc(c.suite->enc) || !tshark_auth(c.suite->auth)) continue;
    const SaSpec spec = spec_of(c, Direction::Out);
    OutboundSa out(spec, 0);
    char spi[16];
    std::snprintf(spi, sizeof spi, "0x%08x", spec.spi);
    const std::string uat = std::string("uat:esp_sa:\"") + (c.v6 ? "IPv6" : "IPv4") + "\",\"" + spec.src.to_string() +
                            "\",\"" + spec.dst.to_string() + "\",\"" + spi + "\",\"" + tshark_enc(spec.enc) +
                            "\",\"0x" + to_hex(spec.enc_key.data(), spec.enc_key.size()) + "\",\"" +
                            tshark_auth(spec.auth) + "\",\"0x" + to_hex(spec.auth_key.data(), spec.auth_key.size()) +
                            "\"";
    args.push_back("-o");
    args.push_back(uat);
    for (const Bytes& p : plaintexts(c)) {
      PacketBuffer buf(p);
      ASSERT_EQ(out.encapsulate(buf.packet(), 0), Reason::Ok);
      wire.push_back(buf.bytes());
      const size_t skip = c.mode == Mode::Tunnel ? 0 : (c.v6 ? 40 : 20);
      expect.push_back({name_of(c), spec.spi, to_hex(p.data() + skip, p.size() - skip), is_hmac(*c.suite)});
    }
  }
  char path[] = "/tmp/ov2_esp_tshark_XXXXXX";
  const int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  close(fd);
  write_pcap(path, wire);
  for (const char* a : {"-r", static_cast<const char*>(path), "-T", "fields", "-E", "separator=|", "-e", "esp.spi", "-e", "esp.icv_good", "-e",
                        "esp.contained_data"})
    args.push_back(a);
  const ProcessResult r = run_process(args, "");
  std::remove(path);
  ASSERT_EQ(r.status, 0) << "tshark failed (is it installed?): " << r.err;
  const auto lines = split(r.out, '\n');
  ASSERT_GE(lines.size(), expect.size()) << r.out << r.err;
  size_t icv_checked = 0;
  for (size_t i = 0; i < expect.size(); ++i) {
    const auto f = split(lines[i], '|');
    ASSERT_EQ(f.size(), 3u) << lines[i];
    EXPECT_EQ(std::stoul(f[0], nullptr, 16), expect[i].spi) << expect[i].name;
    // NAT-T packets carry the ESP layer once; tunnels show the outer ESP only.
    EXPECT_EQ(split(f[2], ',')[0], expect[i].contained) << expect[i].name << " packet " << i;
    if (expect[i].hmac) {
      EXPECT_EQ(f[1], "1") << expect[i].name << " packet " << i << ": tshark says the ICV is not good";
      ++icv_checked;
    }
  }
  EXPECT_GE(icv_checked, 100u);
}

}  // namespace
}  // namespace ov2::esp::test
