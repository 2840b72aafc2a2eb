// SA files for the pcap tests: matching outbound/inbound twins per algorithm,
// mode and encapsulation.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace ov2::pcap::test {

struct AlgCase {
  std::string name;       // "aes_gcm_128", ... (test-name safe)
  std::string aead;       // AEAD name, or empty
  std::string enc, auth;  // non-AEAD names
  size_t key_len = 0;     // AEAD key||salt, or enc key
  size_t auth_key_len = 0;
};

// aes-gcm-128/256, chacha20-poly1305, aes-cbc-128+hmac-sha256, null+hmac-sha1, aes-gmac-128.
const std::vector<AlgCase>& all_algorithms();
// aes-gcm-128, the first of them.
inline const AlgCase& gcm128() { return all_algorithms()[0]; }

// The addresses the fixtures use.
inline const char* kHostA4 = "192.0.2.1";
inline const char* kHostB4 = "198.51.100.2";
inline const char* kHostA6 = "2001:db8::1";
inline const char* kHostB6 = "2001:db8::2";
inline const char* kGwA4 = "203.0.113.1";
inline const char* kGwB4 = "203.0.113.2";
inline const char* kGwA6 = "2001:db8:ff::1";
inline const char* kGwB6 = "2001:db8:ff::2";

// One SA object: keys from `seed` (the same seed gives the same keys, so an
// "out" and an "in" SA with one seed are twins).
nlohmann::json sa_object(const AlgCase& alg, const std::string& dir, const std::string& mode, const std::string& src,
                         const std::string& dst, uint32_t spi, bool natt, uint8_t seed);

// Twins for hosts A -> B over IPv4 and IPv6: tunnel (gateways, SPIs 0x1001 v4 /
// 0x1002 v6) or transport (hosts, SPIs 0x2001 / 0x2002); out SAs first.
nlohmann::json twin_sas(const AlgCase& alg, bool tunnel, bool natt, uint8_t seed = 1);

}  // namespace ov2::pcap::test
