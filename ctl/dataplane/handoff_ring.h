// A bounded single-producer/single-consumer ring of fixed-size byte slots: how
// one AF_XDP worker hands a received frame to the worker that owns the frame's
// inbound SA (its anti-replay window is single-threaded, esp.h).  Like VPP's
// handoff to the SA's thread, but the bytes are copied: the two workers have
// different UMEMs, and the sender recycles its own frame at once.
//
// All memory is allocated by the constructor; push/front/pop never allocate,
// lock or make a system call.  Exactly one thread may push and exactly one
// (other) thread may front/pop.  head_ and tail_ are free-running counters
// (wrap at 2^32; capacity is a power of two), on separate cache lines, each
// side keeping a cached copy of the other's counter so that the shared line is
// read only when the cached view says "full" or "empty".
//
// A record bigger than one slot (a reassembled datagram) takes as many
// consecutive slots as it needs, its bytes contiguous: a record never wraps
// around the end of the storage -- the slots left there are published as one
// skip record, which front() passes over.  A record may take up to half the
// ring (so that it always fits once the ring is empty).
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>

#include "common/error.h"

namespace ov2 {

class HandoffRing {
 public:
  // One handed-off frame: the bytes and where in its frame they started (the
  // consumer puts them at the same offset, so the headroom is the same).
  struct Slot {
    uint32_t len;
    uint32_t offset;
    uint32_t span;  // slots the record takes, this one included
    uint8_t* data() { return reinterpret_cast<uint8_t*>(this + 1); }
    const uint8_t* data() const { return reinterpret_cast<const uint8_t*>(this + 1); }
  };

  // `capacity` slots (a power of two, 2..65536) of up to `slot_bytes` bytes
  // each.  Throws ov2::Error(InvalidArgument).
  HandoffRing(uint32_t capacity, uint32_t slot_bytes)
      : capacity_(capacity),
        mask_(capacity - 1),
        slot_bytes_(slot_bytes),
        stride_((sizeof(Slot) + slot_bytes + 63) & ~size_t{63}) {
    if (capacity < 2 || capacity > 65536 || (capacity & (capacity - 1)) != 0)
      fail(ErrorCode::InvalidArgument, "handoff ring capacity must be a power of two in 2..65536");
    if (slot_bytes == 0) fail(ErrorCode::InvalidArgument, "handoff ring slots must hold at least one byte");
    storage_.reset(new (std::align_val_t{64}) uint8_t[stride_ * capacity]);
  }
  HandoffRing(const HandoffRing&) = delete;
  HandoffRing& operator=(const HandoffRing&) = delete;

  uint32_t capacity() const { return capacity_; }
  uint32_t slot_bytes() const { return slot_bytes_; }
  // The longest record push() takes (several slots, at most half the ring).
  uint32_t max_record_bytes() const {
    const size_t bytes = std::max<size_t>(1, capacity_ / 2) * stride_ - sizeof(Slot);
    return static_cast<uint32_t>(std::min<size_t>(bytes, UINT32_MAX));
  }

  // --- producer ---------------------------------------------------------------
  // Copies `len` bytes into the next slot(s) and publishes them.  False
  // (nothing written) if the ring has no room for them now, or `len` exceeds
  // max_record_bytes().
  bool push(const uint8_t* data, uint32_t len, uint32_t offset) {
    const size_t bytes = sizeof(Slot) + size_t(len);
    const uint32_t span = static_cast<uint32_t>((bytes + stride_ - 1) / stride_);
    if (span > 1 && span > capacity_ / 2) return false;
    uint32_t tail = prod_.tail_local;
    const uint32_t at = tail & mask_;
    const uint32_t skip = at + span > capacity_ ? capacity_ - at : 0;  // the slots left before the end
    if (tail + skip + span - prod_.head_cached > capacity_) {
      prod_.head_cached = head_.value.load(std::memory_order_acquire);  // the consumer's progress
      if (tail + skip + span - prod_.head_cached > capacity_) return false;
    }
    if (skip) {
      Slot* pad = slot(tail);
      pad->len = kSkip;
      pad->offset = 0;
      pad->span = skip;
      tail += skip;
    }
    Slot* s = slot(tail);
    s->len = len;
    s->offset = offset;
    s->span = span;
    std::memcpy(s->data(), data, len);
    prod_.tail_local = tail + span;
    tail_.value.store(tail + span, std::memory_order_release);  // the slots' bytes before the new tail
    return true;
  }

  // --- consumer ---------------------------------------------------------------
  // The oldest unconsumed record, or nullptr if the ring is empty.  Stays
  // valid (the producer does not touch it) until pop().
  const Slot* front() {
    for (;;) {
      const uint32_t head = cons_.head_local;
      if (head == cons_.tail_cached) {
        cons_.tail_cached = tail_.value.load(std::memory_order_acquire);  // pairs with push's release
        if (head == cons_.tail_cached) return nullptr;
      }
      const Slot* s = slot(head);
      if (s->len != kSkip) return s;
      pop();  // the slots before the end that a record did not fit in
    }
  }
  // Gives the record front() returned back to the producer.
  void pop() {
    cons_.head_local += slot(cons_.head_local)->span;
    head_.value.store(cons_.head_local, std::memory_order_release);  // our reads of the slots before their reuse
  }

  // --- either side (also other threads; a snapshot) ---------------------------
  // True if nothing is published and unconsumed (a skip record left alone
  // counts as something until front() passes it).  The consumer calls it after a
  // seq_cst fence before sleeping (see Worker::run).
  bool empty() const {
    return head_.value.load(std::memory_order_acquire) == tail_.value.load(std::memory_order_acquire);
  }
  // Slots in use (a record of several slots counts as several).
  uint32_t size() const {
    return tail_.value.load(std::memory_order_acquire) - head_.value.load(std::memory_order_acquire);
  }

 private:
  struct AlignedDeleter {
    void operator()(uint8_t* p) const { ::operator delete[](p, std::align_val_t{64}); }
  };
  struct alignas(64) Counter {
    std::atomic<uint32_t> value{0};
  };
  struct alignas(64) ProducerView {
    uint32_t tail_local = 0;
    uint32_t head_cached = 0;
  };
  struct alignas(64) ConsumerView {
    uint32_t head_local = 0;
    uint32_t tail_cached = 0;
  };

  static constexpr uint32_t kSkip = UINT32_MAX;  // Slot::len of a skip record

  Slot* slot(uint32_t index) const { return reinterpret_cast<Slot*>(storage_.get() + stride_ * (index & mask_)); }

  const uint32_t capacity_;
  const uint32_t mask_;
  const uint32_t slot_bytes_;
  const size_t stride_;
  std::unique_ptr<uint8_t[], AlignedDeleter> storage_;
  Counter head_;  // written by the consumer
  Counter tail_;  // written by the producer
  ProducerView prod_;
  ConsumerView cons_;
};

}  // namespace ov2
