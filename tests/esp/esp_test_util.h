// Helpers shared by the ESP engine tests: SA specs, packet builders, buffers
// with headroom/tailroom, hex, and key/value vector files.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "esp/crypto_backend.h"
#include "esp/esp.h"

namespace ov2::esp::test {

using Bytes = std::vector<uint8_t>;

Bytes from_hex(std::string_view hex);
std::string to_hex(const Bytes& b);
std::string to_hex(const uint8_t* p, size_t n);

// Deterministic key material of `n` bytes starting at `seed`.
Bytes key_bytes(size_t n, uint8_t seed);

// One algorithm combination the engine supports.
struct Suite {
  const char* name;
  EncAlg enc;
  AuthAlg auth;
};
const std::vector<Suite>& all_suites();

// Makes `b` the backend of SAs created while this object lives.  Throws if the
// backend cannot be selected (intel-ipsec-mb not usable), so a test meant for
// one backend never silently runs on the other.
class ScopedCryptoBackend {
 public:
  explicit ScopedCryptoBackend(CryptoBackend b);
  ~ScopedCryptoBackend();
  ScopedCryptoBackend(const ScopedCryptoBackend&) = delete;
  ScopedCryptoBackend& operator=(const ScopedCryptoBackend&) = delete;

 private:
  CryptoBackend previous_;
};

// Big-endian fields read by the tests' own code (not the engine's helpers).
inline uint16_t be16(const uint8_t* p) { return uint16_t(p[0] << 8 | p[1]); }
inline uint32_t be32(const uint8_t* p) { return uint32_t(be16(p)) << 16 | be16(p + 2); }

inline constexpr CryptoBackend kAllBackends[] = {CryptoBackend::OpenSsl, CryptoBackend::IpsecMb};

// An SA spec with deterministic keys for `suite`.  src/dst are the tunnel
// endpoints (or the hosts, for transport).
SaSpec make_spec(const Suite& suite, Direction dir, Mode mode, const std::string& src, const std::string& dst,
                 uint32_t spi = 0x1000, bool esn = false, bool udp_encap = false);
// The same SA as the other direction would install it (same keys and SPI).
SaSpec mirror(const SaSpec& s);

// Builds a plaintext packet: IPv4/IPv6 + UDP with `payload_len` bytes of data.
Bytes make_udp_packet(const std::string& src, const std::string& dst, size_t payload_len, uint8_t tos = 0,
                      bool df = false, uint8_t fill = 0x5a);
// Recomputes an IPv4 header checksum (for tests that edit headers).
void fix_ipv4_checksum(uint8_t* ip);
bool ipv4_checksum_ok(const uint8_t* ip);

// A buffer with headroom and tailroom around the packet, and guard bytes
// beyond both so that an engine write out of bounds shows.
class PacketBuffer {
 public:
  explicit PacketBuffer(const Bytes& packet, uint32_t headroom = 256, uint32_t tailroom = 256);
  Packet& packet() { return pkt_; }
  Bytes bytes() const { return Bytes(pkt_.data, pkt_.data + pkt_.len); }
  bool guards_intact() const;

 private:
  static constexpr size_t kGuard = 64;
  std::vector<uint8_t> storage_;
  Packet pkt_;
  uint32_t headroom_, tailroom_, len_;
};

// Runs `argv` (no shell), feeding `stdin_text`; returns exit status and stdout.
struct ProcessResult {
  int status = -1;
  std::string out;
  std::string err;
};
ProcessResult run_process(const std::vector<std::string>& argv, const std::string& stdin_text);

// Reads a vector file: "name = value" lines, '#' comments, cases separated by
// lines "[case ...]".  Returns the cases in order.
std::vector<std::map<std::string, std::string>> read_vectors(const std::string& path);

}  // namespace ov2::esp::test
