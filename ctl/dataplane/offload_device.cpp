#include "dataplane/offload_device.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <libmnl/libmnl.h>
#include <linux/ethtool.h>
#include <linux/if_link.h>
#include <linux/rtnetlink.h>
#include <linux/sockios.h>
#include <linux/veth.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>

#include "common/error.h"
#include "dataplane/bpf_programs.h"
#include "ov2_abi.h"

namespace ov2 {

struct NlSocket {
  mnl_socket* nl;
  uint32_t seq = 1;
  NlSocket() {
    nl = mnl_socket_open(NETLINK_ROUTE);
    if (!nl || mnl_socket_bind(nl, 0, MNL_SOCKET_AUTOPID) < 0)
      fail(ErrorCode::Kernel, std::string("cannot open rtnetlink: ") + strerror(errno));
  }
  ~NlSocket() { mnl_socket_close(nl); }

  // Sends a request with NLM_F_ACK and returns 0 or -errno.
  int request(nlmsghdr* nlh) {
    nlh->nlmsg_flags |= NLM_F_REQUEST | NLM_F_ACK;
    nlh->nlmsg_seq = ++seq;
    if (mnl_socket_sendto(nl, nlh, nlh->nlmsg_len) < 0) return -errno;
    char buf[MNL_SOCKET_BUFFER_SIZE];
    ssize_t n = mnl_socket_recvfrom(nl, buf, sizeof(buf));
    if (n < 0) return -errno;
    if (mnl_cb_run(buf, n, nlh->nlmsg_seq, mnl_socket_get_portid(nl), nullptr, nullptr) < 0) return -errno;
    return 0;
  }
};

namespace {

void check(int err, const std::string& what) {
  if (err < 0) fail(ErrorCode::Kernel, what + ": " + strerror(-err));
}

void write_sysctl(const std::string& path, const char* value) {
  int fd = open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return;  // IPv6 disabled in this namespace: nothing to quiet
  [[maybe_unused]] ssize_t n = write(fd, value, strlen(value));
  close(fd);
}

}  // namespace

namespace link {

int index_of(const std::string& name) { return static_cast<int>(if_nametoindex(name.c_str())); }

static void ifreq_ioctl(const std::string& name, unsigned long req, ifreq* ifr) {
  if (name.size() >= IFNAMSIZ) fail(ErrorCode::InvalidArgument, "interface name too long: " + name);
  int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) fail(ErrorCode::Kernel, std::string("socket: ") + strerror(errno));
  std::memset(ifr, 0, sizeof(*ifr));
  std::memcpy(ifr->ifr_name, name.c_str(), name.size());
  int rc = ioctl(s, req, ifr);
  int err = errno;
  close(s);
  if (rc < 0) fail(ErrorCode::Kernel, "cannot query interface " + name + ": " + strerror(err));
}

void mac_of(const std::string& name, uint8_t mac[6]) {
  ifreq ifr;
  ifreq_ioctl(name, SIOCGIFHWADDR, &ifr);
  std::memcpy(mac, ifr.ifr_hwaddr.sa_data, 6);
}

uint32_t mtu_of(const std::string& name) {
  ifreq ifr;
  ifreq_ioctl(name, SIOCGIFMTU, &ifr);
  return static_cast<uint32_t>(ifr.ifr_mtu);
}

void remove(const std::string& name) {
  int idx = index_of(name);
  if (idx == 0) return;
  NlSocket nl;
  char buf[MNL_SOCKET_BUFFER_SIZE];
  nlmsghdr* nlh = mnl_nlmsg_put_header(buf);
  nlh->nlmsg_type = RTM_DELLINK;
  auto* ifm = static_cast<ifinfomsg*>(mnl_nlmsg_put_extra_header(nlh, sizeof(ifinfomsg)));
  ifm->ifi_index = idx;
  int err = nl.request(nlh);
  if (err < 0 && err != -ENODEV) check(err, "cannot delete leftover interface " + name);
}

// Turns off transmit checksum offload on `name`: the host would hand us TCP/UDP
// with only the pseudo-header sum in place (CHECKSUM_PARTIAL), and the worker
// would encrypt a packet the peer then drops for its checksum.
void disable_tx_checksum(const std::string& name) {
  ethtool_value v{};
  v.cmd = ETHTOOL_STXCSUM;
  v.data = 0;
  ifreq ifr;
  std::memset(&ifr, 0, sizeof(ifr));
  std::memcpy(ifr.ifr_name, name.c_str(), std::min(name.size(), size_t(IFNAMSIZ - 1)));
  ifr.ifr_data = reinterpret_cast<char*>(&v);
  int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) fail(ErrorCode::Kernel, std::string("socket: ") + strerror(errno));
  int rc = ioctl(s, SIOCETHTOOL, &ifr);
  int err = errno;
  close(s);
  if (rc < 0) fail(ErrorCode::Kernel, "cannot turn off TX checksum offload on " + name + ": " + strerror(err));
}

}  // namespace link

OffloadDevice::OffloadDevice(const Options& opts, BpfPrograms& programs) : opts_(opts) {
  if (opts.host_name.empty() || opts.nic_name.empty() || opts.host_name.size() >= IFNAMSIZ ||
      opts.nic_name.size() >= IFNAMSIZ)
    fail(ErrorCode::InvalidArgument, "offload device names must be 1.." + std::to_string(IFNAMSIZ - 1) + " characters");
  if (opts.queues == 0 || opts.queues > OV2_MAX_QUEUES)
    fail(ErrorCode::InvalidArgument, "offload device queues must be 1.." + std::to_string(OV2_MAX_QUEUES));
  if (opts.wire_ifname.empty()) fail(ErrorCode::InvalidArgument, "offload device: the wire interface is required");
  wire_mtu_ = link::mtu_of(opts.wire_ifname);
  if (wire_mtu_ < 576 + kWorstCaseEspOverhead)
    fail(ErrorCode::InvalidArgument,
         "wire MTU " + std::to_string(wire_mtu_) + " of " + opts.wire_ifname + " leaves no room for ESP; raise it");
  route_mtu_ = opts.mtu ? opts.mtu : wire_mtu_ - kWorstCaseEspOverhead;
  // Room for a decrypted packet plus the shim (veth allows MTU + 18 bytes of frame).
  mtu_ = std::max(wire_mtu_, route_mtu_ + OV2_SHIM_SIZE);

  // A crashed run leaves its pair behind: replace it (deleting one end deletes both).
  link::remove(opts.host_name);
  link::remove(opts.nic_name);

  nl_ = std::make_unique<NlSocket>();
  NlSocket& nl = *nl_;
  char buf[MNL_SOCKET_BUFFER_SIZE];
  {
    nlmsghdr* nlh = mnl_nlmsg_put_header(buf);
    nlh->nlmsg_type = RTM_NEWLINK;
    nlh->nlmsg_flags = NLM_F_CREATE | NLM_F_EXCL;
    auto* ifm = static_cast<ifinfomsg*>(mnl_nlmsg_put_extra_header(nlh, sizeof(ifinfomsg)));
    ifm->ifi_family = AF_UNSPEC;
    mnl_attr_put_strz(nlh, IFLA_IFNAME, opts.host_name.c_str());
    mnl_attr_put_u32(nlh, IFLA_MTU, mtu_);
    mnl_attr_put_u32(nlh, IFLA_NUM_TX_QUEUES, opts.queues);
    mnl_attr_put_u32(nlh, IFLA_NUM_RX_QUEUES, opts.queues);
    nlattr* linkinfo = mnl_attr_nest_start(nlh, IFLA_LINKINFO);
    mnl_attr_put_strz(nlh, IFLA_INFO_KIND, "veth");
    nlattr* data = mnl_attr_nest_start(nlh, IFLA_INFO_DATA);
    nlattr* peer = mnl_attr_nest_start(nlh, VETH_INFO_PEER);
    auto* pifm = static_cast<ifinfomsg*>(mnl_nlmsg_put_extra_header(nlh, sizeof(ifinfomsg)));
    pifm->ifi_family = AF_UNSPEC;
    mnl_attr_put_strz(nlh, IFLA_IFNAME, opts.nic_name.c_str());
    mnl_attr_put_u32(nlh, IFLA_MTU, mtu_);
    mnl_attr_put_u32(nlh, IFLA_NUM_TX_QUEUES, opts.queues);
    mnl_attr_put_u32(nlh, IFLA_NUM_RX_QUEUES, opts.queues);
    mnl_attr_nest_end(nlh, peer);
    mnl_attr_nest_end(nlh, data);
    mnl_attr_nest_end(nlh, linkinfo);
    check(nl.request(nlh), "cannot create the offload device " + opts.host_name + "/" + opts.nic_name);
  }
  host_ifindex_ = link::index_of(opts.host_name);
  nic_ifindex_ = link::index_of(opts.nic_name);
  if (!host_ifindex_ || !nic_ifindex_) fail(ErrorCode::Kernel, "offload device vanished right after creation");

  try {
    // No IPv6 link-local address on either end (so no DAD, no router
    // solicitation); no DAD for addresses the admin adds to the host end; the
    // worker end carries no host traffic at all.
    write_sysctl("/proc/sys/net/ipv6/conf/" + opts.host_name + "/accept_dad", "0");
    write_sysctl("/proc/sys/net/ipv6/conf/" + opts.host_name + "/router_solicitations", "0");
    write_sysctl("/proc/sys/net/ipv6/conf/" + opts.host_name + "/accept_ra", "0");
    write_sysctl("/proc/sys/net/ipv6/conf/" + opts.nic_name + "/disable_ipv6", "1");
    for (int idx : {host_ifindex_, nic_ifindex_}) {
      nlmsghdr* nlh = mnl_nlmsg_put_header(buf);
      nlh->nlmsg_type = RTM_NEWLINK;
      auto* ifm = static_cast<ifinfomsg*>(mnl_nlmsg_put_extra_header(nlh, sizeof(ifinfomsg)));
      ifm->ifi_index = idx;
      // NOARP on both: the host resolves nothing towards a dead end (its frames
      // carry its own MAC as destination, which nobody checks).
      ifm->ifi_flags = IFF_NOARP;
      ifm->ifi_change = IFF_NOARP;
      nlattr* af = mnl_attr_nest_start(nlh, IFLA_AF_SPEC);
      nlattr* in6 = mnl_attr_nest_start(nlh, AF_INET6);
      mnl_attr_put_u8(nlh, IFLA_INET6_ADDR_GEN_MODE, IN6_ADDR_GEN_MODE_NONE);
      mnl_attr_nest_end(nlh, in6);
      mnl_attr_nest_end(nlh, af);
      int err = nl.request(nlh);
      if (err == -EAFNOSUPPORT) {  // IPv6 off in this kernel/namespace: NOARP alone
        nlh = mnl_nlmsg_put_header(buf);
        nlh->nlmsg_type = RTM_NEWLINK;
        ifm = static_cast<ifinfomsg*>(mnl_nlmsg_put_extra_header(nlh, sizeof(ifinfomsg)));
        ifm->ifi_index = idx;
        ifm->ifi_flags = IFF_NOARP;
        ifm->ifi_change = IFF_NOARP;
        err = nl.request(nlh);
      }
      check(err, "cannot configure the offload device");
    }
    link::disable_tx_checksum(opts.host_name);
    link::mac_of(opts.host_name, host_mac_);
    link::mac_of(opts.nic_name, nic_mac_);
    // Programs before carrier: no packet may reach ov2 without ov2_deliver in place.
    programs.attach_offload(host_ifindex_, nic_ifindex_);
    for (int idx : {nic_ifindex_, host_ifindex_}) {
      nlmsghdr* nlh = mnl_nlmsg_put_header(buf);
      nlh->nlmsg_type = RTM_NEWLINK;
      auto* ifm = static_cast<ifinfomsg*>(mnl_nlmsg_put_extra_header(nlh, sizeof(ifinfomsg)));
      ifm->ifi_index = idx;
      ifm->ifi_flags = IFF_UP;
      ifm->ifi_change = IFF_UP;
      check(nl.request(nlh), "cannot bring the offload device up");
    }
  } catch (...) {
    link::remove(opts.host_name);
    throw;
  }
}

void OffloadDevice::set_route_mtu(uint32_t route_mtu) {
  const uint32_t new_route = route_mtu ? route_mtu : wire_mtu_ - kWorstCaseEspOverhead;
  const uint32_t new_mtu = std::max(wire_mtu_, new_route + OV2_SHIM_SIZE);
  auto set_mtu = [&](int idx, uint32_t mtu) {
    char buf[MNL_SOCKET_BUFFER_SIZE];
    nlmsghdr* nlh = mnl_nlmsg_put_header(buf);
    nlh->nlmsg_type = RTM_NEWLINK;
    auto* ifm = static_cast<ifinfomsg*>(mnl_nlmsg_put_extra_header(nlh, sizeof(ifinfomsg)));
    ifm->ifi_index = idx;
    mnl_attr_put_u32(nlh, IFLA_MTU, mtu);
    return nl_->request(nlh);
  };
  auto refused = [&](int err, const std::string& name) {
    check(err, "cannot set the MTU of " + name + " to " + std::to_string(new_mtu) +
                   (err == -EINVAL ? " (above what the device takes: a veth with an XDP program takes about one page "
                                     "per frame)"
                                   : ""));
  };
  if (new_mtu != mtu_) {
    // Both ends, the worker end first; if the host end refuses, the worker end goes back.
    if (const int err = set_mtu(nic_ifindex_, new_mtu); err < 0) refused(err, opts_.nic_name);
    if (const int err = set_mtu(host_ifindex_, new_mtu); err < 0) {
      set_mtu(nic_ifindex_, mtu_);
      refused(err, opts_.host_name);
    }
  }
  route_mtu_ = new_route;
  mtu_ = new_mtu;
}

OffloadDevice::~OffloadDevice() {
  // Through the socket opened at creation: the pair is deleted in the namespace
  // it was created in, whatever namespace the destroying thread is in.
  char buf[MNL_SOCKET_BUFFER_SIZE];
  nlmsghdr* nlh = mnl_nlmsg_put_header(buf);
  nlh->nlmsg_type = RTM_DELLINK;
  auto* ifm = static_cast<ifinfomsg*>(mnl_nlmsg_put_extra_header(nlh, sizeof(ifinfomsg)));
  ifm->ifi_index = host_ifindex_;
  nl_->request(nlh);  // a failure leaves a pair the next start replaces
}

}  // namespace ov2
