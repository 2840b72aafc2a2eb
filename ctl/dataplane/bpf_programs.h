// The four BPF programs, loaded from their skeletons, and access to their
// maps.  The one adapter between C++ and BPF: nothing else opens a map or a
// program by name.
//
//   ov2_wire    XDP on the wire interface (inbound ESP -> worker XSK)
//   ov2_tx      XDP on the worker end of the offload device (SPD -> metadata -> worker XSK)
//   ov2_deliver XDP on the host end of the offload device (shim -> data_meta)
//   ov2_verdict TC ingress on the host end (data_meta -> accept / count+drop / event)
//
// Maps (one set per skeleton; names as in `bpftool map`):
//   ov2_wire:    sa_map (HASH ov2_sa_key -> ov2_sa_value), inbound_dests
//                (HASH ov2_sa_key with SPI 0 -> ov2_dest_sas: 1 where that
//                address has an inbound SA of the encapsulation), xsks_map (XSKMAP by rx queue),
//                wire_counters (PERCPU_ARRAY, enum ov2_wire_counter)
//   ov2_tx:      spd_trie (LPM_TRIE ov2_spd_trie_key -> ov2_spd_candidates),
//                spd_entries (ARRAY of ov2_spd_entry), xsks_map, tx_counters
//   ov2_deliver: deliver_counters; the shim cookie is in .rodata (set at load)
//   ov2_verdict: verdict_counters, status_counters (per CryptoStatus 0..7),
//                events (RINGBUF of ov2_event); verdict_mark is in .data
//
// Attaching: XDP in driver mode (bpf_xdp_attach, XDP_FLAGS_DRV_MODE), one
// program per interface; TC through a clsact qdisc on ov2 (created if absent,
// left in place on detach) with the filter at handle 1, priority 1.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "ov2_abi.h"

struct ov2_wire;
struct ov2_tx;
struct ov2_deliver;
struct ov2_verdict;

namespace ov2 {

class BpfPrograms {
 public:
  struct Options {
    uint64_t cookie = 0;               // per-boot random shim cookie (0: pick one from getrandom)
    uint32_t verdict_mark = 0;         // skb->mark for accepted decrypted packets (0: leave mark alone)
    uint32_t inbound_sa_capacity = 0;  // sa_map entries; 0: OV2_MAX_SAS (tests fill a small one)
  };

  // Opens and loads all four skeletons (maps created, nothing attached).
  // Throws ov2::Error(Kernel) with the libbpf/kernel reason.
  explicit BpfPrograms(const Options& opts);
  ~BpfPrograms();
  BpfPrograms(const BpfPrograms&) = delete;
  BpfPrograms& operator=(const BpfPrograms&) = delete;

  // Attach/detach.  Attaching replaces a leftover program of ours from a
  // crashed daemon (same program name) instead of failing; a program of any
  // other name is left alone and ov2::Error(Kernel) says how to remove it.
  // attach_offload is all-or-nothing.  detach_all removes only programs that
  // are still the ones this object attached (also run by the destructor).
  void attach_wire(int ifindex);
  void attach_offload(int host_ifindex, int nic_ifindex);  // ov2_deliver+ov2_verdict on host, ov2_tx on nic
  void detach_all();

  // Inbound SA map (ov2_wire).  put: Error(ResourceExhausted) when full;
  // delete: Error(NotFound) if the key is not there.  Both also keep
  // inbound_dests: per destination, whether an inbound SA expects plain ESP
  // and whether one expects UDP-encapsulated ESP; ov2_wire sends ESP (UDP)
  // fragments to the worker only for a destination with an ESP
  // (UDP-encapsulated) SA.  The counts behind it are kept in this object
  // (the daemon is the only writer): inbound_dests is written only when a
  // destination's count of one kind goes 0 -> 1 or 1 -> 0, so a new SA costs
  // one syscall (a BPF_NOEXIST update) and a delete one (lookup-and-delete).
  // A replacement that changes the encapsulation moves the SA between the
  // two counts.  A put or delete that fails changes no count.
  void put_inbound_sa(const ov2_sa_key& key, const ov2_sa_value& value);
  // Many new inbound SAs at once (a restore, a batched sa.add):
  // BPF_MAP_UPDATE_BATCH calls of up to kWireBatch entries instead of one
  // syscall per SA.  The kernel's
  // batch update takes no BPF_NOEXIST (elem_flags allows BPF_F_LOCK only),
  // so the keys must be distinct and not in the map yet: the workers' table
  // (SaRuntime) refuses a second SA with the same key before it gets here.
  // All-or-nothing: when an entry cannot be written (a full map:
  // Error(ResourceExhausted)), the entries this call wrote are deleted again
  // and no count changes.
  void put_new_inbound_sas(const std::vector<ov2_sa_key>& keys, const std::vector<ov2_sa_value>& values);
  static constexpr uint32_t kWireBatch = 8192;
  void delete_inbound_sa(const ov2_sa_key& key);
  bool lookup_inbound_sa(const ov2_sa_key& key, ov2_sa_value* value) const;
  // The inbound_dests entry of the SA key's (family, destination), as the
  // BPF map holds it ({1, 0}, {0, 1} or {1, 1}), if any.
  std::optional<ov2_dest_sas> inbound_destination(const ov2_sa_key& key) const;
  // The counts of inbound SAs to that destination, by encapsulation.
  ov2_dest_sas inbound_destination_sas(const ov2_sa_key& key) const;
  // "" when inbound_dests holds exactly the destinations with a count, each
  // with 1 for every non-zero count; else what differs (tests).
  std::string inbound_destinations_mismatch() const;

  // SPD (ov2_tx): the compiled form, see spd_compiler.h.
  int spd_trie_fd() const;
  int spd_entries_fd() const;

  // XSK maps: register an AF_XDP socket for a queue.
  int wire_xsks_map_fd() const;
  int tx_xsks_map_fd() const;

  // Ring buffer of ov2_event records from ov2_verdict.
  int events_fd() const;

  // Runtime-changeable settings (kept in the programs' .data).
  void set_verdict_mark(uint32_t mark);
  uint64_t cookie() const;

  // Counters summed over CPUs, indexed by the enums in ov2_abi.h.
  std::vector<uint64_t> wire_counters() const;
  std::vector<uint64_t> tx_counters() const;
  std::vector<uint64_t> deliver_counters() const;
  std::vector<uint64_t> verdict_counters() const;
  std::vector<uint64_t> verdict_status_counters() const;  // per CryptoStatus 0..7

  // Program fds, for BPF_PROG_TEST_RUN in tests.
  int wire_prog_fd() const;
  int tx_prog_fd() const;
  int deliver_prog_fd() const;
  int verdict_prog_fd() const;

 private:
  // Changes a destination's count of one kind, writing inbound_dests first
  // when the count goes 0 -> 1 or 1 -> 0 (on failure nothing changes).
  void count_destination(const ov2_sa_key& dest, bool udp_encap, int delta);
  void write_destination(const ov2_sa_key& dest, const ov2_dest_sas& counts);
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ov2
