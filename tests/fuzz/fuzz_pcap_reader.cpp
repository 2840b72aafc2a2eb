// Fuzzes `ipsecov2ctl pcap decrypt|encrypt` on capture files: the input's
// first byte picks the command and options, the rest is the capture file
// (pcap or pcapng, any link type, any frames), read through libpcap, its
// frames located (Ethernet with VLAN stacks, raw IP, DLT_IPV4/IPV6) and run
// through the ESP engine with live SAs (the scapy fixture's: AES-GCM-128
// tunnel, AES-CBC+HMAC-SHA-256 IPv6 transport, ChaCha20-Poly1305 over UDP
// 4500).  Every input must give a summary or an ov2::Error; nothing may crash.
//   byte 0: bit 0 encrypt (else decrypt), bit 1 no_replay, bit 2 keep_failed,
//           bit 3 restrict encrypt to SPI 0x7001
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "common/error.h"
#include "pcap/capture_crypt.h"
#include "pcap/sa_file.h"

namespace {

using namespace ov2;

const char* kSas = R"([
 {"dir": "DIR", "mode": "tunnel", "src": "203.0.113.1", "dst": "203.0.113.2", "spi": "0x7001",
  "aead": "aes-gcm-128", "key": "a0a1a2a3a4a5a6a7a8a9aaabacadaeafc0c1c2c3"},
 {"dir": "DIR", "mode": "transport", "src": "2001:db8::1", "dst": "2001:db8::2", "spi": "0x7002", "esn": true,
  "enc": "aes-cbc-128", "enc-key": "b0b1b2b3b4b5b6b7b8b9babbbcbdbebf",
  "auth": "hmac-sha256", "auth-key": "d0d1d2d3d4d5d6d7d8d9dadbdcdddedfe0e1e2e3e4e5e6e7e8e9eaebecedeeef"},
 {"dir": "DIR", "mode": "transport", "src": "192.0.2.1", "dst": "198.51.100.2", "spi": "0x7003", "encap": "udp",
  "aead": "chacha20-poly1305", "key": "f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff000102030405060708090a0b0c0d0e0f10111213"},
 {"dir": "DIR", "mode": "transport", "src": "10.0.0.1", "dst": "10.0.0.2", "spi": "0x7004",
  "aead": "aes-gcm-256", "key": "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20212223"},
 {"dir": "DIR", "mode": "tunnel", "src": "192.0.2.9", "dst": "192.0.2.10", "spi": "0x7005", "inner": 3,
  "aead": "aes-gcm-128", "key": "a0a1a2a3a4a5a6a7a8a9aaabacadaeafc0c1c2c3"}
])";

std::vector<pcap::SaFileEntry> sas_for(const char* dir) {
  std::string text = kSas;
  for (size_t p = text.find("DIR"); p != std::string::npos; p = text.find("DIR", p)) text.replace(p, 3, dir);
  return pcap::parse_sa_list(nlohmann::json::parse(text), "fuzz-sa.json");
}

// The capture lives in a memfd: libpcap opens it by path like a real file.
struct MemFile {
  int fd = memfd_create("ov2-fuzz-capture", MFD_CLOEXEC);
  std::string path = "/proc/self/fd/" + std::to_string(fd);
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  static const auto inbound = sas_for("in");
  static const auto outbound = sas_for("out");
  static MemFile file;
  if (file.fd < 0 || ftruncate(file.fd, 0) != 0) return 0;
  if (size > 1 && pwrite(file.fd, data + 1, size - 1, 0) != static_cast<ssize_t>(size - 1)) return 0;

  pcap::CryptOptions opt;
  opt.input = file.path;
  opt.output = "/dev/null";
  opt.no_replay = (data[0] & 2) != 0;
  opt.keep_failed = (data[0] & 4) != 0;
  if (data[0] & 8) opt.spi = 0x7001;
  try {
    const pcap::CryptSummary s =
        (data[0] & 1) ? pcap::encrypt_capture(outbound, opt) : pcap::decrypt_capture(inbound, opt);
    (void)pcap::summary_text(s);
    (void)pcap::summary_json(s).dump();
    if (s.written > s.packets) __builtin_trap();  // never more frames out than in
  } catch (const Error&) {
    // A clear refusal (not a capture file, unsupported link type, ...) is a correct answer.
  }
  return 0;
}
