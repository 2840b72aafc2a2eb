#include "pcap/capture_crypt.h"

#include <pcap/pcap.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <set>
#include <sstream>

#include "common/error.h"
#include "esp/esp.h"
#include "esp/ip_checksum.h"
#include "ov2_abi.h"
#include "pcap/link_frame.h"

namespace ov2::pcap {

namespace {

constexpr uint32_t kSnapLen = 262144;  // libpcap's MAXIMUM_SNAPLEN
constexpr uint8_t kProtoEsp = 50;
constexpr uint8_t kProtoUdp = 17;
constexpr uint16_t kNattPort = 4500;
// Raw-IP input has no MACs; decrypt output uses these locally administered ones
// (dst, src; the EtherType is set per packet).
constexpr uint8_t kFixedEthernet[14] = {0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01, 0, 0};

using esp::wire::be16;
using esp::wire::be32;

struct PcapCloser {
  void operator()(pcap_t* p) const { pcap_close(p); }
};
struct DumperCloser {
  void operator()(pcap_dumper_t* d) const { pcap_dump_close(d); }
};
using PcapHandle = std::unique_ptr<pcap_t, PcapCloser>;
using DumperHandle = std::unique_ptr<pcap_dumper_t, DumperCloser>;

// What the tool reads: the capture and its link kind.
struct Input {
  PcapHandle pcap;
  LinkKind kind;
};

Input open_input(const std::string& path) {
  char errbuf[PCAP_ERRBUF_SIZE] = {};
  PcapHandle p(pcap_open_offline_with_tstamp_precision(path.c_str(), PCAP_TSTAMP_PRECISION_NANO, errbuf));
  if (!p) fail(ErrorCode::InvalidArgument, path + ": cannot read the capture: " + errbuf);
  const int dlt = pcap_datalink(p.get());
  const auto kind = link_kind_for_dlt(dlt);
  if (!kind) {
    const char* name = pcap_datalink_val_to_name(dlt);
    fail(ErrorCode::InvalidArgument, path + ": link type " + std::to_string(dlt) + " (" + (name ? name : "unknown") +
                                         ") is not supported; use a capture with Ethernet (EN10MB) or raw IP "
                                         "(RAW, IPV4, IPV6) frames");
  }
  return {std::move(p), *kind};
}

// The output file and the dead pcap_t it is tied to.
class Output {
 public:
  Output(const std::string& path, int dlt) : path_(path) {
    dead_.reset(pcap_open_dead_with_tstamp_precision(dlt, kSnapLen, PCAP_TSTAMP_PRECISION_NANO));
    if (!dead_) fail(ErrorCode::Internal, "libpcap could not create a capture handle for " + path);
    dumper_.reset(pcap_dump_open(dead_.get(), path.c_str()));
    if (!dumper_) fail(ErrorCode::InvalidArgument, path + ": cannot write the output: " + pcap_geterr(dead_.get()));
  }

  void write(const pcap_pkthdr& in_hdr, const uint8_t* frame, uint32_t len) {
    pcap_pkthdr hdr = in_hdr;
    hdr.caplen = len;
    hdr.len = len + (in_hdr.len - in_hdr.caplen);  // a snapped frame written unchanged stays snapped
    pcap_dump(reinterpret_cast<u_char*>(dumper_.get()), &hdr, frame);
    ++written_;
  }

  void close() {
    if (pcap_dump_flush(dumper_.get()) != 0) fail(ErrorCode::InvalidArgument, path_ + ": writing the output failed");
    dumper_.reset();
  }

  uint64_t written() const { return written_; }

 private:
  std::string path_;
  PcapHandle dead_;
  DumperHandle dumper_;
  uint64_t written_ = 0;
};

// Packet timestamps as the engine's clock: nanoseconds since the first packet,
// never going backwards.
class CaptureClock {
 public:
  uint64_t now_ns(const pcap_pkthdr& h) {
    // Opened with nanosecond precision: tv_usec holds nanoseconds.
    const uint64_t t = static_cast<uint64_t>(h.ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(h.ts.tv_usec);
    if (!started_) {
      first_ = t;
      started_ = true;
    }
    last_ = std::max(last_, t >= first_ ? t - first_ : 0);
    return last_;
  }

 private:
  bool started_ = false;
  uint64_t first_ = 0;
  uint64_t last_ = 0;
};

// IP-level facts the tool needs about a packet.
struct IpFacts {
  Family family = Family::V4;
  IpAddr src, dst;
  uint32_t ip_len = 0;         // the IP length fields' packet length (0: IPv6 jumbogram, use what is there)
  uint8_t proto = 0;           // upper-layer protocol (after IPv6 extension headers)
  uint32_t l4_offset = 0;      // where that protocol's header starts
  bool first_fragment = true;  // false for IPv4 non-first fragments and IPv6 fragments
};

// Parses the IP header at `ip` (captured bytes `cap`).  nullopt: too short.
std::optional<IpFacts> parse_ip(Family fam, const uint8_t* ip, uint32_t cap) {
  IpFacts f;
  f.family = fam;
  f.src.family = f.dst.family = fam;
  if (fam == Family::V4) {
    if (cap < 20) return std::nullopt;
    const uint32_t ihl = (ip[0] & 0x0f) * 4u;
    if (ihl < 20 || cap < ihl) return std::nullopt;
    f.ip_len = be16(ip + 2);
    f.proto = ip[9];
    f.l4_offset = ihl;
    f.first_fragment = (be16(ip + 6) & 0x1fff) == 0;
    std::memcpy(f.src.bytes.data(), ip + 12, 4);
    std::memcpy(f.dst.bytes.data(), ip + 16, 4);
    return f;
  }
  if (cap < 40) return std::nullopt;
  const uint16_t payload = be16(ip + 4);
  f.ip_len = payload == 0 ? 0 : 40u + payload;
  std::memcpy(f.src.bytes.data(), ip + 8, 16);
  std::memcpy(f.dst.bytes.data(), ip + 24, 16);
  uint8_t nh = ip[6];
  uint32_t off = 40;
  // Hop-by-hop, routing and destination options may precede ESP.
  while (nh == 0 || nh == 43 || nh == 60) {
    if (cap < off + 8) return std::nullopt;
    const uint32_t ext_len = (ip[off + 1] + 1u) * 8u;
    nh = ip[off];
    off += ext_len;
  }
  if (nh == 44) f.first_fragment = false;
  f.proto = nh;
  f.l4_offset = off;
  return f;
}

// Copies the link header in front of `ip` and sets its EtherType for `family`.
// `prefix` is the input frame's link header (ending with its EtherType).
void put_ethernet_header(uint8_t* ip, const uint8_t* prefix, size_t prefix_len, Family family) {
  uint8_t* hdr = ip - prefix_len;
  std::memmove(hdr, prefix, prefix_len);
  const uint16_t type = ethertype_for(family);
  hdr[prefix_len - 2] = static_cast<uint8_t>(type >> 8);
  hdr[prefix_len - 1] = static_cast<uint8_t>(type);
}

// The buffer every packet is processed in: room for the engine's headers and
// trailer and for the link header in front.
struct WorkBuffer {
  explicit WorkBuffer(uint32_t room) : room(room), bytes(room + kMaxLinkHeader + kSnapLen + room) {}
  uint8_t* ip() { return bytes.data() + kMaxLinkHeader + room; }
  esp::Packet packet(uint32_t len) { return esp::Packet{ip(), len, room, room + kSnapLen - len}; }
  uint32_t room;
  std::vector<uint8_t> bytes;
};

uint32_t engine_room(const std::vector<SaFileEntry>& sas) {
  uint32_t room = 64;
  for (const auto& e : sas) room += esp::max_overhead(e.spec);
  return room;
}

void count(CryptSummary& s, const std::string& status, const std::string& reason) { ++s.outcomes[{status, reason}]; }

// ---- encrypt ----------------------------------------------------------------

struct OutboundChoice {
  const SaFileEntry* entry;
  esp::OutboundSa* sa;
  esp::OutboundSa* inner;  // bundle: the transport SA inside, else nullptr
  const SaFileEntry* inner_entry;  // its entry in the SA file
};

}  // namespace

const char* crypto_status_name(uint32_t status) {
  switch (status) {
    case CRYPTO_SUCCESS:
      return "CRYPTO_SUCCESS";
    case CRYPTO_GENERIC_ERROR:
      return "CRYPTO_GENERIC_ERROR";
    case CRYPTO_TRANSPORT_AH_AUTH_FAILED:
      return "CRYPTO_TRANSPORT_AH_AUTH_FAILED";
    case CRYPTO_TRANSPORT_ESP_AUTH_FAILED:
      return "CRYPTO_TRANSPORT_ESP_AUTH_FAILED";
    case CRYPTO_TUNNEL_AH_AUTH_FAILED:
      return "CRYPTO_TUNNEL_AH_AUTH_FAILED";
    case CRYPTO_TUNNEL_ESP_AUTH_FAILED:
      return "CRYPTO_TUNNEL_ESP_AUTH_FAILED";
    case CRYPTO_INVALID_PACKET_SYNTAX:
      return "CRYPTO_INVALID_PACKET_SYNTAX";
    case CRYPTO_INVALID_PROTOCOL:
      return "CRYPTO_INVALID_PROTOCOL";
    default:
      return "CRYPTO_UNKNOWN_STATUS";
  }
}

CryptSummary encrypt_capture(const std::vector<SaFileEntry>& sas, const CryptOptions& opt) {
  CryptSummary s;
  s.command = "encrypt";

  // One engine SA per outbound SA of the file, created at the first packet's time (0).
  std::vector<std::unique_ptr<esp::OutboundSa>> engine(sas.size());
  for (size_t i = 0; i < sas.size(); ++i)
    if (sas[i].spec.dir == Direction::Out) engine[i] = std::make_unique<esp::OutboundSa>(sas[i].spec, 0);
  std::vector<OutboundChoice> candidates;  // top-level outbound SAs in file order
  for (size_t i = 0; i < sas.size(); ++i) {
    if (!engine[i] || sas[i].is_inner) continue;
    if (opt.spi && sas[i].spec.spi != *opt.spi) continue;
    candidates.push_back({&sas[i], engine[i].get(), sas[i].inner ? engine[*sas[i].inner].get() : nullptr,
                          sas[i].inner ? &sas[*sas[i].inner] : nullptr});
  }
  if (candidates.empty())
    fail(ErrorCode::InvalidArgument,
         opt.spi ? opt.sa_file + " has no outbound SA (dir \"out\", not carried as 'inner') with SPI " +
                       std::to_string(*opt.spi)
                 : opt.sa_file + " has no outbound SA (dir \"out\"): encrypt needs one");

  Input in = open_input(opt.input);
  const int out_dlt = in.kind == LinkKind::Ethernet ? DLT_EN10MB : DLT_RAW;
  Output out(opt.output, out_dlt);
  WorkBuffer buf(engine_room(sas));
  CaptureClock clock;

  auto choose = [&](const IpFacts& f) -> const OutboundChoice* {
    for (const auto& c : candidates) {
      const SaSpec& sel = c.inner ? c.inner_entry->spec : c.entry->spec;
      if (sel.mode == Mode::Transport && sel.src == f.src && sel.dst == f.dst) return &c;
    }
    for (const auto& c : candidates)
      if (!c.inner && c.entry->spec.mode == Mode::Tunnel && c.entry->spec.dst.family == f.family) return &c;
    for (const auto& c : candidates)
      if (!c.inner && c.entry->spec.mode == Mode::Tunnel) return &c;
    return nullptr;
  };

  pcap_pkthdr* hdr = nullptr;
  const u_char* frame = nullptr;
  int rc;
  while ((rc = pcap_next_ex(in.pcap.get(), &hdr, &frame)) == 1) {
    ++s.packets;
    const uint64_t now = clock.now_ns(*hdr);
    auto pass = [&](const char* reason) {
      ++s.passed_through;
      count(s, "PASSED", reason);
      out.write(*hdr, frame, hdr->caplen);
    };
    auto refuse = [&](const char* reason) {
      ++s.failed;
      count(s, "FAILED", reason);
      if (opt.keep_failed) out.write(*hdr, frame, hdr->caplen);
    };

    if (hdr->caplen > kSnapLen) {
      refuse("oversized");  // more than libpcap's largest snapshot: not a real frame
      continue;
    }
    const auto layout = locate_ip(in.kind, {frame, hdr->caplen});
    if (!layout) {
      refuse("truncated");
      continue;
    }
    if (!layout->family) {
      pass("not-ip");
      continue;
    }
    const uint8_t* ip = frame + layout->ip_offset;
    const uint32_t cap = hdr->caplen - static_cast<uint32_t>(layout->ip_offset);
    const auto facts = parse_ip(*layout->family, ip, cap);
    if (!facts) {
      refuse("truncated");  // not even the IP header: no SA can be chosen
      continue;
    }
    const OutboundChoice* choice = choose(*facts);
    if (!choice) {
      pass("no-sa");
      continue;
    }
    if (facts->ip_len > cap || hdr->caplen < hdr->len) {
      refuse("truncated");  // the capture does not hold the whole packet: nothing to encrypt
      continue;
    }
    // The IP length, not the frame, bounds the packet (Ethernet pads short frames).
    const uint32_t len = facts->ip_len != 0 ? facts->ip_len : cap;
    std::memcpy(buf.ip(), ip, len);
    esp::Packet p = buf.packet(len);
    const esp::Reason r =
        choice->inner ? esp::encapsulate_bundle(*choice->inner, *choice->sa, p, now) : choice->sa->encapsulate(p, now);
    if (r != esp::Reason::Ok) {
      refuse(esp::reason_name(r));
      continue;
    }
    ++s.ok;
    count(s, "ENCRYPTED", "ok");
    if (in.kind == LinkKind::Ethernet) {
      put_ethernet_header(p.data, frame, layout->ip_offset, *ip_family({p.data, p.len}));
      out.write(*hdr, p.data - layout->ip_offset, p.len + static_cast<uint32_t>(layout->ip_offset));
    } else {
      out.write(*hdr, p.data, p.len);
    }
  }
  if (rc == PCAP_ERROR)
    fail(ErrorCode::InvalidArgument, opt.input + ": the capture is damaged after packet " + std::to_string(s.packets) +
                                         ": " + pcap_geterr(in.pcap.get()));
  out.close();
  s.written = out.written();
  return s;
}

// ---- decrypt ----------------------------------------------------------------

CryptSummary decrypt_capture(const std::vector<SaFileEntry>& sas, const CryptOptions& opt) {
  CryptSummary s;
  s.command = "decrypt";

  std::vector<std::unique_ptr<esp::InboundSa>> engine(sas.size());
  std::set<uint16_t> encap_ports{kNattPort};
  bool any_inbound = false;
  for (size_t i = 0; i < sas.size(); ++i) {
    if (sas[i].spec.dir != Direction::In) continue;
    SaSpec spec = sas[i].spec;
    if (opt.no_replay) spec.replay_window = 0;
    engine[i] = std::make_unique<esp::InboundSa>(spec, 0);
    any_inbound = true;
    if (spec.udp_encap) encap_ports.insert(spec.encap_dport);
  }
  if (!any_inbound)
    fail(ErrorCode::InvalidArgument, opt.sa_file + " has no inbound SA (dir \"in\"): decrypt needs one");
  const bool any_udp_encap = std::any_of(
      sas.begin(), sas.end(), [](const SaFileEntry& e) { return e.spec.dir == Direction::In && e.spec.udp_encap; });

  // Finds the top-level inbound SA for (SPI, destination), preferring one whose
  // encapsulation matches how the packet came.
  auto lookup = [&](uint32_t spi, const IpAddr& dst, bool udp) -> size_t {
    size_t fallback = sas.size();
    for (size_t i = 0; i < sas.size(); ++i) {
      if (!engine[i] || sas[i].is_inner) continue;
      const SaSpec& sp = sas[i].spec;
      if (sp.spi != spi || !(sp.dst == dst || sp.dst.is_any())) continue;
      if (sp.udp_encap == udp) return i;
      if (fallback == sas.size()) fallback = i;
    }
    return fallback;
  };

  Input in = open_input(opt.input);
  Output out(opt.output, DLT_EN10MB);
  WorkBuffer buf(engine_room(sas));
  CaptureClock clock;
  std::vector<uint8_t> original(kMaxLinkHeader + kSnapLen);

  pcap_pkthdr* hdr = nullptr;
  const u_char* frame = nullptr;
  int rc;
  while ((rc = pcap_next_ex(in.pcap.get(), &hdr, &frame)) == 1) {
    ++s.packets;
    const uint64_t now = clock.now_ns(*hdr);
    if (hdr->caplen > kSnapLen) {  // more than libpcap's largest snapshot: not a real frame
      ++s.failed;
      count(s, "NOT_CHECKED", "oversized");
      continue;
    }
    const auto layout = locate_ip(in.kind, {frame, hdr->caplen});
    const uint8_t* ip = layout ? frame + layout->ip_offset : frame;
    const uint32_t cap = layout ? hdr->caplen - static_cast<uint32_t>(layout->ip_offset) : 0;

    // Writes the frame as it came, framed in Ethernet.
    auto write_unchanged = [&]() {
      if (in.kind == LinkKind::Ethernet) {
        out.write(*hdr, frame, hdr->caplen);
        return;
      }
      const auto fam = layout && layout->family ? layout->family : ip_family({ip, cap});
      uint8_t* dst = original.data() + kMaxLinkHeader;
      std::memcpy(dst, frame, hdr->caplen);
      put_ethernet_header(dst, kFixedEthernet, sizeof kFixedEthernet, fam.value_or(Family::V4));
      if (!fam) dst[-2] = dst[-1] = 0;  // not IP: no EtherType to claim
      out.write(*hdr, dst - 14, hdr->caplen + 14);
    };
    auto not_esp = [&](const char* reason) {
      ++s.passed_through;
      count(s, "NOT_ESP", reason);
      write_unchanged();
    };
    auto failed = [&](const std::string& status, const char* reason) {
      ++s.failed;
      count(s, status, reason);
      if (opt.keep_failed) write_unchanged();
    };

    if (!layout) {
      failed("NOT_CHECKED", "truncated");
      continue;
    }
    if (!layout->family) {
      not_esp("not-ip");
      continue;
    }
    const auto facts = parse_ip(*layout->family, ip, cap);
    if (!facts) {
      failed("NOT_CHECKED", "truncated");
      continue;
    }

    // Is it ESP, and which SPI?
    bool udp = false;
    uint32_t spi_offset = 0;
    if (facts->proto == kProtoEsp && facts->first_fragment) {
      spi_offset = facts->l4_offset;
    } else if (facts->proto == kProtoUdp && facts->first_fragment && any_udp_encap) {
      const uint32_t l4 = facts->l4_offset;
      if (cap < l4 + 8) {
        not_esp("udp");
        continue;
      }
      // A zero marker is IKE, one 0xff byte a NAT keepalive (RFC 3948): not ESP.
      if (!encap_ports.count(be16(ip + l4 + 2)) || cap < l4 + 12 || be32(ip + l4 + 8) == 0) {
        not_esp("udp");
        continue;
      }
      udp = true;
      spi_offset = l4 + 8;
    } else {
      not_esp(facts->proto == kProtoUdp ? "udp" : "not-esp");
      continue;
    }
    ++s.esp;
    if (cap < spi_offset + 4) {
      failed("NOT_CHECKED", "truncated");
      continue;
    }
    const uint32_t spi = be32(ip + spi_offset);
    const size_t idx = lookup(spi, facts->dst, udp);
    if (idx == sas.size()) {
      failed("NOT_CHECKED", "unknown-spi");
      continue;
    }

    // The IP length bounds the packet when the capture holds it all (Ethernet
    // pads short frames); a snapped capture goes in as it is and fails the
    // engine's length checks.
    const uint32_t len = facts->ip_len != 0 && facts->ip_len <= cap ? facts->ip_len : cap;
    std::memcpy(buf.ip(), ip, len);
    esp::Packet p = buf.packet(len);
    esp::Reason reason;
    uint32_t rx_info;
    bool delete_req;
    if (sas[idx].inner) {
      const esp::BundleResult br = esp::decapsulate_bundle(*engine[idx], *engine[*sas[idx].inner], p, now);
      const bool tunnel_failed = br.tunnel.reason != esp::Reason::Ok;
      reason = tunnel_failed ? br.tunnel.reason : br.transport.reason;
      rx_info = br.rx_info;
      delete_req = br.tunnel.sa_delete_req || br.transport.sa_delete_req;
    } else {
      const esp::InboundSa::Result r = engine[idx]->decapsulate(p, now);
      reason = r.reason;
      rx_info = esp::rx_info_for(r);
      delete_req = r.sa_delete_req;
    }
    if (delete_req) ++s.sa_delete_requests;
    const bool crypto_done = ov2_rx_crypto_done(rx_info) != 0;
    const std::string status = crypto_done ? crypto_status_name(ov2_rx_crypto_status(rx_info)) : "NOT_CHECKED";
    if (reason == esp::Reason::DummyPacket) {
      ++s.dummy;
      count(s, status, esp::reason_name(reason));
      continue;
    }
    if (reason != esp::Reason::Ok) {
      failed(status, esp::reason_name(reason));
      continue;
    }
    ++s.ok;
    count(s, status, esp::reason_name(reason));
    const auto fam = ip_family({p.data, p.len});
    if (in.kind == LinkKind::Ethernet) {
      put_ethernet_header(p.data, frame, layout->ip_offset, fam.value_or(Family::V4));
      out.write(*hdr, p.data - layout->ip_offset, p.len + static_cast<uint32_t>(layout->ip_offset));
    } else {
      put_ethernet_header(p.data, kFixedEthernet, sizeof kFixedEthernet, fam.value_or(Family::V4));
      out.write(*hdr, p.data - 14, p.len + 14);
    }
  }
  if (rc == PCAP_ERROR)
    fail(ErrorCode::InvalidArgument, opt.input + ": the capture is damaged after packet " + std::to_string(s.packets) +
                                         ": " + pcap_geterr(in.pcap.get()));
  out.close();
  s.written = out.written();
  return s;
}

// ---- summary ----------------------------------------------------------------

std::string summary_text(const CryptSummary& s) {
  std::ostringstream o;
  if (s.command == "encrypt") {
    o << "pcap encrypt: " << s.packets << " packets read, " << s.ok << " encrypted, " << s.passed_through
      << " passed through unchanged, " << s.failed << " failed; " << s.written << " written\n";
  } else {
    o << "pcap decrypt: " << s.packets << " packets read, " << s.esp << " ESP, " << s.ok << " opened, " << s.failed
      << " failed, " << s.passed_through << " not ESP (written unchanged)";
    if (s.dummy) o << ", " << s.dummy << " dummy (discarded)";
    if (s.sa_delete_requests) o << ", " << s.sa_delete_requests << " with SaDeleteReq";
    o << "; " << s.written << " written\n";
  }
  size_t w = 0;
  for (const auto& [key, n] : s.outcomes) w = std::max(w, key.first.size());
  for (const auto& [key, n] : s.outcomes)
    o << "  " << key.first << std::string(w + 2 - key.first.size(), ' ') << key.second << ": " << n << "\n";
  return o.str();
}

nlohmann::json summary_json(const CryptSummary& s) {
  nlohmann::json j;
  j["command"] = s.command;
  j["packets"] = s.packets;
  if (s.command == "decrypt") {
    j["esp"] = s.esp;
    j["opened"] = s.ok;
    j["not_esp"] = s.passed_through;
    j["dummy"] = s.dummy;
    j["sa_delete_requests"] = s.sa_delete_requests;
  } else {
    j["encrypted"] = s.ok;
    j["passed_through"] = s.passed_through;
  }
  j["failed"] = s.failed;
  j["written"] = s.written;
  j["exit_code"] = s.exit_code();
  nlohmann::json outcomes = nlohmann::json::array();
  for (const auto& [key, n] : s.outcomes)
    outcomes.push_back({{"status", key.first}, {"reason", key.second}, {"count", n}});
  j["outcomes"] = outcomes;
  return j;
}

}  // namespace ov2::pcap
