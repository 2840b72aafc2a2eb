#include "pcap_test_support.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <pcap/pcap.h>
#include <sys/wait.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>

#include "pcap/pcap_cli.h"

namespace ov2::pcap::test {

namespace {

void put16(Bytes& b, size_t off, uint16_t v) {
  b[off] = static_cast<uint8_t>(v >> 8);
  b[off + 1] = static_cast<uint8_t>(v);
}

// The transport header (8 bytes for UDP/ICMP, 20 for TCP) and a patterned payload.
Bytes upper_layer(uint8_t proto, size_t payload_len, uint8_t seed) {
  const size_t hdr = proto == 6 ? 20 : 8;
  Bytes b(hdr + payload_len);
  for (size_t i = 0; i < b.size(); ++i) b[i] = static_cast<uint8_t>(seed * 31 + i * 7);
  if (proto == 6 || proto == 17) {
    put16(b, 0, static_cast<uint16_t>(1024 + seed));
    put16(b, 2, proto == 17 ? 49999 : 49998);  // ports without a Wireshark dissector that could throw
  }
  if (proto == 17) put16(b, 4, static_cast<uint16_t>(b.size()));
  if (proto == 6) b[12] = 0x50;  // data offset 5
  if (proto == 1 || proto == 58) {
    b[0] = proto == 1 ? 8 : 128;  // echo request
    b[1] = 0;
  }
  return b;
}

}  // namespace

Bytes ipv4_packet(const std::string& src, const std::string& dst, uint8_t proto, size_t payload_len, uint8_t seed) {
  const Bytes l4 = upper_layer(proto, payload_len, seed);
  Bytes b(20);
  b[0] = 0x45;
  put16(b, 2, static_cast<uint16_t>(20 + l4.size()));
  put16(b, 4, static_cast<uint16_t>(0x1000 + seed));
  b[8] = 64;
  b[9] = proto;
  inet_pton(AF_INET, src.c_str(), &b[12]);
  inet_pton(AF_INET, dst.c_str(), &b[16]);
  uint32_t sum = 0;
  for (size_t i = 0; i < 20; i += 2) sum += static_cast<uint32_t>(b[i] << 8 | b[i + 1]);
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  put16(b, 10, static_cast<uint16_t>(~sum));
  b.insert(b.end(), l4.begin(), l4.end());
  return b;
}

Bytes ipv6_packet(const std::string& src, const std::string& dst, uint8_t proto, size_t payload_len, uint8_t seed) {
  const Bytes l4 = upper_layer(proto, payload_len, seed);
  Bytes b(40);
  b[0] = 0x60;
  put16(b, 4, static_cast<uint16_t>(l4.size()));
  b[6] = proto;
  b[7] = 64;
  inet_pton(AF_INET6, src.c_str(), &b[8]);
  inet_pton(AF_INET6, dst.c_str(), &b[24]);
  b.insert(b.end(), l4.begin(), l4.end());
  return b;
}

Bytes ethernet_frame(const Bytes& ip, uint16_t vlan) {
  Bytes f = {0x52, 0x54, 0x00, 0xaa, 0xbb, 0xcc, 0x52, 0x54, 0x00, 0x11, 0x22, 0x33};
  if (vlan != 0) {
    f.push_back(0x81);
    f.push_back(0x00);
    f.push_back(static_cast<uint8_t>(vlan >> 8));
    f.push_back(static_cast<uint8_t>(vlan));
  }
  const bool v6 = !ip.empty() && (ip[0] >> 4) == 6;
  f.push_back(v6 ? 0x86 : 0x08);
  f.push_back(v6 ? 0xdd : 0x00);
  f.insert(f.end(), ip.begin(), ip.end());
  return f;
}

Bytes arp_frame() {
  Bytes f = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x52, 0x54, 0x00, 0x11, 0x22, 0x33, 0x08, 0x06};
  f.resize(14 + 28, 0x01);
  return f;
}

void write_capture(const std::string& path, int dlt, const std::vector<Bytes>& frames,
                   const std::vector<uint32_t>& wire_lengths) {
  pcap_t* dead = pcap_open_dead(dlt, 262144);
  ASSERT_NE(dead, nullptr);
  pcap_dumper_t* d = pcap_dump_open(dead, path.c_str());
  ASSERT_NE(d, nullptr) << pcap_geterr(dead);
  for (size_t i = 0; i < frames.size(); ++i) {
    pcap_pkthdr h{};
    h.ts.tv_sec = 1700000000;
    h.ts.tv_usec = static_cast<suseconds_t>(i * 1000);
    h.caplen = static_cast<bpf_u_int32>(frames[i].size());
    h.len = i < wire_lengths.size() ? wire_lengths[i] : h.caplen;
    pcap_dump(reinterpret_cast<u_char*>(d), &h, frames[i].data());
  }
  pcap_dump_close(d);
  pcap_close(dead);
}

void write_capture_ns(const std::string& path, int dlt, const std::vector<Bytes>& frames,
                      const std::vector<uint64_t>& timestamps_ns) {
  pcap_t* dead = pcap_open_dead_with_tstamp_precision(dlt, 262144, PCAP_TSTAMP_PRECISION_NANO);
  ASSERT_NE(dead, nullptr);
  pcap_dumper_t* d = pcap_dump_open(dead, path.c_str());
  ASSERT_NE(d, nullptr) << pcap_geterr(dead);
  for (size_t i = 0; i < frames.size(); ++i) {
    pcap_pkthdr h{};
    h.ts.tv_sec = static_cast<time_t>(timestamps_ns.at(i) / 1000000000ull);
    h.ts.tv_usec = static_cast<suseconds_t>(timestamps_ns.at(i) % 1000000000ull);  // nanoseconds in this file
    h.caplen = h.len = static_cast<bpf_u_int32>(frames[i].size());
    pcap_dump(reinterpret_cast<u_char*>(d), &h, frames[i].data());
  }
  pcap_dump_close(d);
  pcap_close(dead);
}

Capture read_capture(const std::string& path) {
  Capture c;
  char errbuf[PCAP_ERRBUF_SIZE] = {};
  pcap_t* p = pcap_open_offline_with_tstamp_precision(path.c_str(), PCAP_TSTAMP_PRECISION_NANO, errbuf);
  if (!p) {
    ADD_FAILURE() << "cannot open " << path << ": " << errbuf;
    return c;
  }
  c.dlt = pcap_datalink(p);
  pcap_pkthdr* h;
  const u_char* data;
  while (pcap_next_ex(p, &h, &data) == 1) {
    c.frames.emplace_back(data, data + h->caplen);
    c.wire_lengths.push_back(h->len);
    c.timestamps_ns.push_back(static_cast<uint64_t>(h->ts.tv_sec) * 1000000000ull + h->ts.tv_usec);
  }
  pcap_close(p);
  return c;
}

std::string hex_key(size_t bytes, uint8_t seed) {
  static const char* digits = "0123456789abcdef";
  std::string s;
  for (size_t i = 0; i < bytes; ++i) {
    const uint8_t v = static_cast<uint8_t>(seed * 13 + i * 29 + 7);
    s += digits[v >> 4];
    s += digits[v & 15];
  }
  return s;
}

TempDir::TempDir() {
  char tmpl[] = "/tmp/ov2pcapXXXXXX";
  const char* d = mkdtemp(tmpl);
  if (d == nullptr) throw std::runtime_error("mkdtemp failed");
  dir_ = d;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(dir_, ec);
}

void write_text(const std::string& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f << text;
  ASSERT_TRUE(f.good()) << path;
}

RunResult run_cli(const std::vector<std::string>& args) {
  std::ostringstream out, err;
  CLI::App app{"ipsecov2ctl"};
  std::optional<int> done_code;
  ov2::register_pcap_commands(app, out, err, [&done_code](int code) { done_code = code; });
  std::vector<std::string> argv_storage = {"ipsecov2ctl"};
  argv_storage.insert(argv_storage.end(), args.begin(), args.end());
  std::vector<const char*> argv;
  for (const auto& a : argv_storage) argv.push_back(a.c_str());
  RunResult r;
  try {
    app.parse(static_cast<int>(argv.size()), argv.data());
    r.exit_code = done_code.value_or(-1);  // -1: the command never finished
  } catch (const CLI::ParseError& e) {
    r.exit_code = app.exit(e, out, err);
  }
  r.out = out.str();
  r.err = err.str();
  return r;
}

RunResult run_command(const std::string& command) {
  RunResult r;
  FILE* p = popen((command + " 2>&1").c_str(), "r");
  if (!p) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  const int status = pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

}  // namespace ov2::pcap::test
