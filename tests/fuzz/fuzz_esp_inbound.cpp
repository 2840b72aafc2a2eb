// Fuzzes the inbound ESP engine with live SAs: the input is an outer IP packet
// (first byte picks the SA), decapsulated in a buffer of exactly its size with
// room around it, so ASan sees any read or write out of bounds.  Every result
// must be a documented Reason; nothing may crash.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "esp/esp.h"

namespace {

using namespace ov2;

SaSpec make(EncAlg enc, AuthAlg auth, Mode mode, const char* src, const char* dst, bool udp, bool esn) {
  SaSpec sa;
  sa.dir = Direction::In;
  sa.mode = mode;
  sa.src = IpAddr::parse(src);
  sa.dst = IpAddr::parse(dst);
  sa.spi = 0x1001;
  sa.enc = enc;
  sa.auth = auth;
  const auto& e = info(enc);
  const auto& a = info(auth);
  std::vector<uint8_t> k(64, 0x42);
  sa.enc_key = SecureBytes(std::span<const uint8_t>(k.data(), e.key_len + e.salt_len));
  if (auth != AuthAlg::None) sa.auth_key = SecureBytes(std::span<const uint8_t>(k.data(), a.key_len + a.salt_len));
  sa.udp_encap = udp;
  sa.esn = esn;
  sa.replay_window = 128;
  return sa;
}

std::vector<std::unique_ptr<esp::InboundSa>>& sas() {
  static auto* v = [] {
    auto* out = new std::vector<std::unique_ptr<esp::InboundSa>>();
    out->push_back(std::make_unique<esp::InboundSa>(
        make(EncAlg::AesGcm128, AuthAlg::None, Mode::Tunnel, "192.0.2.1", "192.0.2.2", false, false)));
    out->push_back(std::make_unique<esp::InboundSa>(
        make(EncAlg::AesCbc128, AuthAlg::HmacSha256, Mode::Transport, "2001:db8::1", "2001:db8::2", false, true)));
    out->push_back(std::make_unique<esp::InboundSa>(
        make(EncAlg::ChaCha20Poly1305, AuthAlg::None, Mode::Tunnel, "192.0.2.1", "192.0.2.2", true, true)));
    out->push_back(std::make_unique<esp::InboundSa>(
        make(EncAlg::Null, AuthAlg::HmacSha1, Mode::Transport, "192.0.2.1", "192.0.2.2", true, false)));
    out->push_back(std::make_unique<esp::InboundSa>(
        make(EncAlg::Null, AuthAlg::AesGmac128, Mode::Tunnel, "2001:db8::1", "2001:db8::2", false, false)));
    return out;
  }();
  return *v;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  auto& all = sas();
  esp::InboundSa& sa = *all[data[0] % all.size()];
  const size_t len = size - 1;
  constexpr size_t kRoom = 64;
  std::vector<uint8_t> buf(kRoom + len + kRoom);
  std::memcpy(buf.data() + kRoom, data + 1, len);
  esp::Packet p{buf.data() + kRoom, static_cast<uint32_t>(len), kRoom, kRoom};
  const auto r = sa.decapsulate(p, 1'000'000'000ull);
  if (static_cast<size_t>(r.reason) >= static_cast<size_t>(esp::Reason::Count)) __builtin_trap();
  if (r.reason == esp::Reason::Ok && (p.data < buf.data() || p.data + p.len > buf.data() + buf.size()))
    __builtin_trap();
  return 0;
}
