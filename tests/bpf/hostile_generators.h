// Generators of malformed and adversarial frames for the hostile-packet tests.
//
// Every case is a pure function of (run seed, case index): case i is built
// from its own PRNG seeded with mix(seed, i), so a failure report naming the
// seed and the index is enough to rebuild exactly that frame
// (OV2_HOSTILE_SEED=<seed> reruns the whole sequence).  The PRNG is
// splitmix64 with our own range reduction, so the sequence does not depend on
// the standard library's distributions.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "ov2_abi.h"
#include "packet_builder.h"

namespace ov2::test::hostile {

// splitmix64: small, fast, and the same on every platform.
class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}
  uint64_t next() {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  // Uniform enough in [0, n) for test generation (n far below 2^64).
  uint32_t below(uint32_t n) { return n == 0 ? 0 : static_cast<uint32_t>(next() % n); }
  uint32_t between(uint32_t lo, uint32_t hi) { return lo + below(hi - lo + 1); }
  bool percent(uint32_t p) { return below(100) < p; }
  template <class T>
  const T& pick(const std::vector<T>& v) {
    return v[below(static_cast<uint32_t>(v.size()))];
  }
  Bytes bytes(size_t n) {
    Bytes b(n);
    for (auto& x : b) x = static_cast<uint8_t>(next());
    return b;
  }

 private:
  uint64_t state_;
};

// The seed of case `index` of a run.
inline uint64_t case_seed(uint64_t run_seed, uint64_t index) {
  Rng r(run_seed ^ (index * 0xd1b54a32d192ed03ULL));
  return r.next();
}

struct Case {
  std::string kind;  // generator family, for the report and the statistics
  Bytes frame;
};

// ---------------------------------------------------------------------------
// Building blocks
// ---------------------------------------------------------------------------

inline constexpr uint16_t kNattPort = OV2_NATT_PORT;

// Ethernet header, then one VLAN tag per entry of `tpids` after the first
// (tpids[0] is the outer EtherType), the last tag carrying `ethertype`.
inline void link_layer(FrameBuilder& b, const std::vector<uint16_t>& tpids, uint16_t ethertype) {
  if (tpids.empty()) {
    b.ethernet(ethertype);
    return;
  }
  b.ethernet(tpids[0]);
  for (size_t i = 0; i < tpids.size(); ++i)
    b.vlan(static_cast<uint16_t>(i + 1), i + 1 < tpids.size() ? tpids[i + 1] : ethertype);
}

inline Bytes be16_bytes(uint16_t v) { return {static_cast<uint8_t>(v >> 8), static_cast<uint8_t>(v)}; }
inline Bytes be32_bytes(uint32_t v) {
  return {static_cast<uint8_t>(v >> 24), static_cast<uint8_t>(v >> 16), static_cast<uint8_t>(v >> 8),
          static_cast<uint8_t>(v)};
}
inline Bytes concat(std::initializer_list<Bytes> parts) {
  Bytes out;
  for (const Bytes& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

// A UDP header (checksum 0) with its length covering `payload`, then `payload`.
inline Bytes udp_datagram(uint16_t sport, uint16_t dport, const Bytes& payload) {
  return concat({be16_bytes(sport), be16_bytes(dport), be16_bytes(static_cast<uint16_t>(8 + payload.size())),
                 be16_bytes(0), payload});
}
inline Bytes esp_packet(uint32_t spi, uint32_t seq, const Bytes& ciphertext) {
  return concat({be32_bytes(spi), be32_bytes(seq), ciphertext});
}

// The upper layer of a generated IP packet.
struct Upper {
  uint8_t proto = 0;
  Bytes bytes;
  bool udp = false;  // bytes start with a UDP header
};

// One generated IP frame and where its headers are, for the mutators.
struct Layout {
  Bytes frame;
  int family = 4;
  size_t ip = 0;     // offset of the IP header
  size_t upper = 0;  // offset of the upper-layer header
  bool udp = false;  // a UDP header is at `upper`
};

// IPv6 extension header chain, as the generator wants it.
struct ExtHeader {
  uint8_t type = 60;      // 0 / 43 / 60 (options), 44 (fragment), or anything (then it is the upper layer)
  uint8_t len_units = 0;  // option headers: (len_units + 1) * 8 bytes
  uint16_t frag_offset = 0;
  bool more = false;
};

inline Bytes ext_chain_bytes(const std::vector<ExtHeader>& chain, uint8_t upper_proto, uint8_t* first_next) {
  Bytes out;
  *first_next = chain.empty() ? upper_proto : chain[0].type;
  for (size_t i = 0; i < chain.size(); ++i) {
    const uint8_t next = i + 1 < chain.size() ? chain[i + 1].type : upper_proto;
    const ExtHeader& h = chain[i];
    if (h.type == 44) {
      Bytes frag(8, 0);
      frag[0] = next;
      put16(frag, 2, static_cast<uint16_t>(h.frag_offset << 3 | (h.more ? 1 : 0)));
      put32(frag, 4, 0xabcd0000u + static_cast<uint32_t>(i));
      out.insert(out.end(), frag.begin(), frag.end());
    } else {
      // Up to 128 bytes the header is really there; a longer claim gets 8
      // bytes, so hdr ext len points past the packet (and frames stay below
      // the ~3.5 KB that BPF_PROG_TEST_RUN keeps linear: beyond it the kernel
      // moves the tail into fragments a non-frags program cannot see).
      const size_t claimed = (h.len_units + 1u) * 8u;
      Bytes opt(claimed <= 128 ? claimed : 8, 0);
      opt[0] = next;
      opt[1] = h.len_units;
      opt[2] = 1;  // PadN
      opt[3] = static_cast<uint8_t>(opt.size() - 4);
      out.insert(out.end(), opt.begin(), opt.end());
    }
  }
  return out;
}

struct IpSpec {
  int family = 4;
  std::vector<uint16_t> tpids;  // VLAN stack (empty = untagged)
  std::string src, dst;
  Bytes v4_options;            // multiple of 4 for a consistent IHL
  uint16_t frag_off = 0x4000;  // DF
  std::vector<ExtHeader> v6_ext;
  Upper upper;
};

inline Layout build_ip(const IpSpec& s) {
  FrameBuilder b;
  link_layer(b, s.tpids, s.family == 4 ? kEthIpv4 : kEthIpv6);
  Layout l;
  l.family = s.family;
  l.ip = 14 + 4 * s.tpids.size();
  if (s.family == 4) {
    Ipv4Options o;
    o.options = s.v4_options;
    o.frag_off = s.frag_off;
    b.ipv4(s.src, s.dst, s.upper.proto, o);
    l.upper = l.ip + 20 + s.v4_options.size();
  } else {
    uint8_t first = 0;
    const Bytes ext = ext_chain_bytes(s.v6_ext, s.upper.proto, &first);
    b.ipv6(s.src, s.dst, first).payload(ext);
    l.upper = l.ip + 40 + ext.size();
  }
  b.payload(s.upper.bytes);
  l.frame = b.build();
  l.udp = s.upper.udp;
  return l;
}

// ---------------------------------------------------------------------------
// Mutators
// ---------------------------------------------------------------------------

inline void flip_bytes(Rng& r, Bytes& f, size_t count, size_t region) {
  if (f.empty()) return;
  const size_t limit = std::min(region, f.size());
  for (size_t i = 0; i < count; ++i) {
    const size_t at = r.below(static_cast<uint32_t>(limit));
    if (r.percent(50))
      f[at] ^= static_cast<uint8_t>(1u << r.below(8));
    else
      f[at] = static_cast<uint8_t>(r.next());
  }
}

inline void ethernet_padding(Rng& r, Bytes& f) {
  const size_t n = r.between(1, 46);
  const bool random = r.percent(30);
  for (size_t i = 0; i < n; ++i) f.push_back(random ? static_cast<uint8_t>(r.next()) : 0);
}

inline void truncate_randomly(Rng& r, Bytes& f) {
  if (!f.empty()) f.resize(r.below(static_cast<uint32_t>(f.size())));
}

// A length value around the interesting edges of `actual`.
inline uint16_t bogus_length(Rng& r, size_t actual) {
  switch (r.below(6)) {
    case 0:
      return static_cast<uint16_t>(r.next());
    case 1:
      return static_cast<uint16_t>(actual + r.between(1, 16));  // a little longer than the frame
    case 2:
      return static_cast<uint16_t>(actual > 16 ? actual - r.between(1, 16) : r.below(16));  // a little shorter
    case 3:
      return static_cast<uint16_t>(r.below(64));
    case 4:
      return 0xffff;
    default:
      return 0;
  }
}

// Rewrites one length field of an IP frame to a bogus value (keeps the IPv4
// checksum wrong on purpose: the programs must not care).
inline std::string forge_lengths(Rng& r, Layout& l) {
  Bytes& f = l.frame;
  if (f.size() < l.ip + (l.family == 4 ? 20 : 40)) return "none";
  const size_t ip_bytes = f.size() - l.ip;
  const uint32_t what = r.below(l.udp ? 3 : 2);
  if (what == 0) {
    if (l.family == 4)
      put16(f, l.ip + 2, bogus_length(r, ip_bytes));
    else
      put16(f, l.ip + 4, bogus_length(r, ip_bytes - 40));
    return "ip-length";
  }
  if (what == 1) {
    if (l.family == 4) {
      f[l.ip] = static_cast<uint8_t>(0x40 | r.below(16));  // IHL 0..15
      return "ihl";
    }
    f[l.ip] = static_cast<uint8_t>(r.below(16) << 4 | (f[l.ip] & 0x0f));  // version
    return "version";
  }
  if (l.upper + 8 > f.size()) return "none";
  const size_t udp_bytes = f.size() - l.upper;
  const uint16_t v = r.percent(50) ? static_cast<uint16_t>(r.below(10)) : bogus_length(r, udp_bytes);
  put16(f, l.upper + 4, v);
  return "udp-length";
}

// ---------------------------------------------------------------------------
// Address and SPI pools shared by the generators and the tests' worlds
// ---------------------------------------------------------------------------

struct Pools {
  std::vector<std::string> v4_src, v4_dst, v6_src, v6_dst;
};

inline std::vector<ExtHeader> random_ext_chain(Rng& r, size_t max_len, bool allow_weird) {
  std::vector<ExtHeader> chain(r.below(static_cast<uint32_t>(max_len + 1)));
  const bool loop = r.percent(25);  // every header the same type
  const uint8_t loop_type = r.pick(std::vector<uint8_t>{0, 43, 60});
  for (ExtHeader& h : chain) {
    const uint32_t k = r.below(100);
    if (loop)
      h.type = loop_type;
    else if (k < 25)
      h.type = 0;
    else if (k < 45)
      h.type = 43;
    else if (k < 70)
      h.type = 60;
    else if (k < 85 || !allow_weird)
      h.type = 44;
    else
      h.type = r.pick(std::vector<uint8_t>{51, 59, 135, 139, 140, 253, 254, static_cast<uint8_t>(r.next())});
    h.len_units = r.percent(90) ? static_cast<uint8_t>(r.below(3)) : static_cast<uint8_t>(r.between(3, 255));
    h.frag_offset = r.percent(50) ? 0 : static_cast<uint16_t>(r.below(8192));
    h.more = r.percent(50);
  }
  return chain;
}

inline std::vector<uint16_t> random_vlan_stack(Rng& r, uint32_t max_tags) {
  std::vector<uint16_t> tpids(r.below(max_tags + 1));
  for (auto& t : tpids) t = r.percent(50) ? kEth8021Q : kEth8021AD;
  return tpids;
}

// The IP part of a random spec: family, addresses, VLANs, options/extensions.
inline IpSpec random_ip_spec(Rng& r, const Pools& pools, uint32_t max_tags = 2) {
  IpSpec s;
  s.family = r.percent(50) ? 4 : 6;
  s.tpids = random_vlan_stack(r, max_tags);
  if (s.family == 4) {
    s.src = r.pick(pools.v4_src);
    s.dst = r.pick(pools.v4_dst);
    if (r.percent(20)) s.v4_options = Bytes(4 * r.between(1, 10), 1);  // NOPs, IHL 6..15
  } else {
    s.src = r.pick(pools.v6_src);
    s.dst = r.pick(pools.v6_dst);
    if (r.percent(30)) {
      s.v6_ext = random_ext_chain(r, 3, false);
      for (auto& h : s.v6_ext)
        if (h.type == 44) h.type = 60;  // valid frames have no fragment header
      for (auto& h : s.v6_ext) h.len_units = static_cast<uint8_t>(h.len_units % 3);
    }
  }
  return s;
}

// ---------------------------------------------------------------------------
// ov2_wire
// ---------------------------------------------------------------------------

struct WirePools : Pools {
  std::vector<uint32_t> spis;  // SPIs of the installed SAs (any family / dst / encapsulation)
};

inline uint32_t random_spi(Rng& r, const WirePools& p) {
  const uint32_t k = r.below(100);
  if (k < 70) return r.pick(p.spis);
  if (k < 80) return 0;
  if (k < 85) return 0xffffffffu;
  return static_cast<uint32_t>(r.next());
}

// An upper layer that ov2_wire has an opinion about.
inline Upper random_wire_upper(Rng& r, const WirePools& p) {
  Upper u;
  const uint16_t sport = r.percent(70) ? kNattPort : static_cast<uint16_t>(r.next());
  switch (r.below(10)) {
    case 0:
    case 1:
    case 2:
      u.proto = kProtoEsp;  // now and then a full-MTU packet
      u.bytes = esp_packet(random_spi(r, p), static_cast<uint32_t>(r.next()),
                           r.bytes(r.percent(10) ? r.between(64, 1400) : r.below(64)));
      return u;
    case 3:
    case 4:
      u.proto = kProtoUdp;
      u.udp = true;
      u.bytes = udp_datagram(sport, kNattPort,
                             esp_packet(random_spi(r, p), static_cast<uint32_t>(r.next()), r.bytes(r.below(64))));
      return u;
    case 5:  // IKE behind the non-ESP marker
      u.proto = kProtoUdp;
      u.udp = true;
      u.bytes = udp_datagram(sport, kNattPort, concat({Bytes(4, 0), r.bytes(r.below(80))}));
      return u;
    case 6: {  // keepalive variants: 0xff alone, 0xff padded inside UDP, two bytes, one other byte
      Bytes payload;
      switch (r.below(4)) {
        case 0:
          payload = {0xff};
          break;
        case 1:
          payload = concat({Bytes{0xff}, Bytes(r.between(1, 8), 0)});
          break;
        case 2:
          payload = {0xff, static_cast<uint8_t>(r.next())};
          break;
        default:
          payload = {static_cast<uint8_t>(r.next())};
      }
      u.proto = kProtoUdp;
      u.udp = true;
      u.bytes = udp_datagram(sport, kNattPort, payload);
      return u;
    }
    case 7:  // short UDP/4500 payloads
      u.proto = kProtoUdp;
      u.udp = true;
      u.bytes = udp_datagram(sport, kNattPort, r.percent(50) ? r.bytes(r.below(9)) : Bytes(r.below(9), 0));
      return u;
    case 8:  // other UDP ports carrying what looks like ESP
      u.proto = kProtoUdp;
      u.udp = true;
      u.bytes = udp_datagram(sport, r.pick(std::vector<uint16_t>{500, 4501, 4499, 0x9411, 0}),
                             esp_packet(random_spi(r, p), 1, r.bytes(16)));
      return u;
    default:  // not ESP at all: TCP, ICMP, AH, anything
      u.proto = r.pick(std::vector<uint8_t>{6, 1, 58, 51, 47, 132, 0, 255, static_cast<uint8_t>(r.next())});
      u.bytes = concat({be32_bytes(r.pick(p.spis)), r.bytes(r.below(48))});
      return u;
  }
}

// One random case for ov2_wire.  `cookie` goes into forged shims.
inline Case generate_wire_case(uint64_t seed, const WirePools& pools, uint64_t cookie) {
  Rng r(seed);
  IpSpec spec = random_ip_spec(r, pools);
  spec.upper = random_wire_upper(r, pools);
  Case c;
  const uint32_t k = r.below(100);
  if (k < 8) {
    c.kind = "structured";  // built by the generator, not mutated afterwards
  } else if (k < 18) {
    c.kind = "vlan-stack";
    spec.tpids = random_vlan_stack(r, 4);
    if (r.percent(10) && !spec.tpids.empty()) spec.tpids[r.below(static_cast<uint32_t>(spec.tpids.size()))] = 0x9100;
  } else if (k < 26) {
    c.kind = "ipv4-lengths";
    spec.family = 4;
    spec.src = r.pick(pools.v4_src);
    spec.dst = r.pick(pools.v4_dst);
    spec.v4_options = Bytes(4 * r.below(11), 1);
  } else if (k < 32) {
    c.kind = "ipv6-lengths";
    spec.family = 6;
    spec.src = r.pick(pools.v6_src);
    spec.dst = r.pick(pools.v6_dst);
  } else if (k < 46) {
    c.kind = "ipv6-ext-chain";
    spec.family = 6;
    spec.src = r.pick(pools.v6_src);
    spec.dst = r.pick(pools.v6_dst);
    spec.v6_ext = random_ext_chain(r, 9, true);
  } else if (k < 54) {
    c.kind = "fragments";
    if (spec.family == 4) {
      spec.frag_off =
          r.percent(50) ? static_cast<uint16_t>(r.next())
                        : r.pick(std::vector<uint16_t>{0x2000, 0x0001, 0x2001, 0x4000, 0x8000, 0x6000, 0x1fff, 0x0000});
    } else {
      spec.v6_ext = random_ext_chain(r, 4, false);
      ExtHeader frag;
      frag.type = 44;
      frag.frag_offset = r.percent(50) ? 0 : static_cast<uint16_t>(r.below(8192));
      frag.more = r.percent(50);
      spec.v6_ext.insert(spec.v6_ext.begin() + r.below(static_cast<uint32_t>(spec.v6_ext.size() + 1)), frag);
    }
  } else if (k < 68) {
    c.kind = "udp-4500";
    while (!spec.upper.udp) spec.upper = random_wire_upper(r, pools);
  } else if (k < 76) {
    c.kind = "spi-confusion";  // known SPIs against every dst / family / encapsulation
    spec.upper = random_wire_upper(r, pools);
  } else if (k < 88) {
    c.kind = "byte-flips";
  } else if (k < 94) {
    c.kind = "forged-shim";
  } else {
    c.kind = "random-truncation";
  }

  Layout l = build_ip(spec);
  if (c.kind == "ipv4-lengths" || c.kind == "ipv6-lengths" || (c.kind == "udp-4500" && r.percent(30))) {
    const std::string what = forge_lengths(r, l);
    if (c.kind == "udp-4500") c.kind += "/" + what;
  }
  if (c.kind == "byte-flips") flip_bytes(r, l.frame, r.between(1, 4), r.percent(70) ? 80 : l.frame.size());
  if (c.kind == "forged-shim") {
    // The worker->host shim arriving from the wire: a frame that claims to be
    // decrypted.  With the real cookie, too: the wire program must not care.
    FrameBuilder b;
    const uint16_t shim_type = OV2_SHIM_ETHERTYPE;
    std::vector<uint16_t> tags = random_vlan_stack(r, 2);
    link_layer(b, tags, shim_type);
    b.shim(r.percent(50) ? cookie : r.next(), r.next(), ov2_rx_make(0, 1, 0, CRYPTO_SUCCESS),
           r.percent(50) ? kEthIpv4 : kEthIpv6);
    const size_t ip_start = 14 + 4 * spec.tpids.size();
    b.payload(Bytes(l.frame.begin() + static_cast<long>(std::min(ip_start, l.frame.size())), l.frame.end()));
    l.frame = b.build();
  }
  if (c.kind == "random-truncation") truncate_randomly(r, l.frame);
  if (r.percent(15)) ethernet_padding(r, l.frame);
  c.frame = std::move(l.frame);
  return c;
}

// Valid reference frames of every shape ov2_wire handles, for truncation at
// every offset: plain ESP v4 (with and without options), ESP v6 with extension
// headers, NAT-T v4/v6, IKE, keepalive, each untagged, 802.1Q and QinQ.
inline std::vector<std::pair<std::string, Bytes>> wire_reference_frames(uint32_t esp_v4_spi, uint32_t natt_v4_spi,
                                                                        uint32_t esp_v6_spi, uint32_t natt_v6_spi) {
  std::vector<std::pair<std::string, Bytes>> out;
  const std::vector<std::pair<std::string, std::vector<uint16_t>>> stacks = {
      {"untagged", {}}, {"802.1Q", {kEth8021Q}}, {"QinQ", {kEth8021AD, kEth8021Q}}};
  for (const auto& [tag_name, tpids] : stacks) {
    auto add = [&, tag_name = tag_name, tpids = tpids](const std::string& name, IpSpec s) {
      s.tpids = tpids;
      out.emplace_back(name + " " + tag_name, build_ip(s).frame);
    };
    IpSpec v4{.family = 4, .src = "198.51.100.1", .dst = "192.0.2.2"};
    IpSpec v6{.family = 6, .src = "2001:db8::1", .dst = "2001:db8::2"};
    IpSpec s = v4;
    s.upper = {kProtoEsp, esp_packet(esp_v4_spi, 7, Bytes(16, 0x5a)), false};
    add("esp-v4", s);
    s.v4_options = Bytes(8, 1);
    add("esp-v4-options", s);
    s = v6;
    s.upper = {kProtoEsp, esp_packet(esp_v6_spi, 7, Bytes(16, 0x5a)), false};
    s.v6_ext = {ExtHeader{.type = 0}, ExtHeader{.type = 60, .len_units = 1}, ExtHeader{.type = 43}};
    add("esp-v6-ext", s);
    s = v4;
    s.upper = {kProtoUdp, udp_datagram(4500, 4500, esp_packet(natt_v4_spi, 7, Bytes(16, 0x5a))), true};
    add("natt-v4", s);
    s = v6;
    s.upper = {kProtoUdp, udp_datagram(4500, 4500, esp_packet(natt_v6_spi, 7, Bytes(16, 0x5a))), true};
    add("natt-v6", s);
    const Upper ike{kProtoUdp, udp_datagram(4500, 4500, concat({Bytes(4, 0), Bytes(28, 0x21)})), true};
    s = v4;
    s.upper = ike;
    add("ike-v4", s);
    s = v6;
    s.upper = ike;
    add("ike-v6", s);
    s = v4;
    s.upper = {kProtoUdp, udp_datagram(4500, 4500, {0xff}), true};
    add("keepalive-v4", s);
    s = v6;
    s.upper = {kProtoUdp, udp_datagram(4500, 4500, {0xff}), true};
    add("keepalive-v6", s);
  }
  return out;
}

// ---------------------------------------------------------------------------
// ov2_tx
// ---------------------------------------------------------------------------

// An upper layer for ov2_tx: ports for the selectors, ND, or nothing.
inline Upper random_tx_upper(Rng& r, const std::vector<uint16_t>& ports, int family) {
  Upper u;
  auto port = [&] { return r.percent(80) ? r.pick(ports) : static_cast<uint16_t>(r.next()); };
  switch (r.below(8)) {
    case 0:
    case 1:
      u.proto = kProtoTcp;
      u.bytes = concat({be16_bytes(port()), be16_bytes(port()), r.bytes(16)});
      return u;
    case 2:
    case 3:
      u.proto = kProtoUdp;
      u.udp = true;
      u.bytes = udp_datagram(port(), port(), r.bytes(r.below(32)));
      return u;
    case 4:
      u.proto = kProtoSctp;
      u.bytes = concat({be16_bytes(port()), be16_bytes(port()), r.bytes(8)});
      return u;
    case 5:
      if (family == 6) {  // ICMPv6, neighbour discovery included
        u.proto = kProtoIcmpv6;
        u.bytes = concat({Bytes{static_cast<uint8_t>(r.between(127, 140)), 0}, r.bytes(r.below(24))});
        return u;
      }
      [[fallthrough]];
    case 6:  // short or empty upper-layer header of a port protocol
      u.proto = r.pick(std::vector<uint8_t>{kProtoTcp, kProtoUdp, kProtoSctp, kProtoIcmpv6});
      u.bytes = r.bytes(r.below(9));
      return u;
    default:
      u.proto = r.pick(std::vector<uint8_t>{kProtoEsp, 1, 47, 0, 43, 60, 255, static_cast<uint8_t>(r.next())});
      u.bytes = r.bytes(r.below(40));
      return u;
  }
}

inline Case generate_tx_case(uint64_t seed, const Pools& pools, const std::vector<uint16_t>& ports) {
  Rng r(seed);
  IpSpec spec = random_ip_spec(r, pools);
  Case c;
  const uint32_t k = r.below(100);
  if (k < 20) {
    c.kind = "structured";  // built by the generator, not mutated afterwards
  } else if (k < 28) {
    c.kind = "vlan-stack";
    spec.tpids = random_vlan_stack(r, 4);
  } else if (k < 36) {
    c.kind = "ip-lengths";
  } else if (k < 50) {
    c.kind = "ipv6-ext-chain";
    spec.family = 6;
    spec.src = r.pick(pools.v6_src);
    spec.dst = r.pick(pools.v6_dst);
    spec.v6_ext = random_ext_chain(r, 9, true);
  } else if (k < 60) {
    c.kind = "fragments";
    if (spec.family == 4) {
      spec.frag_off = static_cast<uint16_t>(r.next());
    } else {
      ExtHeader frag;
      frag.type = 44;
      frag.frag_offset = r.percent(50) ? 0 : static_cast<uint16_t>(r.below(8192));
      frag.more = r.percent(50);
      spec.v6_ext.insert(spec.v6_ext.begin() + r.below(static_cast<uint32_t>(spec.v6_ext.size() + 1)), frag);
    }
  } else if (k < 80) {
    c.kind = "byte-flips";
  } else if (k < 85) {
    c.kind = "not-ip";
  } else {
    c.kind = "random-truncation";
  }
  spec.upper = random_tx_upper(r, ports, spec.family);
  Layout l = build_ip(spec);
  if (c.kind == "ip-lengths") c.kind += "/" + forge_lengths(r, l);
  if (c.kind == "byte-flips") flip_bytes(r, l.frame, r.between(1, 4), r.percent(70) ? 80 : l.frame.size());
  if (c.kind == "not-ip") {
    const uint16_t type = r.pick(
        std::vector<uint16_t>{kEthArp, 0x88cc, OV2_SHIM_ETHERTYPE, 0x8847, 0x9100, static_cast<uint16_t>(r.next())});
    put16(l.frame, 12 + 4 * spec.tpids.size(), type);
  }
  if (c.kind == "random-truncation") truncate_randomly(r, l.frame);
  if (r.percent(15)) ethernet_padding(r, l.frame);
  c.frame = std::move(l.frame);
  return c;
}

// ---------------------------------------------------------------------------
// ov2_deliver
// ---------------------------------------------------------------------------

inline Case generate_deliver_case(uint64_t seed, uint64_t cookie) {
  Rng r(seed);
  Case c;
  const bool v4 = r.percent(50);
  Bytes inner =
      v4 ? FrameBuilder().ipv4("10.1.0.1", "10.2.0.1", kProtoUdp).udp(1, 2).payload(r.bytes(r.below(64))).build()
         : FrameBuilder().ipv6("2001:db8::1", "2001:db8::2", kProtoTcp).tcp(1, 2).payload(r.bytes(r.below(64))).build();
  if (r.percent(10)) inner.resize(r.below(static_cast<uint32_t>(inner.size())));  // the worker's business
  uint64_t shim_cookie = cookie;
  uint16_t inner_type = v4 ? kEthIpv4 : kEthIpv6;
  const uint32_t rx_word = static_cast<uint32_t>(r.next());
  const uint64_t handle = r.next();
  std::vector<uint16_t> tags;
  uint16_t ethertype = OV2_SHIM_ETHERTYPE;
  const uint32_t k = r.below(100);
  if (k < 25) {
    c.kind = "valid-shim";
  } else if (k < 40) {
    c.kind = "wrong-cookie";
    shim_cookie = r.pick(std::vector<uint64_t>{0, cookie ^ (1ULL << r.below(64)), r.next(), __builtin_bswap64(cookie)});
  } else if (k < 50) {
    c.kind = "inner-protocol";
    inner_type = r.pick(std::vector<uint16_t>{kEthArp, kEth8021Q, OV2_SHIM_ETHERTYPE, 0x0008, 0xdd86, 0,
                                              static_cast<uint16_t>(r.next()), kEthIpv4, kEthIpv6});
  } else if (k < 58) {
    c.kind = "shim-in-vlan";
    tags = random_vlan_stack(r, 2);
    if (tags.empty()) tags.push_back(kEth8021Q);
  } else if (k < 66) {
    c.kind = "not-shim";
    ethertype = r.pick(
        std::vector<uint16_t>{kEthIpv4, kEthIpv6, kEthArp, 0x88b4, 0x88b6, 0xb588, static_cast<uint16_t>(r.next())});
  } else if (k < 82) {
    c.kind = "byte-flips";
  } else {
    c.kind = "truncated-shim";
  }
  FrameBuilder b;
  link_layer(b, tags, ethertype);
  b.shim(shim_cookie, handle, rx_word, inner_type).payload(inner);
  Bytes f = b.build();
  if (c.kind == "byte-flips") flip_bytes(r, f, r.between(1, 3), 14 + OV2_SHIM_SIZE + 4);
  if (c.kind == "truncated-shim") f.resize(r.below(14 + OV2_SHIM_SIZE + 8));
  if (r.percent(10) && f.size() >= 14 + OV2_SHIM_SIZE)  // reserved is not checked: the cookie is the proof
    f[14 + 22] = static_cast<uint8_t>(r.next());
  c.frame = std::move(f);
  return c;
}

}  // namespace ov2::test::hostile
