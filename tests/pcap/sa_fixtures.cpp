#include "sa_fixtures.h"

#include "pcap_test_support.h"

namespace ov2::pcap::test {

const std::vector<AlgCase>& all_algorithms() {
  static const std::vector<AlgCase> algs = {
      {"aes_gcm_128", "aes-gcm-128", "", "", 20, 0},
      {"aes_gcm_256", "aes-gcm-256", "", "", 36, 0},
      {"chacha20_poly1305", "chacha20-poly1305", "", "", 36, 0},
      {"aes_cbc_128_hmac_sha256", "", "aes-cbc-128", "hmac-sha256", 16, 32},
      {"null_hmac_sha1", "", "null", "hmac-sha1", 0, 20},
      {"aes_gmac_128", "", "null", "aes-gmac-128", 0, 20},
  };
  return algs;
}

nlohmann::json sa_object(const AlgCase& alg, const std::string& dir, const std::string& mode, const std::string& src,
                         const std::string& dst, uint32_t spi, bool natt, uint8_t seed) {
  nlohmann::json j = {{"dir", dir}, {"mode", mode}, {"src", src}, {"dst", dst}, {"spi", spi}};
  if (!alg.aead.empty()) {
    j["aead"] = alg.aead;
    j["key"] = hex_key(alg.key_len, seed);
  } else {
    j["enc"] = alg.enc;
    if (alg.key_len) j["enc-key"] = hex_key(alg.key_len, seed);
    j["auth"] = alg.auth;
    j["auth-key"] = hex_key(alg.auth_key_len, static_cast<uint8_t>(seed + 100));
  }
  if (natt) j["encap"] = "udp";
  return j;
}

nlohmann::json twin_sas(const AlgCase& alg, bool tunnel, bool natt, uint8_t seed) {
  nlohmann::json list = nlohmann::json::array();
  const std::string mode = tunnel ? "tunnel" : "transport";
  const char* a4 = tunnel ? kGwA4 : kHostA4;
  const char* b4 = tunnel ? kGwB4 : kHostB4;
  const char* a6 = tunnel ? kGwA6 : kHostA6;
  const char* b6 = tunnel ? kGwB6 : kHostB6;
  const uint32_t spi4 = tunnel ? 0x1001 : 0x2001, spi6 = tunnel ? 0x1002 : 0x2002;
  for (const char* dir : {"out", "in"}) {
    list.push_back(sa_object(alg, dir, mode, a4, b4, spi4, natt, seed));
    list.push_back(sa_object(alg, dir, mode, a6, b6, spi6, natt, static_cast<uint8_t>(seed + 1)));
  }
  return list;
}

}  // namespace ov2::pcap::test
