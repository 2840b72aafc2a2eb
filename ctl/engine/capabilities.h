// What an engine can offload, in the shape of NDIS_IPSEC_OFFLOAD_V2
// (ntddndis.h, NDIS_OFFLOAD.IPsecV2) plus what NDIS has no field for.
#pragma once

#include <cstdint>
#include <string>

namespace ov2 {

// NDIS_ENCAPSULATION_IEEE_802_3: Ethernet framing, the only one we do.
inline constexpr uint32_t kNdisEncapsulationIeee8023 = 0x2;

struct Capabilities {
  // NDIS_IPSEC_OFFLOAD_V2, field for field.
  uint32_t encapsulation = kNdisEncapsulationIeee8023;
  bool ipv6 = false;
  bool ipv4_options = false;
  bool ipv6_non_ipsec_extension_headers = false;
  bool ah = false;
  bool esp = false;
  bool ah_esp_combined = false;
  bool transport = false;
  bool tunnel = false;
  bool transport_tunnel_combined = false;
  bool lso_supported = false;
  bool extended_sequence_numbers = false;
  uint32_t udp_esp = 0;                    // IPSEC_OFFLOAD_V2_UDP_ESP_ENCAPSULATION_* bitmask
  uint32_t authentication_algorithms = 0;  // IPSEC_OFFLOAD_V2_AUTHENTICATION_* bitmask
  uint32_t encryption_algorithms = 0;      // IPSEC_OFFLOAD_V2_ENCRYPTION_* bitmask (+ OV2_ENCRYPTION_*)
  uint32_t sa_offload_capacity = 0;        // SA bundles

  // Beyond NDIS.
  bool chacha20_poly1305 = false;  // OV2_ENCRYPTION_CHACHA20_POLY1305 in encryption_algorithms
  std::string engine;              // "afxdp", "nic", ...
  std::string crypto;              // the AF_XDP worker's crypto backend (esp/crypto_backend.h), with its version
};

}  // namespace ov2
