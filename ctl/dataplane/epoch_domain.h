// Quiescent-state based reclamation for the tables the AF_XDP workers read
// without locks (sa_runtime.h, inbound_index.h).
#pragma once

#include <atomic>
#include <cstdint>

#include "ov2_abi.h"

namespace ov2 {

// Quiescent-state based reclamation.  Each reader (worker thread) announces the
// global epoch it has seen at the start of every batch, and "idle" before it
// blocks; an object retired at epoch E may be freed once no reader is still
// working in an epoch < E.
class EpochDomain {
 public:
  static constexpr unsigned kMaxReaders = OV2_MAX_QUEUES;

  // Reader `id`: call before touching any published pointer (start of a batch).
  void enter(unsigned id) {
    readers_[id].epoch.store(global_.load(std::memory_order_seq_cst), std::memory_order_seq_cst);
  }
  // Reader `id`: call when holding no published pointer (before blocking, on exit).
  void leave(unsigned id) { readers_[id].epoch.store(kIdle, std::memory_order_seq_cst); }

  // Writer: call after unpublishing; returns the epoch the retired object waits for.
  uint64_t advance() { return global_.fetch_add(1, std::memory_order_seq_cst) + 1; }
  // Writer: true when no reader can still hold a pointer retired at `epoch`.
  bool quiescent_since(uint64_t epoch) const {
    for (const Reader& r : readers_)
      if (r.epoch.load(std::memory_order_seq_cst) < epoch) return false;
    return true;
  }

 private:
  static constexpr uint64_t kIdle = UINT64_MAX;
  struct alignas(64) Reader {
    std::atomic<uint64_t> epoch{kIdle};
  };
  std::atomic<uint64_t> global_{1};
  Reader readers_[kMaxReaders];
};

}  // namespace ov2
