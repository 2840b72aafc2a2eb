#include "dataplane/inbound_policy.h"

#include <netinet/in.h>

#include <algorithm>
#include <cstring>

namespace ov2 {

namespace {

uint16_t read_be16(const uint8_t* p) { return static_cast<uint16_t>((p[0] << 8) | p[1]); }

bool has_ports(uint8_t proto) {
  return proto == IPPROTO_TCP || proto == IPPROTO_UDP || proto == IPPROTO_UDPLITE || proto == IPPROTO_SCTP;
}

}  // namespace

bool packet_selector_of(const uint8_t* ip, uint32_t len, PacketSelector* out) {
  if (len < 1) return false;
  uint32_t l4;
  uint8_t proto;
  bool first_fragment = true;
  if ((ip[0] >> 4) == 4) {
    const uint32_t ihl = (ip[0] & 0xf) * 4u;
    if (len < 20 || ihl < 20 || ihl > len) return false;
    out->src.family = out->dst.family = Family::V4;
    std::memcpy(out->src.bytes.data(), ip + 12, 4);
    std::memcpy(out->dst.bytes.data(), ip + 16, 4);
    proto = ip[9];
    first_fragment = (read_be16(ip + 6) & 0x1fff) == 0;
    l4 = ihl;
  } else if ((ip[0] >> 4) == 6) {
    if (len < 40) return false;
    out->src.family = out->dst.family = Family::V6;
    std::memcpy(out->src.bytes.data(), ip + 8, 16);
    std::memcpy(out->dst.bytes.data(), ip + 24, 16);
    proto = ip[6];
    l4 = 40;
    // Skip the extension headers that come before the upper layer.
    for (int hops = 0; hops < 8; ++hops) {
      if (proto == IPPROTO_HOPOPTS || proto == IPPROTO_ROUTING || proto == IPPROTO_DSTOPTS) {
        if (l4 + 8 > len) break;
        const uint32_t ext_len = (ip[l4 + 1] + 1u) * 8u;
        proto = ip[l4];
        l4 += ext_len;
      } else if (proto == IPPROTO_FRAGMENT) {
        if (l4 + 8 > len) break;
        first_fragment = (read_be16(ip + l4 + 2) & 0xfff8) == 0;
        proto = ip[l4];
        l4 += 8;
      } else {
        break;
      }
    }
  } else {
    return false;
  }
  out->proto = proto;
  out->sport = out->dport = 0;
  if (has_ports(proto) && first_fragment && l4 + 4 <= len) {
    out->sport = read_be16(ip + l4);
    out->dport = read_be16(ip + l4 + 2);
  }
  return true;
}

namespace {

bool prefixes_overlap(const IpPrefix& a, const IpPrefix& b) {
  // Prefixes that share an address are nested (and of one family).
  return a.addr.family == b.addr.family && (a.contains(b) || b.contains(a));
}

bool ranges_overlap(const PortRange& a, const PortRange& b) { return a.lo <= b.hi && b.lo <= a.hi; }

}  // namespace

bool policies_overlap(const PolicySpec& a, const PolicySpec& b) {
  return prefixes_overlap(a.src, b.src) && prefixes_overlap(a.dst, b.dst) &&
         (a.proto == kAnyProto || b.proto == kAnyProto || a.proto == b.proto) && ranges_overlap(a.sport, b.sport) &&
         ranges_overlap(a.dport, b.dport);
}

InboundPolicyTable::InboundPolicyTable(const std::vector<CompiledPolicy>& ordered_policies, size_t index_budget) {
  table_.ordered = ordered_policies;
  const auto& ps = table_.ordered;
  // (handle, position) of every PROTECT policy, grouped by handle.
  std::vector<std::pair<uint64_t, uint32_t>> protect;
  for (uint32_t i = 0; i < ps.size(); ++i)
    if (ps[i].spec.action == PolicyAction::Protect) protect.emplace_back(ps[i].spec.sa_handle, i);
  std::sort(protect.begin(), protect.end());
  for (const auto& [h, i] : protect)
    if (named_.empty() || named_.back() != h) named_.push_back(h);

  size_t pairs = 0;
  for (const auto& pr : protect) pairs += pr.second;
  if (pairs > index_budget || ps.size() >= UINT32_MAX) return;  // linear scan

  std::vector<uint32_t> mark(ps.size(), UINT32_MAX);  // mark[r] == group: r is in the current SA's list
  first_.reserve(named_.size() + 1);
  size_t k = 0;
  for (uint32_t group = 0; group < named_.size(); ++group) {
    first_.push_back(static_cast<uint32_t>(candidates_.size()));
    const size_t begin = candidates_.size();
    for (; k < protect.size() && protect[k].first == named_[group]; ++k) {
      const uint32_t q = protect[k].second;
      if (mark[q] != group) {
        mark[q] = group;
        candidates_.push_back(q);
      }
      for (uint32_t r = 0; r < q; ++r)
        if (mark[r] != group && policies_overlap(ps[r].spec, ps[q].spec)) {
          mark[r] = group;
          candidates_.push_back(r);
        }
    }
    std::sort(candidates_.begin() + static_cast<std::ptrdiff_t>(begin), candidates_.end());
  }
  first_.push_back(static_cast<uint32_t>(candidates_.size()));
  indexed_ = true;
}

bool InboundPolicyTable::names(uint64_t sa_handle) const {
  return std::binary_search(named_.begin(), named_.end(), sa_handle);
}

InboundVerdict InboundPolicyTable::check(uint64_t sa_handle, const PacketSelector& s) const {
  const auto it = std::lower_bound(named_.begin(), named_.end(), sa_handle);
  if (it == named_.end() || *it != sa_handle) return InboundVerdict::Unchecked;
  const CompiledPolicy* p = nullptr;
  if (indexed_) {
    const auto group = static_cast<size_t>(it - named_.begin());
    for (uint32_t c = first_[group]; c < first_[group + 1]; ++c)
      if (policy_matches(table_.ordered[candidates_[c]].spec, s)) {
        p = &table_.ordered[candidates_[c]];
        break;
      }
  } else {
    p = table_.lookup(s);
  }
  if (p != nullptr && p->spec.action == PolicyAction::Protect && p->spec.sa_handle == sa_handle)
    return InboundVerdict::Accept;
  return InboundVerdict::Mismatch;
}

InboundPolicies::~InboundPolicies() {
  // The owner destroys this only once no worker runs.
  delete current_.load(std::memory_order_relaxed);
}

void InboundPolicies::publish(const std::vector<CompiledPolicy>& ordered_policies) {
  auto next = std::make_unique<const InboundPolicyTable>(ordered_policies);
  std::lock_guard lock(mu_);
  retired_.reserve(retired_.size() + 1);  // so nothing below throws after the swap
  const InboundPolicyTable* old = current_.exchange(next.release(), std::memory_order_acq_rel);
  if (old != nullptr) retired_.push_back({std::unique_ptr<const InboundPolicyTable>(old), epochs_.advance()});
}

size_t InboundPolicies::reclaim() {
  std::lock_guard lock(mu_);
  std::erase_if(retired_, [&](const Retired& r) { return epochs_.quiescent_since(r.epoch); });
  return retired_.size();
}

}  // namespace ov2
