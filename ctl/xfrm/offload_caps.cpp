#include "xfrm/offload_caps.h"

#include <libmnl/libmnl.h>
#include <linux/ethtool.h>
#include <linux/ethtool_netlink.h>
#include <linux/genetlink.h>
#include <linux/sockios.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <functional>
#include <memory>
#include <type_traits>
#include <vector>

#include "common/error.h"
#include "ov2_abi.h"

namespace ov2::xfrm {

namespace {

constexpr const char* kEspHwOffload = "esp-hw-offload";
constexpr const char* kEspTxCsum = "esp-tx-csum-hw-offload";
constexpr const char* kTxEspSeg = "tx-esp-segmentation";

int device_index(std::string_view device) {
  if (device.empty() || device.size() >= IFNAMSIZ)
    fail(ErrorCode::InvalidArgument, "invalid device name '" + std::string(device) + "'");
  const unsigned idx = if_nametoindex(std::string(device).c_str());
  if (idx == 0)
    fail(ErrorCode::NotFound, "device " + std::string(device) + " does not exist in this network namespace");
  return static_cast<int>(idx);
}

// libmnl's iteration macros are C (void* to nlattr*); these are the C++ form.
template <typename F>
void each_attr(const nlmsghdr* m, unsigned offset, F&& f) {
  using Fn = std::remove_reference_t<F>;
  mnl_attr_parse(
      m, offset,
      [](const nlattr* a, void* d) -> int {
        (*static_cast<Fn*>(d))(a);
        return MNL_CB_OK;
      },
      &f);
}
template <typename F>
void each_nested(const nlattr* nest, F&& f) {
  using Fn = std::remove_reference_t<F>;
  mnl_attr_parse_nested(
      nest,
      [](const nlattr* a, void* d) -> int {
        (*static_cast<Fn*>(d))(a);
        return MNL_CB_OK;
      },
      &f);
}

// ----- generic netlink (ethtool family) -----

struct MnlCloser {
  void operator()(mnl_socket* s) const { mnl_socket_close(s); }
};
using MnlSocket = std::unique_ptr<mnl_socket, MnlCloser>;

// Sends one genetlink request and hands every reply message to `on_msg`.
// Returns 0 or a positive errno from the kernel's NLMSG_ERROR.
int genl_transact(mnl_socket* nl, nlmsghdr* req, const std::function<void(const nlmsghdr*)>& on_msg) {
  const uint32_t portid = mnl_socket_get_portid(nl);
  req->nlmsg_seq = static_cast<uint32_t>(std::time(nullptr));
  if (mnl_socket_sendto(nl, req, req->nlmsg_len) < 0) return errno;
  std::vector<uint8_t> buf(MNL_SOCKET_BUFFER_SIZE * 4);
  for (;;) {
    const ssize_t n = mnl_socket_recvfrom(nl, buf.data(), buf.size());
    if (n < 0) return errno;
    int len = static_cast<int>(n);
    for (auto* m = reinterpret_cast<const nlmsghdr*>(buf.data()); mnl_nlmsg_ok(m, len); m = mnl_nlmsg_next(m, &len)) {
      if (m->nlmsg_seq != req->nlmsg_seq || (m->nlmsg_pid && m->nlmsg_pid != portid)) continue;
      if (m->nlmsg_type == NLMSG_ERROR) {
        const int err = -static_cast<const nlmsgerr*>(mnl_nlmsg_get_payload(m))->error;
        return err;  // 0 = the ACK that ends the exchange
      }
      if (m->nlmsg_type == NLMSG_DONE) return 0;
      on_msg(m);
    }
  }
}

nlmsghdr* genl_header(uint8_t* buf, uint16_t family, uint8_t cmd, uint8_t version) {
  nlmsghdr* nlh = mnl_nlmsg_put_header(buf);
  nlh->nlmsg_type = family;
  nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
  auto* genl = static_cast<genlmsghdr*>(mnl_nlmsg_put_extra_header(nlh, sizeof(genlmsghdr)));
  genl->cmd = cmd;
  genl->version = version;
  return nlh;
}

// Looks up the ethtool genetlink family id; 0 when the kernel has none.
uint16_t ethtool_family_id(mnl_socket* nl) {
  std::vector<uint8_t> buf(MNL_SOCKET_BUFFER_SIZE, 0);
  nlmsghdr* nlh = genl_header(buf.data(), GENL_ID_CTRL, CTRL_CMD_GETFAMILY, 1);
  mnl_attr_put_strz(nlh, CTRL_ATTR_FAMILY_NAME, ETHTOOL_GENL_NAME);
  uint16_t id = 0;
  const int err = genl_transact(nl, nlh, [&](const nlmsghdr* m) {
    each_attr(m, sizeof(genlmsghdr), [&](const nlattr* attr) {
      if (mnl_attr_get_type(attr) == CTRL_ATTR_FAMILY_ID && mnl_attr_validate(attr, MNL_TYPE_U16) >= 0)
        id = mnl_attr_get_u16(attr);
    });
  });
  return err == 0 ? id : 0;
}

// Reads one ethtool bitset nest (verbose form): the names of the bits that are set.
std::set<std::string> read_bitset(const nlattr* bitset) {
  std::set<std::string> on;
  bool nomask = false;
  const nlattr* bits = nullptr;
  each_nested(bitset, [&](const nlattr* a) {
    if (mnl_attr_get_type(a) == ETHTOOL_A_BITSET_NOMASK) nomask = true;
    if (mnl_attr_get_type(a) == ETHTOOL_A_BITSET_BITS) bits = a;
  });
  if (!bits) return on;
  each_nested(bits, [&](const nlattr* bit) {
    if (mnl_attr_get_type(bit) != ETHTOOL_A_BITSET_BITS_BIT) return;
    const char* name = nullptr;
    bool value = false;
    each_nested(bit, [&](const nlattr* f) {
      if (mnl_attr_get_type(f) == ETHTOOL_A_BITSET_BIT_NAME && mnl_attr_validate(f, MNL_TYPE_NUL_STRING) >= 0)
        name = mnl_attr_get_str(f);
      if (mnl_attr_get_type(f) == ETHTOOL_A_BITSET_BIT_VALUE) value = true;
    });
    // List form (NOMASK): every listed bit is set.  Value/mask form: VALUE says so.
    if (name && (nomask || value)) on.insert(name);
  });
  return on;
}

// ----- ioctl -----

struct FdCloser {
  int fd;
  ~FdCloser() {
    if (fd >= 0) close(fd);
  }
};

int ethtool_ioctl(int fd, std::string_view device, void* cmd) {
  ifreq ifr;
  std::memset(&ifr, 0, sizeof(ifr));
  std::memcpy(ifr.ifr_name, device.data(), std::min(device.size(), size_t{IFNAMSIZ - 1}));
  ifr.ifr_data = static_cast<char*>(cmd);
  return ioctl(fd, SIOCETHTOOL, &ifr) < 0 ? errno : 0;
}

}  // namespace

DeviceFeatures read_device_features_netlink(std::string_view device) {
  DeviceFeatures out;
  const std::string name(device);
  out.ifindex = device_index(device);
  out.source = "ethtool-netlink";
  MnlSocket nl(mnl_socket_open(NETLINK_GENERIC));
  if (!nl || mnl_socket_bind(nl.get(), 0, MNL_SOCKET_AUTOPID) < 0)
    fail(ErrorCode::Kernel, std::string("cannot open a generic netlink socket: ") + std::strerror(errno));
  const uint16_t family = ethtool_family_id(nl.get());
  if (family == 0) fail(ErrorCode::Unsupported, "the kernel has no ethtool netlink interface");

  std::vector<uint8_t> buf(MNL_SOCKET_BUFFER_SIZE, 0);
  nlmsghdr* nlh = genl_header(buf.data(), family, ETHTOOL_MSG_FEATURES_GET, ETHTOOL_GENL_VERSION);
  nlattr* hdr = mnl_attr_nest_start(nlh, ETHTOOL_A_FEATURES_HEADER);
  mnl_attr_put_strz(nlh, ETHTOOL_A_HEADER_DEV_NAME, name.c_str());
  mnl_attr_put_u32(nlh, ETHTOOL_A_HEADER_FLAGS, 0);  // verbose bitsets: bits come with names
  mnl_attr_nest_end(nlh, hdr);
  bool got_reply = false;
  const int err = genl_transact(nl.get(), nlh, [&](const nlmsghdr* m) {
    got_reply = true;
    each_attr(m, sizeof(genlmsghdr), [&](const nlattr* attr) {
      const uint16_t type = mnl_attr_get_type(attr);
      if (type == ETHTOOL_A_FEATURES_ACTIVE) out.active = read_bitset(attr);
      if (type == ETHTOOL_A_FEATURES_HW) out.changeable = read_bitset(attr);
    });
  });
  if (err == ENODEV) fail(ErrorCode::NotFound, "device " + name + " does not exist in this network namespace");
  if (err != 0 || !got_reply)
    fail(ErrorCode::Kernel,
         "ethtool netlink could not read the features of " + name + ": " + (err ? std::strerror(err) : "no reply"));
  return out;
}

DeviceFeatures read_device_features_ioctl(std::string_view device) {
  DeviceFeatures out;
  const std::string name(device);
  out.ifindex = device_index(device);
  out.source = "ioctl";
  FdCloser fd{socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0)};
  if (fd.fd < 0) fail(ErrorCode::Kernel, std::string("cannot open a socket for SIOCETHTOOL: ") + std::strerror(errno));

  // How many feature names there are.
  alignas(ethtool_sset_info) uint8_t sset_buf[sizeof(ethtool_sset_info) + sizeof(uint32_t)] = {};
  auto* sset = reinterpret_cast<ethtool_sset_info*>(sset_buf);
  sset->cmd = ETHTOOL_GSSET_INFO;
  sset->sset_mask = 1ull << ETH_SS_FEATURES;
  if (int e = ethtool_ioctl(fd.fd, device, sset))
    fail(e == ENODEV ? ErrorCode::NotFound : ErrorCode::Kernel,
         "SIOCETHTOOL GSSET_INFO on " + name + " failed: " + std::strerror(e));
  const uint32_t count = sset->sset_mask ? sset->data[0] : 0;
  if (count == 0) fail(ErrorCode::Kernel, "device " + name + " reports no feature names");

  std::vector<uint8_t> strings_buf(sizeof(ethtool_gstrings) + count * ETH_GSTRING_LEN, 0);
  auto* strings = reinterpret_cast<ethtool_gstrings*>(strings_buf.data());
  strings->cmd = ETHTOOL_GSTRINGS;
  strings->string_set = ETH_SS_FEATURES;
  strings->len = count;
  if (int e = ethtool_ioctl(fd.fd, device, strings))
    fail(ErrorCode::Kernel, "SIOCETHTOOL GSTRINGS on " + name + " failed: " + std::strerror(e));

  const uint32_t blocks = (count + 31) / 32;
  std::vector<uint8_t> feat_buf(sizeof(ethtool_gfeatures) + blocks * sizeof(ethtool_get_features_block), 0);
  auto* feats = reinterpret_cast<ethtool_gfeatures*>(feat_buf.data());
  feats->cmd = ETHTOOL_GFEATURES;
  feats->size = blocks;
  if (int e = ethtool_ioctl(fd.fd, device, feats))
    fail(ErrorCode::Kernel, "SIOCETHTOOL GFEATURES on " + name + " failed: " + std::strerror(e));

  for (uint32_t i = 0; i < count; ++i) {
    const char* s = reinterpret_cast<const char*>(strings->data) + i * ETH_GSTRING_LEN;
    const std::string bit_name(s, strnlen(s, ETH_GSTRING_LEN));
    if (bit_name.empty()) continue;
    const ethtool_get_features_block& b = feats->features[i / 32];
    if ((b.active >> (i % 32)) & 1u) out.active.insert(bit_name);
    if ((b.available >> (i % 32)) & 1u) out.changeable.insert(bit_name);
  }
  return out;
}

EspFeatures esp_features_of(const DeviceFeatures& f, std::string_view device) {
  EspFeatures out;
  out.device = std::string(device);
  out.ifindex = f.ifindex;
  out.source = f.source;
  out.esp_hw_offload = f.active.count(kEspHwOffload) > 0;
  out.esp_tx_csum_hw_offload = f.active.count(kEspTxCsum) > 0;
  out.tx_esp_segmentation = f.active.count(kTxEspSeg) > 0;
  out.esp_hw_offload_changeable = f.changeable.count(kEspHwOffload) > 0;
  return out;
}

EspFeatures query_esp_features_netlink(std::string_view device) {
  return esp_features_of(read_device_features_netlink(device), device);
}

EspFeatures query_esp_features_ioctl(std::string_view device) {
  return esp_features_of(read_device_features_ioctl(device), device);
}

EspFeatures query_esp_features(std::string_view device) {
  try {
    return query_esp_features_netlink(device);
  } catch (const Error& e) {
    if (e.code() == ErrorCode::NotFound || e.code() == ErrorCode::InvalidArgument) throw;
  }
  return query_esp_features_ioctl(device);
}

Capabilities nic_capabilities(const EspFeatures& f) {
  Capabilities c;
  c.engine = "nic";
  if (!f.esp_hw_offload) return c;
  c.ipv6 = true;
  c.esp = true;
  c.transport = true;
  c.tunnel = true;
  c.extended_sequence_numbers = true;
  c.lso_supported = f.tx_esp_segmentation;
  c.udp_esp = IPSEC_OFFLOAD_V2_UDP_ESP_ENCAPSULATION_NONE;
  c.authentication_algorithms = IPSEC_OFFLOAD_V2_AUTHENTICATION_AES_GCM_128 |
                                IPSEC_OFFLOAD_V2_AUTHENTICATION_AES_GCM_192 |
                                IPSEC_OFFLOAD_V2_AUTHENTICATION_AES_GCM_256;
  c.encryption_algorithms = IPSEC_OFFLOAD_V2_ENCRYPTION_AES_GCM_128 | IPSEC_OFFLOAD_V2_ENCRYPTION_AES_GCM_192 |
                            IPSEC_OFFLOAD_V2_ENCRYPTION_AES_GCM_256;
  c.sa_offload_capacity = 0;  // the kernel does not tell; the driver refuses when full
  return c;
}

OffloadDecision can_offload(const SaSpec& sa, const EspFeatures& f, OffloadKind kind) {
  OffloadDecision d;
  if (!f.esp_hw_offload) {
    d.reason = "cannot offload: device has no ESP offload (esp-hw-offload off) on " + f.device +
               (f.esp_hw_offload_changeable ? "; enable it with `ethtool -K " + f.device + " esp-hw-offload on`" : "");
    return d;
  }
  if (kind == OffloadKind::None) {
    d.reason = "cannot offload: no offload mode was requested";
    return d;
  }
  if (sa.udp_encap) {
    d.reason = "cannot offload: UDP-encapsulated ESP (NAT-T) is not offloadable to " + f.device +
               " (the kernel refuses encapsulation for crypto offload, and no known NIC does it in packet offload)";
    return d;
  }
  const bool gcm = sa.enc == EncAlg::AesGcm128 || sa.enc == EncAlg::AesGcm192 || sa.enc == EncAlg::AesGcm256;
  if (!gcm || sa.auth != AuthAlg::None) {
    std::string alg = info(sa.enc).name;
    if (sa.auth != AuthAlg::None) alg += std::string(" + ") + info(sa.auth).name;
    d.reason = "cannot offload: ESP offload NICs do AES-GCM (rfc4106) only; this SA uses " + alg;
    return d;
  }
  d.offloadable = true;
  return d;
}

}  // namespace ov2::xfrm
