#include "control/sa_database.h"

#include <algorithm>
#include <cstring>
#include <set>

#include "common/error.h"
#include "common/shrink_after_erase.h"
#include "model/sa_json.h"

namespace ov2 {

namespace {
std::string spi_text(uint32_t spi) { return handle_to_string(spi); }
}  // namespace

SaDatabase::SaDatabase(Engine& engine, uint32_t capacity) : engine_(engine), capacity_(capacity) {
  if (capacity_ == 0 || capacity_ > kHandleSlotMask + 1)
    fail(ErrorCode::Internal, "SA database capacity must be 1.." + std::to_string(kHandleSlotMask + 1));
}

void SaDatabase::check_bundle(const SaSpec& spec) const {
  const std::string inner_text = "--inner " + handle_to_string(spec.inner_handle);
  const SaRecord* inner = find(spec.inner_handle);
  if (inner == nullptr) fail(ErrorCode::InvalidArgument, inner_text + ": no SA has this handle");
  if (inner->spec.mode != Mode::Transport)
    fail(ErrorCode::InvalidArgument,
         inner_text + " is a tunnel-mode SA; the inner SA of a bundle must be a transport-mode SA");
  if (inner->spec.dir != spec.dir)
    fail(ErrorCode::InvalidArgument, inner_text + " is an " + std::string(to_string(inner->spec.dir)) +
                                         "bound SA; both SAs of a bundle must have the same direction");
  if (inner->bundled_in != 0)
    fail(ErrorCode::InvalidArgument,
         inner_text + " is already inside the bundle of SA " + handle_to_string(inner->bundled_in));
  if (inner->spec.udp_encap)
    fail(ErrorCode::InvalidArgument, inner_text +
                                         " uses UDP encapsulation; a bundle's inner SA cannot (put --encap udp on "
                                         "the tunnel SA instead)");
}

uint32_t SaDatabase::take_slot() {
  if (!free_slots_.empty()) {
    const uint32_t slot = free_slots_.back();
    free_slots_.pop_back();
    return slot;
  }
  return next_fresh_slot_++;
}

uint64_t SaDatabase::lookup_hash(const SaSpec& sa) {
  uint64_t dst[2];
  std::memcpy(dst, sa.dst.bytes.data(), sizeof dst);
  uint64_t h = (uint64_t{sa.spi} << 16 | uint64_t(sa.dst.family) << 8 | uint64_t(sa.dir)) * 0x9e3779b97f4a7c15ull;
  h ^= dst[0] * 0xc2b2ae3d27d4eb4full;
  h = (h << 29 | h >> 35) ^ dst[1] * 0x165667b19e3779f9ull;
  h ^= h >> 31;
  h *= 0xbf58476d1ce4e5b9ull;
  return h ^ (h >> 29);
}

uint64_t SaDatabase::find_by_lookup_key(const SaSpec& sa, uint64_t hash) const {
  const auto [first, last] = by_lookup_hash_.equal_range(hash);
  for (auto it = first; it != last; ++it)
    if (lookup_key(records_.at(it->second).spec) == lookup_key(sa)) return it->second;
  return 0;
}

void SaDatabase::check_addable(const SaSpec& spec, uint64_t hash) const {
  if (const uint64_t existing = find_by_lookup_key(spec, hash); existing != 0)
    fail(ErrorCode::Exists, std::string("an ") + to_string(spec.dir) + "bound SA with SPI " + spi_text(spec.spi) +
                                " and destination " + spec.dst.to_string() + " exists already (handle " +
                                handle_to_string(existing) + "); delete it first or choose another SPI");
  if (spec.inner_handle != 0) check_bundle(spec);
  if (records_.size() >= capacity_)
    fail(ErrorCode::ResourceExhausted, "the SA database is full (" + std::to_string(capacity_) +
                                           " SAs, the engine's SaOffloadCapacity); delete unused SAs first");
}

void SaDatabase::record(uint64_t handle, SaSpec spec, uint64_t hash) {
  const uint64_t inner = spec.inner_handle;
  records_.emplace(handle, SaRecord{handle, std::move(spec), 0});
  by_lookup_hash_.emplace(hash, handle);
  if (inner != 0) records_.at(inner).bundled_in = handle;
}

uint64_t SaDatabase::add(SaSpec spec) {
  validate_sa(spec);
  const uint64_t hash = lookup_hash(spec);
  check_addable(spec, hash);

  const uint32_t slot = take_slot();
  const uint64_t handle = (next_sequence_ << kHandleSlotBits) | slot;
  try {
    engine_.add_sa(handle, spec);
  } catch (...) {
    free_slots_.push_back(slot);
    throw;
  }
  // Committed: from here on nothing may throw but allocation.
  ++next_sequence_;
  record(handle, std::move(spec), hash);
  return handle;
}

bool SaDatabase::take_given_slot(uint32_t slot) {
  if (slot >= next_fresh_slot_) {
    // The slots skipped over are free.
    for (uint32_t s = next_fresh_slot_; s < slot; ++s) free_slots_.push_back(s);
    next_fresh_slot_ = slot + 1;
    return true;
  }
  auto it = std::find(free_slots_.begin(), free_slots_.end(), slot);
  if (it == free_slots_.end()) return false;
  free_slots_.erase(it);
  return true;
}

void SaDatabase::restore(uint64_t handle, SaSpec spec) {
  const uint32_t slot = handle_slot(handle);
  const uint64_t sequence = handle >> kHandleSlotBits;
  if (sequence == 0 || slot >= capacity_)
    fail(ErrorCode::InvalidArgument, "saved SA handle " + handle_to_string(handle) +
                                         " is not a handle this daemon can use (slot beyond the capacity of " +
                                         std::to_string(capacity_) + " SAs, or sequence 0)");
  validate_sa(spec);
  const uint64_t hash = lookup_hash(spec);
  check_addable(spec, hash);
  if (records_.count(handle) != 0 || (slot < next_fresh_slot_ &&
                                      std::find(free_slots_.begin(), free_slots_.end(), slot) == free_slots_.end()))
    fail(ErrorCode::Exists, "saved SA handle " + handle_to_string(handle) + ": its slot is in use by another SA");
  const auto saved_free = free_slots_;
  const uint32_t saved_fresh = next_fresh_slot_;
  take_given_slot(slot);
  try {
    engine_.add_sa(handle, spec);
  } catch (...) {
    free_slots_ = saved_free;
    next_fresh_slot_ = saved_fresh;
    throw;
  }
  raise_next_sequence(sequence + 1);
  record(handle, std::move(spec), hash);
}

void SaDatabase::raise_next_sequence(uint64_t sequence) {
  next_sequence_ = std::max(next_sequence_, sequence);
}

void SaDatabase::check_removable(const std::vector<uint64_t>& handles) const {
  const std::set<uint64_t> doomed(handles.begin(), handles.end());
  for (uint64_t h : doomed)
    if (find(h) == nullptr)
      fail(ErrorCode::NotFound, "no SA has handle " + handle_to_string(h) + "; nothing was deleted");
  for (uint64_t h : doomed) {
    const SaRecord& r = records_.at(h);
    if (r.bundled_in != 0 && !doomed.count(r.bundled_in))
      fail(ErrorCode::InvalidArgument,
           "SA " + handle_to_string(h) + " is the inner SA of the bundle " + handle_to_string(r.bundled_in) +
               "; delete " + handle_to_string(r.bundled_in) + " first (or both at once); nothing was deleted");
  }
}

void SaDatabase::remove(const std::vector<uint64_t>& handles) {
  check_removable(handles);
  std::vector<uint64_t> order(handles.begin(), handles.end());
  std::sort(order.begin(), order.end());
  order.erase(std::unique(order.begin(), order.end()), order.end());
  // Tunnel SAs of bundles first: the packet path never sees a bundle whose inner SA is gone.
  std::stable_partition(order.begin(), order.end(),
                        [this](uint64_t h) { return records_.at(h).spec.inner_handle != 0; });
  for (uint64_t h : order) {
    auto it = records_.find(h);
    engine_.delete_sa(h);
    if (it->second.spec.inner_handle != 0) {
      auto inner = records_.find(it->second.spec.inner_handle);
      if (inner != records_.end()) inner->second.bundled_in = 0;
    }
    const auto [first, last] = by_lookup_hash_.equal_range(lookup_hash(it->second.spec));
    if (auto e = std::find_if(first, last, [h](const auto& entry) { return entry.second == h; }); e != last)
      by_lookup_hash_.erase(e);
    free_slots_.push_back(handle_slot(h));
    records_.erase(it);  // SecureBytes wipes the keys
  }
  release_unused_buckets(by_lookup_hash_);
}

void SaDatabase::update_seq_hi(uint64_t handle, uint32_t seq_hi) {
  auto it = records_.find(handle);
  if (it == records_.end())
    fail(ErrorCode::InvalidArgument, "no SA has handle " + handle_to_string(handle) + " (invalid parameter)");
  if (!it->second.spec.esn)
    fail(ErrorCode::InvalidArgument, "SA " + handle_to_string(handle) +
                                         " was added without --esn; only ESN SAs have a high-order sequence number "
                                         "(invalid parameter)");
  engine_.update_sa(handle, seq_hi);
  it->second.spec.seq_hi = seq_hi;
}

const SaRecord* SaDatabase::find(uint64_t handle) const {
  auto it = records_.find(handle);
  return it == records_.end() ? nullptr : &it->second;
}

std::vector<const SaRecord*> SaDatabase::list() const {
  std::vector<const SaRecord*> out;
  out.reserve(records_.size());
  for (const auto& [h, r] : records_) out.push_back(&r);
  return out;
}

}  // namespace ov2
