// Which SAs counted a failed packet, from a worker to the daemon thread, so
// that the daemon's periodic check (Observability::on_tick) reads the
// counters of those SAs instead of every SA's.
//
// A single-producer single-consumer ring of SA handles: the worker calls
// note() on its failure path only (never per successful packet), the daemon
// thread take()s.  A run of failures on one SA is noted once per take().  When the ring
// is full a note is dropped and take() returns false once: the reader must
// then look at every SA (it learns nothing wrong, only less).  The SA's
// failure counter must be bumped before note(): a reader that takes the note
// (or the lost flag) sees the count.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <vector>

namespace ov2 {

class FailureNotes {
 public:
  static constexpr uint32_t kCapacity = 64;

  // Producer (one thread).
  void note(uint64_t sa_handle) {
    const uint64_t n = written_.load(std::memory_order_relaxed);
    const uint64_t read = read_.load(std::memory_order_acquire);
    // The same SA again while its note waits (or was lost, and flagged): once
    // is enough.  After a take() it is noted again: the reader may have
    // found nothing to report the first time (a failure kind it does not
    // report), and this failure may be one it does.
    if (sa_handle == last_ && read != n) return;
    last_ = sa_handle;
    if (n - read >= kCapacity) {
      lost_.store(true, std::memory_order_release);
      return;
    }
    notes_[n % kCapacity].store(sa_handle, std::memory_order_relaxed);
    written_.store(n + 1, std::memory_order_release);
  }

  // Consumer (one thread): appends the handles noted since the last call (a
  // handle may repeat); false if some were dropped since then.
  bool take(std::vector<uint64_t>& out) {
    // The flag first: a note dropped after this exchange leaves it set for the next call.
    const bool complete = !lost_.exchange(false, std::memory_order_acquire);
    const uint64_t written = written_.load(std::memory_order_acquire);
    const uint64_t read = read_.load(std::memory_order_relaxed);
    for (uint64_t i = read; i < written; ++i) out.push_back(notes_[i % kCapacity].load(std::memory_order_relaxed));
    read_.store(written, std::memory_order_release);  // the producer may reuse those entries
    return complete;
  }

 private:
  std::array<std::atomic<uint64_t>, kCapacity> notes_{};
  std::atomic<uint64_t> written_{0};
  std::atomic<uint64_t> read_{0};
  std::atomic<bool> lost_{false};
  uint64_t last_ = 0;  // producer only
};

}  // namespace ov2
