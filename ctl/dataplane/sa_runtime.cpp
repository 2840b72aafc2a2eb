#include "dataplane/sa_runtime.h"

#include <endian.h>

#include <algorithm>
#include <cstring>
#include <string>

#include "common/error.h"

namespace ov2 {

ov2_sa_key inbound_key_for(const SaSpec& spec) {
  ov2_sa_key key{};
  key.spi_be = htobe32(spec.spi);
  key.family = spec.dst.family == Family::V4 ? OV2_AF_INET : OV2_AF_INET6;
  std::memcpy(key.daddr, spec.dst.bytes.data(), spec.dst.size());
  return key;
}

struct SaRuntime::Retired {
  uint64_t epoch;
  std::unique_ptr<SaRuntimeEntry> entry;
};

SaRuntime::SaRuntime(uint32_t capacity, unsigned crypto_slots)
    : capacity_(capacity),
      crypto_slots_(crypto_slots ? crypto_slots : 1),
      slots_(new std::atomic<SaRuntimeEntry*>[capacity]) {
  if (capacity == 0 || capacity > kSlotMask + 1) fail(ErrorCode::InvalidArgument, "SA table capacity must be 1..2^24");
  for (uint32_t i = 0; i < capacity; ++i) slots_[i].store(nullptr, std::memory_order_relaxed);
}

// Workers are stopped before the table goes away (Dataplane owns the order).
SaRuntime::~SaRuntime() {
  for (uint32_t i = 0; i < used_slots_; ++i) delete slots_[i].load(std::memory_order_relaxed);
}

SaRuntimeEntry* SaRuntime::installed_locked(uint64_t handle) const {
  const uint64_t slot = handle & kSlotMask;
  if (slot >= used_slots_) return nullptr;
  SaRuntimeEntry* e = slots_[slot].load(std::memory_order_relaxed);
  return (e && e->handle == handle) ? e : nullptr;
}

const ov2_sa_key& SaRuntime::key_of_slot_locked(uint32_t slot) const {
  return slots_[slot].load(std::memory_order_relaxed)->key;
}

const SaRuntimeEntry* SaRuntime::find_inbound(const ov2_sa_key& key) const {
  return index_.find(
      key,
      [this](uint32_t slot) -> const SaRuntimeEntry* {
        const SaRuntimeEntry* e = slots_[slot].load(std::memory_order_acquire);
        return (e && e->dir == Direction::In) ? e : nullptr;
      },
      [](const SaRuntimeEntry* e) -> const ov2_sa_key& { return e->key; });
}

void SaRuntime::install(uint64_t handle, const SaSpec& spec) {
  if (handle == 0) fail(ErrorCode::InvalidArgument, "SA handle 0 is reserved (it means \"no offload\")");
  uint64_t slot = handle & kSlotMask;
  if (slot >= capacity_)
    fail(ErrorCode::ResourceExhausted, "SA handle slot " + std::to_string(slot) +
                                           " is beyond the worker's SA capacity " + std::to_string(capacity_) +
                                           "; raise the capacity");
  auto e = std::make_unique<SaRuntimeEntry>();
  e->handle = handle;
  e->dir = spec.dir;
  e->inner_handle = spec.inner_handle;
  if (spec.dir == Direction::Out) {
    e->outbound = std::make_unique<esp::OutboundSa>(spec, esp::monotonic_now_ns(), crypto_slots_);
  } else {
    e->key = inbound_key_for(spec);
    e->inbound = std::make_unique<esp::InboundSa>(spec, esp::monotonic_now_ns());
  }
  std::lock_guard lock(mu_);
  if (slots_[slot].load(std::memory_order_relaxed) != nullptr)
    fail(ErrorCode::Exists, "SA slot " + std::to_string(slot) + " is in use; remove that SA first");
  if (e->dir == Direction::In) {
    const uint32_t taken = index_.insert(
        e->key, static_cast<uint32_t>(slot),
        [this](uint32_t s) -> const ov2_sa_key& { return key_of_slot_locked(s); }, epochs_);
    if (taken != InboundIndex::kNoSlot)
      fail(ErrorCode::Exists, "an inbound SA with this SPI and destination is installed (handle " +
                                  std::to_string(slots_[taken].load(std::memory_order_relaxed)->handle) + ")");
  }
  // Readers that find the index bucket before this store see no entry yet: a miss, as before the install.
  // From here the slot owns the entry (remove() retires it, the destructor deletes it).
  slots_[slot].store(e.release(), std::memory_order_release);
  used_slots_ = std::max(used_slots_, static_cast<uint32_t>(slot) + 1);
  ++installed_count_;
}

void SaRuntime::remove(uint64_t handle) {
  std::lock_guard lock(mu_);
  std::unique_ptr<SaRuntimeEntry> e(installed_locked(handle));
  if (!e) fail(ErrorCode::NotFound, "no SA with handle " + std::to_string(handle) + " in the worker");
  --installed_count_;
  const uint32_t slot = static_cast<uint32_t>(handle & kSlotMask);
  if (e->dir == Direction::In)
    index_.erase(
        e->key, slot, [this](uint32_t s) -> const ov2_sa_key& { return key_of_slot_locked(s); }, epochs_);
  slots_[slot].store(nullptr, std::memory_order_seq_cst);
  retired_.push_back(Retired{epochs_.advance(), std::move(e)});
}

void SaRuntime::update_seq_hi(uint64_t handle, uint32_t seq_hi) {
  std::lock_guard lock(mu_);
  SaRuntimeEntry* e = installed_locked(handle);
  if (e == nullptr) fail(ErrorCode::NotFound, "no SA with handle " + std::to_string(handle) + " in the worker");
  bool ok = e->outbound ? e->outbound->set_seq_hi(seq_hi) : e->inbound->set_seq_hi(seq_hi);
  if (!ok) fail(ErrorCode::InvalidArgument, "SA " + std::to_string(handle) + " is not an ESN SA; UPDATE_SA needs ESN");
}

SaRuntimeCounters SaRuntime::counters(uint64_t handle) const {
  std::lock_guard lock(mu_);
  const SaRuntimeEntry* found = installed_locked(handle);
  if (found == nullptr) fail(ErrorCode::NotFound, "no SA with handle " + std::to_string(handle) + " in the worker");
  const SaRuntimeEntry& e = *found;
  const esp::SaCounters& c = e.outbound ? e.outbound->counters() : e.inbound->counters();
  SaRuntimeCounters out;
  out.packets = c.packets.load(std::memory_order_relaxed);
  out.bytes = c.bytes.load(std::memory_order_relaxed);
  for (size_t i = 0; i < out.by_reason.size(); ++i) out.by_reason[i] = c.by_reason[i].load(std::memory_order_relaxed);
  // highest_seq() of an inbound SA is written by its worker: a torn read is
  // impossible on 64-bit targets and the value is informational.
  if (e.outbound)
    out.next_seq = e.outbound->next_seq();
  else
    out.highest_seq = e.inbound->highest_seq();
  return out;
}

std::vector<uint64_t> SaRuntime::outbound_delete_requests() const {
  std::lock_guard lock(mu_);
  std::vector<uint64_t> out;
  for (uint32_t i = 0; i < used_slots_; ++i) {
    const SaRuntimeEntry* e = slots_[i].load(std::memory_order_relaxed);
    if (e && e->outbound && e->outbound->delete_requested()) out.push_back(e->handle);
  }
  return out;
}

size_t SaRuntime::reclaim(size_t* freed) {
  std::vector<Retired> to_free;
  {
    std::lock_guard lock(mu_);
    auto keep = retired_.begin();
    for (auto it = retired_.begin(); it != retired_.end(); ++it) {
      if (epochs_.quiescent_since(it->epoch))
        to_free.push_back(std::move(*it));
      else
        *keep++ = std::move(*it);
    }
    retired_.erase(keep, retired_.end());
    // Capacity left by a bulk delete (16 bytes per SA) goes back too.
    if (retired_.empty() && retired_.capacity() > 1024) retired_.shrink_to_fit();
    index_.reclaim(epochs_);
  }
  size_t left;
  {
    std::lock_guard lock(mu_);
    left = retired_.size() + index_.retired_tables();
  }
  if (freed != nullptr) *freed = to_free.size();
  return left;  // to_free's destructors wipe the keys here, outside the lock
}

bool SaRuntime::inbound_key_of(uint64_t handle, ov2_sa_key* key) const {
  std::lock_guard lock(mu_);
  const SaRuntimeEntry* e = installed_locked(handle);
  if (e == nullptr || e->dir != Direction::In) return false;
  *key = e->key;
  return true;
}

bool SaRuntime::contains(uint64_t handle) const {
  std::lock_guard lock(mu_);
  return installed_locked(handle) != nullptr;
}

size_t SaRuntime::size() const {
  std::lock_guard lock(mu_);
  return installed_count_;
}

}  // namespace ov2
