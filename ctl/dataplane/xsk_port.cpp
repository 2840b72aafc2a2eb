#include "dataplane/xsk_port.h"

#include <linux/if_xdp.h>
#include <sys/socket.h>

#include <cstdlib>
#include <cstring>

#include "common/error.h"

#ifndef XDP_MAX_TX_SKB_BUDGET
#define XDP_MAX_TX_SKB_BUDGET 9  // <linux/if_xdp.h> of Linux 6.17; Debian 12's headers predate it
#endif

namespace ov2 {

XskPort::XskPort(Umem& umem, const std::string& ifname, uint32_t queue, const Config& cfg)
    : ifname_(ifname), queue_(queue) {
  // libxdp probes for its dispatcher even when told not to load a program on
  // some paths; the probe needs freplace, which this platform refuses.
  setenv("LIBXDP_SKIP_DISPATCHER", "1", 0);
  xsk_socket_config scfg{};
  scfg.rx_size = cfg.rx_size;
  scfg.tx_size = cfg.tx_size;
  scfg.libxdp_flags = XSK_LIBXDP_FLAGS__INHIBIT_PROG_LOAD;
  scfg.xdp_flags = 0;
  // Ignored by the kernel for the second socket on the UMEM (it inherits the
  // first one's mode), required for the first.
  scfg.bind_flags = XDP_COPY | XDP_USE_NEED_WAKEUP;
  int err = xsk_socket__create_shared(&xsk_, ifname.c_str(), queue, umem.handle(), &rx, &tx, &fill, &comp, &scfg);
  if (err)
    fail(ErrorCode::Kernel, "cannot create an AF_XDP socket on " + ifname + " queue " + std::to_string(queue) + ": " +
                                strerror(-err) + " (does the interface exist and have that many queues?)");
  // Copy mode sends at most 32 descriptors per sendto unless told more (Linux
  // 6.17+, range [32, TX ring entries]): one kick then drains a whole batch.
  // Older kernels answer ENOPROTOOPT and keep 32.
  uint32_t budget = cfg.tx_size;
  if (setsockopt(fd(), SOL_XDP, XDP_MAX_TX_SKB_BUDGET, &budget, sizeof(budget)) == 0) tx_budget_ = budget;
}

XskPort::~XskPort() {
  if (xsk_) xsk_socket__delete(xsk_);
}

int XskPort::fd() const { return xsk_socket__fd(xsk_); }

XskPort::Stats XskPort::stats() const {
  xdp_statistics st{};
  socklen_t len = sizeof(st);
  Stats out;
  if (getsockopt(fd(), SOL_XDP, XDP_STATISTICS, &st, &len) != 0) return out;
  out.rx_dropped = st.rx_dropped;
  out.rx_invalid_descs = st.rx_invalid_descs;
  out.tx_invalid_descs = st.tx_invalid_descs;
  out.rx_ring_full = st.rx_ring_full;
  out.rx_fill_ring_empty_descs = st.rx_fill_ring_empty_descs;
  out.tx_ring_empty_descs = st.tx_ring_empty_descs;
  return out;
}

void XskPort::register_in(int xsks_map_fd) {
  int err = xsk_socket__update_xskmap(xsk_, xsks_map_fd);
  if (err)
    fail(ErrorCode::Kernel, "cannot register the AF_XDP socket of " + ifname_ + " queue " + std::to_string(queue_) +
                                " in the xsks map: " + strerror(-err));
}

}  // namespace ov2
