// Which library does the AEAD work of new SAs: OpenSSL or intel-ipsec-mb (the
// multi-buffer library VPP and DPDK use).  A process-wide choice made at
// start-up (ipsecov2d --crypto, config worker.crypto, the pcap tool's
// --crypto: all three default to ipsec-mb, the faster in every case the
// benchmark measures); until select_crypto_backend() is called it is
// OpenSSL.  An SA keeps the backend it was created with.
//
// intel-ipsec-mb covers AES-GCM-128/192/256 (RFC 4106), AES-GMAC (RFC 4543)
// and ChaCha20-Poly1305 (RFC 7634).  AES-CBC + HMAC and NULL + HMAC stay on
// OpenSSL with either backend.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace ov2::esp {

enum class CryptoBackend : uint8_t { OpenSsl, IpsecMb };

// "openssl" or "ipsec-mb": the names the command line, config and stats use.
const char* backend_name(CryptoBackend b);
std::optional<CryptoBackend> parse_backend(std::string_view name);

// The backend SAs created from now on use.
CryptoBackend crypto_backend();

// Makes `wanted` the backend of SAs created from now on.  If intel-ipsec-mb
// is wanted but cannot run on this machine, OpenSSL is selected instead and
// `why_not` (if given) says why.  Returns the backend now in effect.
CryptoBackend select_crypto_backend(CryptoBackend wanted, std::string* why_not = nullptr);

// What intel-ipsec-mb does on this machine: its manager is initialised once
// per process (init_mb_mgr_auto picks the best code path for the CPU).
struct IpsecMbInfo {
  bool usable = false;
  std::string version;  // library version, e.g. "1.3.0"
  std::string arch;     // code path chosen for this CPU: "sse", "avx", "avx2", "avx512"
  std::string error;    // why it is not usable
  size_t gcm_key_bytes = 0;  // bytes of an expanded AES-GCM key on that code path (RSS per SA)
};
const IpsecMbInfo& ipsecmb_info();

// One line for logs, caps and stats: "openssl (OpenSSL 3.0.x)" or
// "ipsec-mb (intel-ipsec-mb 1.3.0, avx2; cbc/hmac on openssl)".
std::string crypto_backend_description(CryptoBackend b);

}  // namespace ov2::esp
