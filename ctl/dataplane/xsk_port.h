// One AF_XDP socket bound to (interface, queue) on a shared UMEM, with its four
// rings.  Copy mode with need-wakeup (veth offers nothing else); no XDP program
// is loaded by libxdp: BpfPrograms owns the programs, the socket is registered
// in their xsks map.
#pragma once

#include <xdp/xsk.h>

#include <cstdint>
#include <string>

#include "dataplane/umem.h"

namespace ov2 {

class XskPort {
 public:
  struct Config {
    uint32_t rx_size = 2048;
    uint32_t tx_size = 2048;
  };

  // Creates and binds the socket.  Throws ov2::Error(Kernel) naming the interface.
  XskPort(Umem& umem, const std::string& ifname, uint32_t queue, const Config& cfg);
  ~XskPort();
  XskPort(const XskPort&) = delete;
  XskPort& operator=(const XskPort&) = delete;

  // The kernel's counters for this socket (XDP_STATISTICS): RX drops because
  // the RX ring was full or the fill ring empty, invalid descriptors.
  struct Stats {
    uint64_t rx_dropped = 0;
    uint64_t rx_invalid_descs = 0;
    uint64_t tx_invalid_descs = 0;
    uint64_t rx_ring_full = 0;
    uint64_t rx_fill_ring_empty_descs = 0;
    uint64_t tx_ring_empty_descs = 0;
  };
  Stats stats() const;  // zeros if the kernel refuses

  // Puts this socket into `xsks_map_fd` at its queue index.  Throws on failure.
  void register_in(int xsks_map_fd);
  int fd() const;
  // Descriptors one sendto hands to the driver: the TX ring size where the
  // kernel takes XDP_MAX_TX_SKB_BUDGET, else the kernel's fixed 32.
  uint32_t tx_budget() const { return tx_budget_; }
  const std::string& ifname() const { return ifname_; }
  uint32_t queue() const { return queue_; }

  xsk_ring_cons rx{};
  xsk_ring_prod tx{};
  xsk_ring_prod fill{};
  xsk_ring_cons comp{};

 private:
  xsk_socket* xsk_ = nullptr;
  std::string ifname_;
  uint32_t queue_;
  uint32_t tx_budget_ = 32;
};

}  // namespace ov2
