// Helpers for the pcap tool's tests: packet builders, capture files, SA files,
// running the tool (in process through its CLI registration, or as a process).
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace ov2::pcap::test {

using Bytes = std::vector<uint8_t>;

// Plaintext packets with valid lengths (and IPv4 header checksum).
// proto: 6 TCP, 17 UDP, 1 ICMP (IPv4) / 58 ICMPv6 (IPv6).
Bytes ipv4_packet(const std::string& src, const std::string& dst, uint8_t proto, size_t payload_len, uint8_t seed);
Bytes ipv6_packet(const std::string& src, const std::string& dst, uint8_t proto, size_t payload_len, uint8_t seed);
// Ethernet frame around an IP packet; `vlan` != 0 adds one 802.1Q tag.
Bytes ethernet_frame(const Bytes& ip, uint16_t vlan = 0);
// Ethernet frame of a non-IP protocol (ARP).
Bytes arp_frame();

struct Capture {
  int dlt = 0;
  std::vector<Bytes> frames;
  std::vector<uint32_t> wire_lengths;  // pcap_pkthdr.len
  std::vector<uint64_t> timestamps_ns;
};

// Writes a pcap (microsecond timestamps: packet i at 1700000000 s + i ms unless given).
void write_capture(const std::string& path, int dlt, const std::vector<Bytes>& frames,
                   const std::vector<uint32_t>& wire_lengths = {});
// Writes a nanosecond-resolution pcap with the given timestamps.
void write_capture_ns(const std::string& path, int dlt, const std::vector<Bytes>& frames,
                      const std::vector<uint64_t>& timestamps_ns);
// Reads any capture libpcap opens.  Fails the test (ADD_FAILURE) if it cannot.
Capture read_capture(const std::string& path);

// Deterministic hex key material of `bytes` bytes.
std::string hex_key(size_t bytes, uint8_t seed);

// A scratch directory removed (with its files) at destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string path(const std::string& name) const { return dir_ + "/" + name; }

 private:
  std::string dir_;
};

void write_text(const std::string& path, const std::string& text);

struct RunResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};

// Runs `ipsecov2ctl <args...>` in process: a CLI::App with the pcap commands
// registered; the exit code is what the command reported, or CLI11's for
// --help and parse errors.
RunResult run_cli(const std::vector<std::string>& args);

// Runs a shell command; returns its exit code and stdout+stderr.
RunResult run_command(const std::string& command);

}  // namespace ov2::pcap::test
