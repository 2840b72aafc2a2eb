// Giving container memory back after bulk deletes.  std::unordered_map never
// shrinks its bucket array by itself: one that once held 200 000 SAs keeps
// 351 061 buckets (2.8 MB) after they are all deleted.
#pragma once

namespace ov2 {

// Call after an erase: when fewer than one entry per 8 buckets is left,
// rehash to the size the entries need.  O(size) per shrink, and the next
// shrink needs 7/8 of the entries deleted again: O(1) amortized per erase,
// and add/delete around one size never rehashes back and forth.
template <class UnorderedMap>
void release_unused_buckets(UnorderedMap& map) {
  if (map.bucket_count() > 64 && map.size() * 8 < map.bucket_count()) map.rehash(0);
}

}  // namespace ov2
