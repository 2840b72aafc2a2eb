// The offload device: a veth pair in the current network namespace.  The host
// end (`ov2`) is where the host routes protected traffic and where decrypted
// packets come back up; the worker end (`ov2-nic`) is where the worker's
// AF_XDP socket sits.  Created over rtnetlink; removed on destruction.
//
// MTU, two numbers, because one device carries both directions:
//  - route_mtu(): the largest packet the host may send into ov2 = wire MTU
//    minus the worst-case ESP overhead of any SA this engine runs, fixed
//    rather than per SA so it never changes under traffic:
//      outer IPv6 40 + UDP (NAT-T) 8 + ESP header 8 + IV 16 (AES-CBC) +
//      padding 15 + pad length/next header 2 + ICV 16  = 105 bytes.
//    Routes into ov2 may carry it (`ip route add ... dev ov2 mtu <route_mtu>`)
//    to avoid the first round trip of path MTU discovery; without it the
//    worker answers what would not fit the wire after ESP with an ICMP
//    "too big" error carrying the exact MTU of the SA, or fragments IPv4
//    without DF before ESP (esp/path_mtu.h).
//  - the device MTU: what ov2 accepts from the worker.  A decrypted packet
//    arrives as Ethernet | 24-byte shim | inner IP and veth drops frames above
//    MTU + 18 before any XDP program runs; a peer may send inner packets up to
//    its own wire MTU minus its (smaller) overhead.  So the device MTU is the
//    wire MTU, which fits any inner packet an ESP peer can send plus the shim.
//    (With device MTU = route MTU, full-size TCP segments died at ov2.)
#pragma once

#include <cstdint>
#include <memory>
#include <string>

namespace ov2 {

class BpfPrograms;
struct NlSocket;

// Worst-case bytes an SA of this engine adds to a packet (see above).
constexpr uint32_t kWorstCaseEspOverhead = 40 + 8 + 8 + 16 + 15 + 2 + 16;

class OffloadDevice {
 public:
  struct Options {
    std::string host_name = "ov2";     // host end: routes point here
    std::string nic_name = "ov2-nic";  // worker end
    std::string wire_ifname;           // for the MTUs (and nothing else)
    uint32_t mtu = 0;                  // route MTU; 0: wire MTU - kWorstCaseEspOverhead
    uint32_t queues = 1;               // veth queues (one worker socket per queue)
  };

  // Creates the pair (replacing a leftover pair of the same names from a crashed
  // run), turns off TX checksum offload on the host end, sets the host end NOARP with no IPv6 link-local/DAD/RS, sets
  // the MTU, brings both ends up and attaches ov2_deliver+ov2_verdict (host end) and ov2_tx (worker end).  Throws
  // ov2::Error(Kernel) with the netlink reason.
  OffloadDevice(const Options& opts, BpfPrograms& programs);
  ~OffloadDevice();  // deletes the pair (which detaches the programs)
  OffloadDevice(const OffloadDevice&) = delete;
  OffloadDevice& operator=(const OffloadDevice&) = delete;

  int host_ifindex() const { return host_ifindex_; }
  int nic_ifindex() const { return nic_ifindex_; }
  const std::string& host_name() const { return opts_.host_name; }
  const std::string& nic_name() const { return opts_.nic_name; }
  uint32_t mtu() const { return mtu_; }              // device MTU (see above)
  uint32_t route_mtu() const { return route_mtu_; }  // for routes into ov2 (see above)
  uint32_t wire_mtu() const { return wire_mtu_; }
  // For reload of offload_device.mtu: a new route MTU (0: wire MTU -
  // kWorstCaseEspOverhead) and with it the device MTU of both ends, as the
  // constructor computes them.  The worker's own limit (tx-too-big: the wire
  // MTU after ESP) does not depend on it.  Throws ov2::Error with the
  // kernel's reason (e.g. above what XDP on a veth allows); then nothing
  // changed.
  void set_route_mtu(uint32_t route_mtu);
  const uint8_t* host_mac() const { return host_mac_; }
  const uint8_t* nic_mac() const { return nic_mac_; }

 private:
  Options opts_;
  std::unique_ptr<NlSocket> nl_;  // rtnetlink in the namespace the pair lives in
  int host_ifindex_ = 0;
  int nic_ifindex_ = 0;
  uint32_t mtu_ = 0;
  uint32_t route_mtu_ = 0;
  uint32_t wire_mtu_ = 0;
  uint8_t host_mac_[6]{};
  uint8_t nic_mac_[6]{};
};

// Small rtnetlink/ioctl helpers the data plane shares (current namespace).
namespace link {
// ifindex of `name`, 0 if there is none.
int index_of(const std::string& name);
// MAC address of `name`; throws ov2::Error(Kernel).
void mac_of(const std::string& name, uint8_t mac[6]);
// MTU of `name`; throws ov2::Error(Kernel).
uint32_t mtu_of(const std::string& name);
// Deletes link `name` if it exists.
void remove(const std::string& name);
// Turns off TX checksum offload (the worker needs complete checksums).
void disable_tx_checksum(const std::string& name);
}  // namespace link

}  // namespace ov2
