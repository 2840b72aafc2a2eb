#include "dataplane/neighbour.h"

#include <arpa/inet.h>
#include <endian.h>
#include <libmnl/libmnl.h>
#include <linux/neighbour.h>
#include <linux/rtnetlink.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <string>

#include "common/error.h"

namespace ov2 {

namespace {

void split(const uint8_t* addr16, uint64_t* hi, uint64_t* lo) {
  std::memcpy(hi, addr16, 8);
  std::memcpy(lo, addr16 + 8, 8);
}

void addr16_of(uint8_t family, const uint8_t* addr, uint8_t out[16]) {
  std::memset(out, 0, 16);
  std::memcpy(out, addr, family == 4 ? 4 : 16);
}

uint64_t mac_bits(const uint8_t mac[6]) {
  uint64_t v = 0;
  for (int i = 0; i < 6; ++i) v |= static_cast<uint64_t>(mac[i]) << (8 * i);
  return v;
}

}  // namespace

NeighbourCache::NeighbourCache() {
  event_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (event_fd_ < 0) fail(ErrorCode::Kernel, std::string("eventfd: ") + strerror(errno));
}

NeighbourCache::~NeighbourCache() {
  if (event_fd_ >= 0) close(event_fd_);
}

size_t NeighbourCache::slot_of(uint8_t family, uint64_t hi, uint64_t lo) {
  uint64_t h = (hi * 0x9e3779b97f4a7c15ull) ^ (lo * 0xc2b2ae3d27d4eb4full) ^ family;
  return (h ^ (h >> 29)) & (kSlots - 1);
}

bool NeighbourCache::lookup(uint8_t family, const uint8_t* addr, uint8_t mac[6]) const {
  uint8_t a[16];
  addr16_of(family, addr, a);
  uint64_t hi, lo;
  split(a, &hi, &lo);
  const Slot& s = slots_[slot_of(family, hi, lo)];
  for (int attempt = 0; attempt < 4; ++attempt) {
    uint32_t s1 = s.seq.load(std::memory_order_acquire);
    if (s1 & 1) continue;
    uint64_t h = s.addr_hi.load(std::memory_order_relaxed);
    uint64_t l = s.addr_lo.load(std::memory_order_relaxed);
    uint64_t tag = s.tag.load(std::memory_order_relaxed);
    std::atomic_thread_fence(std::memory_order_acquire);
    if (s.seq.load(std::memory_order_relaxed) != s1) continue;
    if (!(tag >> 56) || ((tag >> 48) & 0xff) != family || h != hi || l != lo) return false;
    for (int i = 0; i < 6; ++i) mac[i] = static_cast<uint8_t>(tag >> (8 * i));
    return true;
  }
  return false;
}

void NeighbourCache::request(uint8_t family, const uint8_t* addr) {
  Request& r = requests_[req_next_.fetch_add(1, std::memory_order_relaxed) & (kRequests - 1)];
  uint32_t expected = 0;
  if (!r.state.compare_exchange_strong(expected, 1, std::memory_order_acquire)) return;  // queue full: dropped
  uint8_t a[16];
  addr16_of(family, addr, a);
  uint64_t hi, lo;
  split(a, &hi, &lo);
  r.addr_hi.store(hi, std::memory_order_relaxed);
  r.addr_lo.store(lo, std::memory_order_relaxed);
  r.family.store(family, std::memory_order_relaxed);
  r.state.store(2, std::memory_order_release);
  uint64_t one = 1;
  // Only on a miss, which already costs a dropped packet.
  [[maybe_unused]] ssize_t n = write(event_fd_, &one, sizeof(one));
}

size_t NeighbourCache::take_requests(IpAddr* out, size_t max) {
  uint64_t drain;
  [[maybe_unused]] ssize_t n = read(event_fd_, &drain, sizeof(drain));
  size_t got = 0;
  for (Request& r : requests_) {
    if (got == max) break;
    if (r.state.load(std::memory_order_acquire) != 2) continue;
    IpAddr a;
    a.family = r.family.load(std::memory_order_relaxed) == 4 ? Family::V4 : Family::V6;
    uint64_t hi = r.addr_hi.load(std::memory_order_relaxed), lo = r.addr_lo.load(std::memory_order_relaxed);
    std::memcpy(a.bytes.data(), &hi, 8);
    std::memcpy(a.bytes.data() + 8, &lo, 8);
    r.state.store(0, std::memory_order_release);
    out[got++] = a;
  }
  return got;
}

void NeighbourCache::publish(const IpAddr& addr, const uint8_t mac[6]) {
  uint64_t hi, lo;
  split(addr.bytes.data(), &hi, &lo);
  uint8_t family = static_cast<uint8_t>(addr.family);
  Slot& s = slots_[slot_of(family, hi, lo)];
  uint32_t seq = s.seq.load(std::memory_order_relaxed);
  s.seq.store(seq + 1, std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_release);
  s.addr_hi.store(hi, std::memory_order_relaxed);
  s.addr_lo.store(lo, std::memory_order_relaxed);
  s.tag.store(mac_bits(mac) | (static_cast<uint64_t>(family) << 48) | (1ull << 56), std::memory_order_relaxed);
  s.seq.store(seq + 2, std::memory_order_release);
}

void NeighbourCache::forget(const IpAddr& addr) {
  uint64_t hi, lo;
  split(addr.bytes.data(), &hi, &lo);
  uint8_t family = static_cast<uint8_t>(addr.family);
  Slot& s = slots_[slot_of(family, hi, lo)];
  if (s.addr_hi.load() != hi || s.addr_lo.load() != lo) return;
  uint32_t seq = s.seq.load(std::memory_order_relaxed);
  s.seq.store(seq + 1, std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_release);
  s.tag.store(0, std::memory_order_relaxed);
  s.seq.store(seq + 2, std::memory_order_release);
}

// ---------------------------------------------------------------------------

NeighbourResolver::NeighbourResolver(NeighbourCache& cache, int wire_ifindex)
    : cache_(cache), wire_ifindex_(wire_ifindex) {
  nl_ = mnl_socket_open(NETLINK_ROUTE);
  if (!nl_ || mnl_socket_bind(nl_, 0, MNL_SOCKET_AUTOPID) < 0) {
    if (nl_) mnl_socket_close(nl_);
    fail(ErrorCode::Kernel, std::string("cannot open rtnetlink for next-hop resolution: ") + strerror(errno));
  }
  timeval tv{1, 0};
  setsockopt(mnl_socket_get_fd(nl_), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  stop_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  thread_ = std::thread([this] { run(); });
}

NeighbourResolver::~NeighbourResolver() {
  uint64_t one = 1;
  [[maybe_unused]] ssize_t n = write(stop_fd_, &one, sizeof(one));
  if (thread_.joinable()) thread_.join();
  close(stop_fd_);
  mnl_socket_close(nl_);
}

namespace {

struct RouteReply {
  bool have_gateway = false;
  uint8_t gateway[16]{};
  int family = 0;
};

int route_attr_cb(const nlattr* attr, void* data) {
  auto* r = static_cast<RouteReply*>(data);
  if (mnl_attr_get_type(attr) == RTA_GATEWAY) {
    size_t len = mnl_attr_get_payload_len(attr);
    if (len == 4 || len == 16) {
      std::memcpy(r->gateway, mnl_attr_get_payload(attr), len);
      r->have_gateway = true;
    }
  }
  return MNL_CB_OK;
}

int route_cb(const nlmsghdr* nlh, void* data) {
  if (nlh->nlmsg_type != RTM_NEWROUTE) return MNL_CB_OK;
  mnl_attr_parse(nlh, sizeof(rtmsg), route_attr_cb, data);
  return MNL_CB_OK;
}

struct NeighReply {
  bool found = false;
  uint16_t state = 0;
  bool have_mac = false;
  uint8_t mac[6]{};
};

int neigh_attr_cb(const nlattr* attr, void* data) {
  auto* r = static_cast<NeighReply*>(data);
  if (mnl_attr_get_type(attr) == NDA_LLADDR && mnl_attr_get_payload_len(attr) == 6) {
    std::memcpy(r->mac, mnl_attr_get_payload(attr), 6);
    r->have_mac = true;
  }
  return MNL_CB_OK;
}

int neigh_cb(const nlmsghdr* nlh, void* data) {
  if (nlh->nlmsg_type != RTM_NEWNEIGH) return MNL_CB_OK;
  auto* r = static_cast<NeighReply*>(data);
  const auto* ndm = static_cast<const ndmsg*>(mnl_nlmsg_get_payload(nlh));
  r->found = true;
  r->state = ndm->ndm_state;
  mnl_attr_parse(nlh, sizeof(ndmsg), neigh_attr_cb, data);
  return MNL_CB_OK;
}

// One request, one reply (a message or an error/ack).  Returns mnl_cb_run's result.
int transact(mnl_socket* nl, nlmsghdr* nlh, mnl_cb_t cb, void* data) {
  if (mnl_socket_sendto(nl, nlh, nlh->nlmsg_len) < 0) return -1;
  char buf[8192];
  ssize_t n = mnl_socket_recvfrom(nl, buf, sizeof(buf));
  if (n < 0) return -1;
  return mnl_cb_run(buf, n, nlh->nlmsg_seq, mnl_socket_get_portid(nl), cb, data);
}

}  // namespace

bool NeighbourResolver::resolve(const IpAddr& dst) {
  const int af = dst.family == Family::V4 ? AF_INET : AF_INET6;
  const size_t alen = dst.size();
  uint8_t next[16]{};
  std::memcpy(next, dst.bytes.data(), alen);

  char buf[MNL_SOCKET_BUFFER_SIZE];
  {
    nlmsghdr* nlh = mnl_nlmsg_put_header(buf);
    nlh->nlmsg_type = RTM_GETROUTE;
    nlh->nlmsg_flags = NLM_F_REQUEST;
    nlh->nlmsg_seq = ++seq_;
    auto* rtm = static_cast<rtmsg*>(mnl_nlmsg_put_extra_header(nlh, sizeof(rtmsg)));
    rtm->rtm_family = af;
    rtm->rtm_dst_len = alen * 8;
    mnl_attr_put(nlh, RTA_DST, alen, dst.bytes.data());
    // Force the lookup onto the wire: the host's own route for a protected
    // destination points into the offload device.
    mnl_attr_put_u32(nlh, RTA_OIF, wire_ifindex_);
    RouteReply route;
    if (transact(nl_, nlh, route_cb, &route) >= 0 && route.have_gateway) std::memcpy(next, route.gateway, alen);
    // No route via the wire: the kernel would assume on-link; so do we.
  }
  NeighReply neigh;
  {
    nlmsghdr* nlh = mnl_nlmsg_put_header(buf);
    nlh->nlmsg_type = RTM_GETNEIGH;
    nlh->nlmsg_flags = NLM_F_REQUEST;
    nlh->nlmsg_seq = ++seq_;
    auto* ndm = static_cast<ndmsg*>(mnl_nlmsg_put_extra_header(nlh, sizeof(ndmsg)));
    ndm->ndm_family = af;
    ndm->ndm_ifindex = wire_ifindex_;
    mnl_attr_put(nlh, NDA_DST, alen, next);
    transact(nl_, nlh, neigh_cb, &neigh);
  }
  constexpr uint16_t kUsable = NUD_REACHABLE | NUD_STALE | NUD_DELAY | NUD_PROBE | NUD_PERMANENT | NUD_NOARP;
  if (neigh.found && neigh.have_mac && (neigh.state & kUsable)) {
    cache_.publish(dst, neigh.mac);
    // STALE: the kernel re-confirms only when the stack itself sends; our
    // packets bypass it, so poke it as well.
    if (!(neigh.state & (NUD_STALE | NUD_DELAY | NUD_PROBE))) return true;
  }
  // Missing, incomplete, failed or stale: ask the kernel to (re)resolve.
  nlmsghdr* nlh = mnl_nlmsg_put_header(buf);
  nlh->nlmsg_type = RTM_NEWNEIGH;
  nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_CREATE | NLM_F_REPLACE | NLM_F_ACK;
  nlh->nlmsg_seq = ++seq_;
  auto* ndm = static_cast<ndmsg*>(mnl_nlmsg_put_extra_header(nlh, sizeof(ndmsg)));
  ndm->ndm_family = af;
  ndm->ndm_ifindex = wire_ifindex_;
  ndm->ndm_state = NUD_NONE;
  ndm->ndm_flags = NTF_USE;
  mnl_attr_put(nlh, NDA_DST, alen, next);
  if (transact(nl_, nlh, nullptr, nullptr) < 0) failures_.fetch_add(1, std::memory_order_relaxed);
  return neigh.found && neigh.have_mac && (neigh.state & kUsable);
}

void NeighbourResolver::run() {
  using Clock = std::chrono::steady_clock;
  auto next_refresh = Clock::now() + std::chrono::seconds(1);
  IpAddr batch[NeighbourCache::kRequests];
  for (;;) {
    pollfd fds[2] = {{cache_.event_fd(), POLLIN, 0}, {stop_fd_, POLLIN, 0}};
    int timeout = pending_.empty() ? 1000 : 50;
    poll(fds, 2, timeout);
    if (fds[1].revents & POLLIN) return;
    size_t n = cache_.take_requests(batch, NeighbourCache::kRequests);
    for (size_t i = 0; i < n; ++i) {
      if (std::find(known_.begin(), known_.end(), batch[i]) != known_.end()) {
        resolve(batch[i]);  // evicted from its cache slot by another address: republish
      } else if (std::find(pending_.begin(), pending_.end(), batch[i]) == pending_.end() && pending_.size() < 1024) {
        pending_.push_back(batch[i]);
      }
    }
    for (auto it = pending_.begin(); it != pending_.end();) {
      if (resolve(*it)) {
        resolutions_.fetch_add(1, std::memory_order_relaxed);
        known_.push_back(*it);
        it = pending_.erase(it);
      } else {
        ++it;
      }
    }
    if (Clock::now() >= next_refresh) {
      next_refresh = Clock::now() + std::chrono::seconds(1);
      for (const IpAddr& a : known_) resolve(a);  // keeps the last good MAC if this fails
    }
  }
}

}  // namespace ov2
