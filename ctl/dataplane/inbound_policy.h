// The inbound SPD as the AF_XDP workers check decrypted packets against it
// (RFC 4301 §5.2 step 4 / §4.4.1): after a successful decapsulation, the
// highest-priority inbound policy whose selectors match the inner packet must
// be PROTECT naming the SA the packet came in on (for a bundle: the tunnel SA,
// which is what an inbound bundle policy names).  Anything else -- no matching
// policy, BYPASS, DISCARD, PROTECT with another SA -- is a policy mismatch.
//
// An SA that no inbound policy names at all is not checked (the packet is
// accepted as before): SAs are often installed with only an outbound policy,
// or with none (tests, `sa add` before `policy add`), and dropping everything
// they carry would break those setups.  Once any inbound policy names the SA,
// every packet it carries is checked.
//
// Concurrency: the control side builds an immutable InboundPolicyTable and
// publishes it with one atomic raw pointer; workers load it once per packet
// (acquire; no lock, no reference count -- std::atomic<std::shared_ptr> takes a
// lock in libstdc++) between EpochDomain::enter/leave.  A replaced table is
// retired and freed by reclaim() once every worker has passed a quiescent point.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "dataplane/epoch_domain.h"
#include "engine/policy_table.h"

namespace ov2 {

enum class InboundVerdict : uint8_t {
  Accept,     // the best matching policy is PROTECT with this SA
  Unchecked,  // no inbound policy names this SA: accepted unchecked
  Mismatch,   // no matching policy, BYPASS/DISCARD, or PROTECT with another SA
};

// Selector fields of an IP packet (IPv4 with options, IPv6 with hop-by-hop,
// routing and destination-options headers skipped).  Ports are read for TCP,
// UDP, UDP-Lite and SCTP, and stay 0 for other protocols, for non-first
// fragments and when the packet is too short to hold them.  False if `ip` is
// not a parseable IPv4/IPv6 header.
bool packet_selector_of(const uint8_t* ip, uint32_t len, PacketSelector* out);

// One immutable snapshot of the inbound SPD.
//
// Per-SA candidate lists (built here, at policy change time) keep the packet
// path from scanning every policy: for SA h the list holds, in SPD order,
// every PROTECT policy naming h and every policy before one of them whose
// selectors overlap it (could match a packet it matches).  The first match in
// that list is PROTECT-h exactly when the first match in the whole SPD is:
// a policy that matches the packet before a matching PROTECT-h policy
// overlaps it, so it is in the list.  Building costs one overlap test per
// pair (earlier policy, PROTECT policy); above `index_budget` pair tests
// (default: about 2 900 policies) the table keeps the linear scan.
class InboundPolicyTable {
 public:
  static constexpr size_t kDefaultIndexBudget = size_t{1} << 22;
  explicit InboundPolicyTable(const std::vector<CompiledPolicy>& ordered_policies,
                              size_t index_budget = kDefaultIndexBudget);

  // The check for a packet decapsulated by inbound SA `sa_handle` (for a
  // bundle: the tunnel SA's handle).  No allocation, no lock.
  InboundVerdict check(uint64_t sa_handle, const PacketSelector& s) const;
  // True if some inbound PROTECT policy names `sa_handle`.
  bool names(uint64_t sa_handle) const;
  // False when the policy count was over the index budget (linear scan).
  bool indexed() const { return indexed_; }

 private:
  PolicyTable table_;
  std::vector<uint64_t> named_;  // sorted handles that PROTECT policies name
  bool indexed_ = false;
  std::vector<uint32_t> first_;       // indexed: named_[i]'s candidates are candidates_[first_[i], first_[i + 1])
  std::vector<uint32_t> candidates_;  // positions in table_.ordered, ascending within each SA's run
};

// True if some packet could match both policies (the selectors intersect).
bool policies_overlap(const PolicySpec& a, const PolicySpec& b);

// The published table (control side: publish/reclaim; workers: current()).
class InboundPolicies {
 public:
  explicit InboundPolicies(EpochDomain& epochs) : epochs_(epochs) {}
  ~InboundPolicies();
  InboundPolicies(const InboundPolicies&) = delete;
  InboundPolicies& operator=(const InboundPolicies&) = delete;

  // Replaces the table (any thread; serialized).  Throws std::bad_alloc only,
  // before anything changes.
  void publish(const std::vector<CompiledPolicy>& ordered_policies);
  // Frees replaced tables no worker can still see; returns how many remain.
  size_t reclaim();

  // Worker, between epochs.enter/leave: the current table (nullptr: no inbound
  // SPD was ever set, every SA is unchecked).
  const InboundPolicyTable* current() const { return current_.load(std::memory_order_acquire); }

 private:
  struct Retired {
    std::unique_ptr<const InboundPolicyTable> table;
    uint64_t epoch;
  };
  EpochDomain& epochs_;
  std::atomic<const InboundPolicyTable*> current_{nullptr};
  std::mutex mu_;  // control side only
  std::vector<Retired> retired_;
};

}  // namespace ov2
