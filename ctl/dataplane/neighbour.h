// Next-hop MAC addresses for the worker's wire transmissions, from the
// kernel's routing and neighbour tables (rtnetlink), never from configuration.
//
// NeighbourCache is what workers read: a small fixed table of seqlock slots
// keyed by destination address (no locks, no allocation).  A miss is posted to
// a bounded request queue; NeighbourResolver (its own thread) drains it, asks
// the kernel for the route (RTM_GETROUTE, output forced onto the wire
// interface) and the gateway's neighbour entry (RTM_GETNEIGH), triggers
// resolution when the entry is missing or incomplete (RTM_NEWNEIGH with
// NTF_USE), and publishes the MAC.  Published entries are refreshed every
// second so a changed MAC propagates.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

#include "common/ip_addr.h"

struct mnl_socket;

namespace ov2 {

class NeighbourCache {
 public:
  static constexpr size_t kSlots = 1024;    // direct-mapped by address hash
  static constexpr size_t kRequests = 256;  // pending misses (power of two)

  // Worker: the MAC for `addr` (family 4: first 4 bytes), or false on a miss.
  bool lookup(uint8_t family, const uint8_t* addr, uint8_t mac[6]) const;
  // Worker: asks the resolver for `addr` (drops the request if the queue is full).
  void request(uint8_t family, const uint8_t* addr);

  // Resolver side.
  void publish(const IpAddr& addr, const uint8_t mac[6]);
  void forget(const IpAddr& addr);
  // Resolver: takes up to `max` pending requests (duplicates possible).
  size_t take_requests(IpAddr* out, size_t max);
  int event_fd() const { return event_fd_; }

  NeighbourCache();
  ~NeighbourCache();
  NeighbourCache(const NeighbourCache&) = delete;
  NeighbourCache& operator=(const NeighbourCache&) = delete;

 private:
  struct alignas(64) Slot {
    std::atomic<uint32_t> seq{0};  // odd while being written
    std::atomic<uint64_t> addr_hi{0}, addr_lo{0};
    std::atomic<uint64_t> tag{0};  // bits 0..47 MAC, 48..55 family, 56 valid
  };
  struct Request {
    std::atomic<uint32_t> state{0};  // 0 free, 1 being written, 2 ready
    std::atomic<uint64_t> addr_hi{0}, addr_lo{0};
    std::atomic<uint8_t> family{0};
  };
  static size_t slot_of(uint8_t family, uint64_t hi, uint64_t lo);

  Slot slots_[kSlots];
  Request requests_[kRequests];
  std::atomic<uint64_t> req_next_{0};  // producers (workers) pick slots round robin
  int event_fd_ = -1;
};

class NeighbourResolver {
 public:
  // Starts the resolver thread in the current network namespace.  Throws
  // ov2::Error(Kernel) if rtnetlink cannot be opened.
  NeighbourResolver(NeighbourCache& cache, int wire_ifindex);
  ~NeighbourResolver();  // stops the thread
  NeighbourResolver(const NeighbourResolver&) = delete;
  NeighbourResolver& operator=(const NeighbourResolver&) = delete;

  uint64_t resolutions() const { return resolutions_.load(std::memory_order_relaxed); }
  uint64_t failures() const { return failures_.load(std::memory_order_relaxed); }

 private:
  void run();
  bool resolve(const IpAddr& dst);  // true when a MAC was published

  NeighbourCache& cache_;
  int wire_ifindex_;
  ::mnl_socket* nl_ = nullptr;
  uint32_t seq_ = 1;
  int stop_fd_ = -1;
  std::vector<IpAddr> known_;    // published, refreshed periodically
  std::vector<IpAddr> pending_;  // asked for, not resolved yet
  std::atomic<uint64_t> resolutions_{0}, failures_{0};
  std::thread thread_;
};

}  // namespace ov2
