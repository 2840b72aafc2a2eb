// An AES-GCM-128 tunnel SA spec for the SA-table tests (not a real key).
#pragma once

#include <vector>

#include "model/sa_spec.h"

namespace ov2::test {

inline SaSpec tunnel_sa_spec(Direction dir, const char* dst, uint32_t spi) {
  SaSpec s;
  s.dir = dir;
  s.mode = Mode::Tunnel;
  s.src = IpAddr::parse("192.0.2.1");
  s.dst = IpAddr::parse(dst);
  s.spi = spi;
  s.enc = EncAlg::AesGcm128;
  s.auth = AuthAlg::None;
  std::vector<uint8_t> k(20, 0x42);
  s.enc_key = SecureBytes(k);
  return s;
}

}  // namespace ov2::test
