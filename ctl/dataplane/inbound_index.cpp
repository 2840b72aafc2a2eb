#include "dataplane/inbound_index.h"

#include "dataplane/epoch_domain.h"

namespace ov2 {

InboundIndex::InboundIndex() : table_(new Table(kMinBuckets)) {}

InboundIndex::~InboundIndex() {
  // Readers are gone before the index is (the SA table's owner stops the workers first).
  delete table_.load(std::memory_order_relaxed);
}

void InboundIndex::rebuild(size_t extra, EpochDomain& epochs) {
  uint64_t n = kMinBuckets;
  while (n < (live_ + extra) * 4) n <<= 1;
  const Table& old = *table_.load(std::memory_order_relaxed);
  auto fresh = std::make_unique<Table>(n);
  for (uint64_t i = 0; i <= old.mask; ++i) {
    const uint64_t w = old.buckets[i].load(std::memory_order_relaxed);
    if (!(w & kLive)) continue;
    uint64_t j = tag_of(w) & fresh->mask;
    while (fresh->buckets[j].load(std::memory_order_relaxed) != kEmpty) j = (j + 1) & fresh->mask;
    fresh->buckets[j].store(w, std::memory_order_relaxed);
  }
  tombstones_ = 0;
  // Release: readers that load the new pointer see its filled buckets.
  Table* prev = table_.exchange(fresh.release(), std::memory_order_acq_rel);
  retired_.push_back(RetiredTable{epochs.advance(), std::unique_ptr<Table>(prev)});
}

void InboundIndex::reclaim(const EpochDomain& epochs) {
  auto keep = retired_.begin();
  for (auto it = retired_.begin(); it != retired_.end(); ++it)
    if (!epochs.quiescent_since(it->epoch)) *keep++ = std::move(*it);
  retired_.erase(keep, retired_.end());
}

}  // namespace ov2
