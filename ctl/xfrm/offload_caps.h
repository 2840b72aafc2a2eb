// Does a network device do ESP offload, and can this SA go there?
//
// The device's ESP features come from ethtool netlink (genetlink family
// "ethtool", ETHTOOL_MSG_FEATURES_GET) with a fallback to the SIOCETHTOOL
// ioctl (ETHTOOL_GSSET_INFO + ETHTOOL_GSTRINGS to find the bits by name,
// ETHTOOL_GFEATURES to read them).  They are reported in the NDIS capability
// form so `--engine auto` can compare them with the AF_XDP engine's.
#pragma once

#include <set>
#include <string>
#include <string_view>

#include "engine/capabilities.h"
#include "model/sa_spec.h"
#include "xfrm/xfrm_messages.h"

namespace ov2::xfrm {

// The ESP-related netdev features of one device.
struct EspFeatures {
  std::string device;
  int ifindex = 0;
  bool esp_hw_offload = false;             // NETIF_F_HW_ESP, "esp-hw-offload"
  bool esp_tx_csum_hw_offload = false;     // NETIF_F_HW_ESP_TX_CSUM
  bool tx_esp_segmentation = false;        // NETIF_F_GSO_ESP (ESP LSO)
  bool esp_hw_offload_changeable = false;  // can be turned on with `ethtool -K DEV esp-hw-offload on`
  std::string source;                      // "ethtool-netlink" or "ioctl"
};

// All netdev features of a device by their ethtool names: which are on, and
// which the driver lets the user change.
struct DeviceFeatures {
  std::set<std::string> active;
  std::set<std::string> changeable;
  int ifindex = 0;
  std::string source;  // "ethtool-netlink" or "ioctl"
};
// The two ways to read them (tests prove they agree with each other and with
// `ethtool -k`).  Throw ov2::Error(NotFound) for an unknown device,
// Unsupported when ethtool netlink is missing, Kernel on other failures.
DeviceFeatures read_device_features_netlink(std::string_view device);
DeviceFeatures read_device_features_ioctl(std::string_view device);
// The ESP part of a device's features.
EspFeatures esp_features_of(const DeviceFeatures& features, std::string_view device);

// Reads the features through ethtool netlink, falling back to the ioctl when
// the genetlink family is missing.  Throws ov2::Error(NotFound) for an
// unknown device, ov2::Error(Kernel) when both ways fail.
EspFeatures query_esp_features(std::string_view device);
// The two ways separately (tests prove they agree).
EspFeatures query_esp_features_netlink(std::string_view device);
EspFeatures query_esp_features_ioctl(std::string_view device);

// The device's offload capabilities in NDIS_IPSEC_OFFLOAD_V2 form.  Without
// esp-hw-offload: nothing (esp = false).  With it: ESP, IPv4 and IPv6,
// transport and tunnel, ESN, no UDP-ESP (crypto offload cannot encapsulate),
// AES-GCM-128/192/256 as both encryption and authentication (the only AEAD
// the offloading drivers accept; which key sizes the driver takes shows at
// ADD time), LSO = tx-esp-segmentation, SA capacity unknown (0).
Capabilities nic_capabilities(const EspFeatures& features);

struct OffloadDecision {
  bool offloadable = false;
  std::string reason;  // why not, in words, starting "cannot offload: "; empty when offloadable
};

// Whether `sa` can be offloaded to the device with `features`, and if not,
// why: no esp-hw-offload, UDP encapsulation (NAT-T), a non-GCM algorithm.
OffloadDecision can_offload(const SaSpec& sa, const EspFeatures& features, OffloadKind kind = OffloadKind::Crypto);

}  // namespace ov2::xfrm
