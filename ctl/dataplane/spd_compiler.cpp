// SPD compiler: policies -> (LPM trie over destinations, entry array); see
// spd_compiler.h.
#include "dataplane/spd_compiler.h"

#include <bpf/bpf.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <set>
#include <string>

#include "common/error.h"

namespace ov2 {
namespace {

uint8_t family_byte(Family f) { return f == Family::V4 ? OV2_AF_INET : OV2_AF_INET6; }

// The prefix with every bit beyond `len` cleared.
IpPrefix truncated(const IpPrefix& p, uint8_t len) {
  IpPrefix out{p.addr, len};
  for (unsigned bit = len; bit < 128; ++bit)
    out.addr.bytes[bit / 8] = static_cast<uint8_t>(out.addr.bytes[bit / 8] & ~(0x80u >> (bit % 8)));
  return out;
}

ov2_spd_trie_key trie_key_of(const IpPrefix& dst) {
  ov2_spd_trie_key key{};
  key.prefixlen = 32u + dst.len;  // family byte and its 3 zero pad bytes come first
  key.family = family_byte(dst.addr.family);
  const IpPrefix clean = truncated(dst, dst.len);
  std::memcpy(key.daddr, clean.addr.bytes.data(), sizeof(key.daddr));
  return key;
}

ov2_spd_entry entry_of(const CompiledPolicy& p) {
  ov2_spd_entry e{};
  const IpPrefix src = truncated(p.spec.src, p.spec.src.len);
  std::memcpy(e.saddr, src.addr.bytes.data(), sizeof(e.saddr));
  e.src_prefixlen = p.spec.src.len;
  e.family = family_byte(p.spec.dst.addr.family);
  e.action = static_cast<uint8_t>(p.spec.action);
  e.valid = 1;
  e.proto = p.spec.proto;
  e.sport_lo = p.spec.sport.lo;
  e.sport_hi = p.spec.sport.hi;
  e.dport_lo = p.spec.dport.lo;
  e.dport_hi = p.spec.dport.hi;
  e.priority = p.spec.priority;
  e.policy_id = p.id;
  if (p.spec.action == PolicyAction::Protect) {
    e.offload_handle = p.offload_handle;
    e.tunnel_handle = p.tunnel_handle;
  }
  return e;
}

std::string bytes_of(const void* p, size_t n) { return std::string(static_cast<const char*>(p), n); }

[[noreturn]] void fail_map_write(const std::string& what, int err) {
  if (err == E2BIG || err == ENOSPC || err == ENOMEM)
    fail(ErrorCode::ResourceExhausted, what + ": " + std::strerror(err) + " (the SPD maps hold " +
                                           std::to_string(OV2_MAX_POLICIES) + " entries per direction)");
  fail(ErrorCode::Kernel, what + ": " + std::strerror(err));
}

}  // namespace

CompiledSpd compile_spd(const std::vector<CompiledPolicy>& policies) {
  if (policies.size() > OV2_MAX_POLICIES)
    fail(ErrorCode::ResourceExhausted, std::to_string(policies.size()) + " outbound policies; at most " +
                                           std::to_string(OV2_MAX_POLICIES) + " fit the data plane");
  CompiledSpd out;
  out.entries.reserve(policies.size());
  for (const CompiledPolicy& p : policies) out.entries.push_back(entry_of(p));

  // Policies by their (clean) destination prefix; each bucket best first.
  std::map<IpPrefix, std::vector<uint32_t>> by_dst;
  for (uint32_t slot = 0; slot < policies.size(); ++slot) {
    const IpPrefix& dst = policies[slot].spec.dst;
    by_dst[truncated(dst, dst.len)].push_back(slot);
  }
  auto better = [&](uint32_t a, uint32_t b) {
    const auto& pa = policies[a];
    const auto& pb = policies[b];
    if (pa.spec.priority != pb.spec.priority) return pa.spec.priority < pb.spec.priority;
    if (pa.id != pb.id) return pa.id < pb.id;
    return a < b;
  };

  // One leaf per distinct destination prefix.  The longest leaf containing a
  // packet's destination is covered by every policy prefix that contains the
  // destination (they are nested and all leaves), so walking the leaf's
  // ancestors finds exactly the policies that can match.
  out.trie.reserve(by_dst.size());
  for (const auto& [leaf, unused] : by_dst) {
    (void)unused;
    std::vector<uint32_t> slots;
    for (unsigned len = 0; len <= leaf.len; ++len) {
      auto it = by_dst.find(truncated(leaf, static_cast<uint8_t>(len)));
      if (it != by_dst.end()) slots.insert(slots.end(), it->second.begin(), it->second.end());
    }
    std::sort(slots.begin(), slots.end(), better);
    if (slots.size() > OV2_SPD_MAX_CANDIDATES) {
      std::string ids;
      for (uint32_t s : slots) ids += (ids.empty() ? "" : ", ") + std::to_string(policies[s].id);
      fail(ErrorCode::ResourceExhausted, "destination " + leaf.to_string() + " is covered by " +
                                             std::to_string(slots.size()) + " outbound policies (" + ids +
                                             "); at most " + std::to_string(OV2_SPD_MAX_CANDIDATES) +
                                             " may overlap one destination: merge or narrow some of them");
    }
    ov2_spd_candidates cands{};
    cands.count = static_cast<uint32_t>(slots.size());
    std::copy(slots.begin(), slots.end(), cands.ids);
    out.trie.emplace_back(trie_key_of(leaf), cands);
  }
  return out;
}

CompiledSpd load_spd(int trie_fd, int entries_fd, const CompiledSpd& spd, const CompiledSpd* previous) {
  const size_t capacity = OV2_MAX_POLICIES;
  if (spd.entries.size() > capacity)
    fail(ErrorCode::ResourceExhausted, "compiled SPD has " + std::to_string(spd.entries.size()) +
                                           " entries; the map holds " + std::to_string(capacity));
  std::vector<bool> previously_used(capacity, false);
  std::map<std::string, std::vector<uint32_t>> previous_slots_by_content;
  if (previous) {
    for (uint32_t slot = 0; slot < previous->entries.size() && slot < capacity; ++slot) {
      const ov2_spd_entry& e = previous->entries[slot];
      if (!e.valid) continue;
      previously_used[slot] = true;
      previous_slots_by_content[bytes_of(&e, sizeof(e))].push_back(slot);
    }
  }

  // Placement: identical entries keep their slot; the rest take slots the old
  // view does not reference.
  constexpr uint32_t kUnplaced = UINT32_MAX;
  std::vector<uint32_t> slot_of(spd.entries.size(), kUnplaced);
  std::vector<bool> claimed(capacity, false);
  for (size_t i = 0; i < spd.entries.size(); ++i) {
    auto it = previous_slots_by_content.find(bytes_of(&spd.entries[i], sizeof(ov2_spd_entry)));
    if (it == previous_slots_by_content.end() || it->second.empty()) continue;
    slot_of[i] = it->second.back();
    it->second.pop_back();
    claimed[slot_of[i]] = true;
  }
  uint32_t next_free = 0;
  for (size_t i = 0; i < spd.entries.size(); ++i) {
    if (slot_of[i] != kUnplaced) continue;
    while (next_free < capacity && (claimed[next_free] || previously_used[next_free])) ++next_free;
    if (next_free < capacity) {
      slot_of[i] = next_free;
      claimed[next_free] = true;
    }
  }
  // Too full for a clean placement: reuse stale slots (the only case where an
  // old leaf can briefly see a new entry).
  uint32_t next_stale = 0;
  for (size_t i = 0; i < spd.entries.size(); ++i) {
    if (slot_of[i] != kUnplaced) continue;
    while (next_stale < capacity && claimed[next_stale]) ++next_stale;
    slot_of[i] = next_stale;
    claimed[next_stale] = true;
  }

  CompiledSpd loaded;
  uint32_t highest = 0;
  for (uint32_t s : slot_of) highest = std::max(highest, s + 1);
  loaded.entries.assign(highest, ov2_spd_entry{});
  for (size_t i = 0; i < spd.entries.size(); ++i) loaded.entries[slot_of[i]] = spd.entries[i];
  loaded.trie = spd.trie;
  for (auto& [key, cands] : loaded.trie) {
    for (uint32_t c = 0; c < cands.count && c < OV2_SPD_MAX_CANDIDATES; ++c) {
      if (cands.ids[c] >= slot_of.size())
        fail(ErrorCode::Internal, "compiled SPD leaf refers to entry " + std::to_string(cands.ids[c]) + " of " +
                                      std::to_string(slot_of.size()));
      cands.ids[c] = slot_of[cands.ids[c]];
    }
  }

  // 1. entries, 2. leaves, 3. stale leaves, 4. stale entries.
  for (size_t i = 0; i < spd.entries.size(); ++i) {
    const uint32_t slot = slot_of[i];
    if (bpf_map_update_elem(entries_fd, &slot, &spd.entries[i], BPF_ANY) != 0)
      fail_map_write("writing SPD entry " + std::to_string(slot), errno);
  }
  std::set<std::string> new_leaves;
  for (const auto& [key, cands] : loaded.trie) {
    new_leaves.insert(bytes_of(&key, sizeof(key)));
    if (bpf_map_update_elem(trie_fd, &key, &cands, BPF_ANY) != 0) fail_map_write("writing an SPD trie leaf", errno);
  }
  if (previous) {
    for (const auto& [key, cands] : previous->trie) {
      (void)cands;
      if (new_leaves.count(bytes_of(&key, sizeof(key)))) continue;
      if (bpf_map_delete_elem(trie_fd, &key) != 0 && errno != ENOENT)
        fail_map_write("deleting a stale SPD trie leaf", errno);
    }
    const ov2_spd_entry invalid{};
    for (uint32_t slot = 0; slot < capacity; ++slot) {
      if (!previously_used[slot] || claimed[slot]) continue;
      if (bpf_map_update_elem(entries_fd, &slot, &invalid, BPF_ANY) != 0)
        fail_map_write("clearing stale SPD entry " + std::to_string(slot), errno);
    }
  }
  return loaded;
}

}  // namespace ov2
