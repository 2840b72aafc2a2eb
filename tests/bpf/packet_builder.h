// Test packet builder: Ethernet, 802.1Q/802.1ad, IPv4 (options, fragments),
// IPv6 (extension headers), UDP, TCP, ESP and the worker->host shim.  Header
// only, so the BPF tests, fuzzers and the hostile-packet generator share it.
//
// Layers are appended outer to inner; `build()` fills in the length fields
// (IPv4 total length and checksum, IPv6 payload length, UDP length) of every
// layer that did not ask to keep a forged value.  Every "next protocol" field
// is explicit so tests can build inconsistent packets on purpose.
#pragma once

#include <arpa/inet.h>

#include <array>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <stdexcept>
#include <string>
#include <vector>

#include "ov2_abi.h"

namespace ov2::test {

using Bytes = std::vector<uint8_t>;
using Mac = std::array<uint8_t, 6>;

inline constexpr uint16_t kEthIpv4 = 0x0800;
inline constexpr uint16_t kEthIpv6 = 0x86DD;
inline constexpr uint16_t kEthArp = 0x0806;
inline constexpr uint16_t kEth8021Q = 0x8100;
inline constexpr uint16_t kEth8021AD = 0x88A8;
inline constexpr uint8_t kProtoTcp = 6;
inline constexpr uint8_t kProtoUdp = 17;
inline constexpr uint8_t kProtoEsp = 50;
inline constexpr uint8_t kProtoAh = 51;
inline constexpr uint8_t kProtoIcmpv6 = 58;
inline constexpr uint8_t kProtoSctp = 132;
inline constexpr uint8_t kIpv6HopByHop = 0;
inline constexpr uint8_t kIpv6Routing = 43;
inline constexpr uint8_t kIpv6Fragment = 44;
inline constexpr uint8_t kIpv6DestOpts = 60;

inline constexpr Mac kMacA = {0x02, 0, 0, 0, 0, 0x0a};
inline constexpr Mac kMacB = {0x02, 0, 0, 0, 0, 0x0b};

// "192.0.2.1" -> 4 bytes, "2001:db8::1" -> 16 bytes (network order).
inline Bytes addr(const std::string& text) {
  Bytes out(16);
  if (inet_pton(AF_INET, text.c_str(), out.data()) == 1) {
    out.resize(4);
    return out;
  }
  if (inet_pton(AF_INET6, text.c_str(), out.data()) == 1) return out;
  throw std::invalid_argument("not an IP address: " + text);
}

inline void put16(Bytes& b, size_t off, uint16_t v) {
  b[off] = static_cast<uint8_t>(v >> 8);
  b[off + 1] = static_cast<uint8_t>(v);
}
inline void put32(Bytes& b, size_t off, uint32_t v) {
  for (int i = 0; i < 4; ++i) b[off + i] = static_cast<uint8_t>(v >> (24 - 8 * i));
}
inline uint16_t get16(const Bytes& b, size_t off) { return static_cast<uint16_t>(b[off] << 8 | b[off + 1]); }

// RFC 1071 checksum over [off, off+len).
inline uint16_t inet_checksum(const Bytes& b, size_t off, size_t len) {
  uint32_t sum = 0;
  for (size_t i = 0; i + 1 < len; i += 2) sum += get16(b, off + i);
  if (len & 1) sum += static_cast<uint32_t>(b[off + len - 1]) << 8;
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<uint16_t>(~sum);
}

// IPv4 header knobs, for forging.
struct Ipv4Options {
  Bytes options;               // appended after the 20-byte header, IHL grows (pad to 4 yourself)
  uint16_t frag_off = 0x4000;  // flags+offset field, host order; default DF
  uint8_t ttl = 64;
  int forced_ihl = -1;        // >=0: write this IHL instead of the real one
  int forced_total_len = -1;  // >=0: write this total length
};

class FrameBuilder {
 public:
  // Ethernet header with an explicit EtherType.
  FrameBuilder& ethernet(uint16_t ethertype, const Mac& dst = kMacB, const Mac& src = kMacA) {
    bytes_.insert(bytes_.end(), dst.begin(), dst.end());
    bytes_.insert(bytes_.end(), src.begin(), src.end());
    append16(ethertype);
    return *this;
  }
  // One VLAN tag body (TCI + inner EtherType); the TPID is the previous
  // layer's EtherType (0x8100 or 0x88a8).
  FrameBuilder& vlan(uint16_t vid, uint16_t inner_ethertype) {
    append16(vid & 0x0fff);
    append16(inner_ethertype);
    return *this;
  }
  using Ipv4Options = ov2::test::Ipv4Options;
  FrameBuilder& ipv4(const std::string& src, const std::string& dst, uint8_t proto, Ipv4Options o = {}) {
    const size_t off = bytes_.size();
    const size_t hlen = 20 + o.options.size();
    bytes_.resize(off + 20, 0);
    bytes_[off] = static_cast<uint8_t>(0x40 | ((o.forced_ihl >= 0 ? o.forced_ihl : hlen / 4) & 0x0f));
    put16(bytes_, off + 6, o.frag_off);
    bytes_[off + 8] = o.ttl;
    bytes_[off + 9] = proto;
    Bytes s = addr(src), d = addr(dst);
    std::memcpy(&bytes_[off + 12], s.data(), 4);
    std::memcpy(&bytes_[off + 16], d.data(), 4);
    bytes_.insert(bytes_.end(), o.options.begin(), o.options.end());
    ip_layers_.push_back({off, 4, hlen, o.forced_total_len});
    return *this;
  }
  FrameBuilder& ipv6(const std::string& src, const std::string& dst, uint8_t next_header, int forced_payload_len = -1) {
    const size_t off = bytes_.size();
    bytes_.resize(off + 40, 0);
    bytes_[off] = 0x60;
    bytes_[off + 6] = next_header;
    bytes_[off + 7] = 64;
    Bytes s = addr(src), d = addr(dst);
    std::memcpy(&bytes_[off + 8], s.data(), 16);
    std::memcpy(&bytes_[off + 24], d.data(), 16);
    ip_layers_.push_back({off, 6, 40, forced_payload_len});
    return *this;
  }
  // Hop-by-hop / routing / destination options: (len_units+1)*8 bytes.
  FrameBuilder& ipv6_ext(uint8_t next_header, uint8_t len_units = 0) {
    const size_t off = bytes_.size();
    bytes_.resize(off + (len_units + 1u) * 8u, 0);
    bytes_[off] = next_header;
    bytes_[off + 1] = len_units;
    if (len_units == 0) bytes_[off + 2] = 1;  // PadN over the rest: a valid option area
    return *this;
  }
  FrameBuilder& ipv6_fragment(uint8_t next_header, uint16_t offset_units, bool more) {
    const size_t off = bytes_.size();
    bytes_.resize(off + 8, 0);
    bytes_[off] = next_header;
    put16(bytes_, off + 2, static_cast<uint16_t>(offset_units << 3 | (more ? 1 : 0)));
    put32(bytes_, off + 4, 0x12345678);
    return *this;
  }
  FrameBuilder& udp(uint16_t sport, uint16_t dport, int forced_len = -1) {
    const size_t off = bytes_.size();
    bytes_.resize(off + 8, 0);
    put16(bytes_, off, sport);
    put16(bytes_, off + 2, dport);
    udp_layers_.push_back({off, forced_len});
    return *this;
  }
  FrameBuilder& tcp(uint16_t sport, uint16_t dport) {
    const size_t off = bytes_.size();
    bytes_.resize(off + 20, 0);
    put16(bytes_, off, sport);
    put16(bytes_, off + 2, dport);
    bytes_[off + 12] = 5 << 4;
    bytes_[off + 13] = 0x02;  // SYN
    return *this;
  }
  // SCTP common header (ports, verification tag, checksum left zero).
  FrameBuilder& sctp(uint16_t sport, uint16_t dport) {
    const size_t off = bytes_.size();
    bytes_.resize(off + 12, 0);
    put16(bytes_, off, sport);
    put16(bytes_, off + 2, dport);
    return *this;
  }
  FrameBuilder& icmpv6(uint8_t type, uint8_t code = 0) {
    const size_t off = bytes_.size();
    bytes_.resize(off + 8, 0);
    bytes_[off] = type;
    bytes_[off + 1] = code;
    return *this;
  }
  // ESP header and `payload_len` bytes of opaque ciphertext (IV, data, ICV).
  FrameBuilder& esp(uint32_t spi, uint32_t seq, size_t payload_len = 48) {
    const size_t off = bytes_.size();
    bytes_.resize(off + 8 + payload_len, 0);
    put32(bytes_, off, spi);
    put32(bytes_, off + 4, seq);
    for (size_t i = 0; i < payload_len; ++i) bytes_[off + 8 + i] = static_cast<uint8_t>(0xa5 ^ i);
    return *this;
  }
  // The worker->host shim (host-order fields as the worker writes them).
  FrameBuilder& shim(uint64_t cookie, uint64_t sa_handle, uint32_t rx_info, uint16_t inner_ethertype,
                     uint16_t wire_vlan_tci = 0) {
    ov2_shim s{};
    s.cookie = cookie;
    s.sa_handle = sa_handle;
    s.rx_info = rx_info;
    s.inner_proto_be = htons(inner_ethertype);
    s.wire_vlan_tci = wire_vlan_tci;
    const auto* p = reinterpret_cast<const uint8_t*>(&s);
    bytes_.insert(bytes_.end(), p, p + sizeof(s));
    return *this;
  }
  FrameBuilder& payload(const Bytes& data) {
    bytes_.insert(bytes_.end(), data.begin(), data.end());
    return *this;
  }
  FrameBuilder& payload(std::initializer_list<uint8_t> data) { return payload(Bytes(data)); }
  FrameBuilder& zeros(size_t n) {
    bytes_.resize(bytes_.size() + n, 0);
    return *this;
  }

  // The frame with every unforced length field filled in (innermost first).
  Bytes build() const {
    Bytes b = bytes_;
    for (auto it = udp_layers_.rbegin(); it != udp_layers_.rend(); ++it)
      put16(b, it->off + 4, static_cast<uint16_t>(it->forced_len >= 0 ? it->forced_len : b.size() - it->off));
    for (auto it = ip_layers_.rbegin(); it != ip_layers_.rend(); ++it) {
      if (it->version == 4) {
        put16(b, it->off + 2, static_cast<uint16_t>(it->forced_len >= 0 ? it->forced_len : b.size() - it->off));
        put16(b, it->off + 10, 0);
        put16(b, it->off + 10, inet_checksum(b, it->off, it->header_len));
      } else {
        put16(b, it->off + 4, static_cast<uint16_t>(it->forced_len >= 0 ? it->forced_len : b.size() - it->off - 40));
      }
    }
    return b;
  }

 private:
  void append16(uint16_t v) {
    bytes_.push_back(static_cast<uint8_t>(v >> 8));
    bytes_.push_back(static_cast<uint8_t>(v));
  }
  struct IpLayer {
    size_t off;
    int version;
    size_t header_len;
    int forced_len;
  };
  struct UdpLayer {
    size_t off;
    int forced_len;
  };
  Bytes bytes_;
  std::vector<IpLayer> ip_layers_;
  std::vector<UdpLayer> udp_layers_;
};

// Reference frames used across suites.
inline Bytes esp_v4_frame(uint32_t spi, const std::string& dst = "192.0.2.2", size_t payload = 48) {
  return FrameBuilder().ethernet(kEthIpv4).ipv4("198.51.100.1", dst, kProtoEsp).esp(spi, 1, payload).build();
}
inline Bytes natt_v4_frame(uint32_t spi, const std::string& dst = "192.0.2.2", size_t payload = 48) {
  return FrameBuilder()
      .ethernet(kEthIpv4)
      .ipv4("198.51.100.1", dst, kProtoUdp)
      .udp(4500, 4500)
      .esp(spi, 1, payload)
      .build();
}
inline Bytes esp_v6_frame(uint32_t spi, const std::string& dst = "2001:db8::2", size_t payload = 48) {
  return FrameBuilder().ethernet(kEthIpv6).ipv6("2001:db8::1", dst, kProtoEsp).esp(spi, 1, payload).build();
}

// The XDP metadata (ov2_meta) a program leaves in front of a frame, as bytes:
// ov2_tx's for an outbound frame, ov2_deliver's for a decrypted one.
inline Bytes meta_bytes(const ov2_meta& m) {
  const auto* p = reinterpret_cast<const uint8_t*>(&m);
  return Bytes(p, p + sizeof(m));
}
inline Bytes tx_meta_bytes(uint64_t offload_handle, uint64_t tunnel_handle) {
  ov2_meta m{};
  m.nbl.tx.offload_handle = offload_handle;
  m.tunnel_handle = tunnel_handle;
  m.magic = OV2_META_MAGIC;
  m.version = OV2_META_VERSION;
  m.dir = OV2_META_DIR_TX;
  return meta_bytes(m);
}
inline Bytes rx_meta_bytes(uint32_t rx_info, uint64_t sa_handle, uint16_t wire_vlan_tci = 0) {
  ov2_meta m{};
  m.nbl.rx.info = rx_info;
  m.sa_handle = sa_handle;
  m.wire_vlan_tci = wire_vlan_tci;
  m.magic = OV2_META_MAGIC;
  m.version = OV2_META_VERSION;
  m.dir = OV2_META_DIR_RX;
  return meta_bytes(m);
}

}  // namespace ov2::test
