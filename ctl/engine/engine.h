// The engine interface: where SAs are installed and the per-packet work is
// done.  The SA database (ctl/control) validates and owns the bookkeeping; an
// engine only installs what it is given and reports what it can do.
//
// Contract (all engines):
//  - add_sa is all-or-nothing: when it throws ov2::Error, nothing of the SA
//    remains in the engine.
//  - delete_sa never throws: the database has already decided; problems are
//    reported through the engine's warning sink.
//  - set_*_spd replaces the whole policy list of one direction; when it
//    throws, the previous list stays in force.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "dataplane/sa_runtime.h"
#include "dataplane/spd_compiler.h"
#include "engine/capabilities.h"
#include "model/sa_spec.h"

namespace ov2 {

// What the kernel said about an SA an engine holds outside the AF_XDP data
// plane (the NIC engine: XFRM expire and delete notifications).
struct KernelSaEvent {
  enum class Kind : uint8_t {
    SoftExpire,  // a soft lifetime ran out: time to rekey
    HardExpire,  // a hard lifetime ran out: the kernel deleted the SA
    Deleted,     // someone else deleted the SA from the kernel
  };
  uint64_t handle = 0;
  Kind kind = Kind::SoftExpire;
  std::string limit;  // "packets", "bytes" or "seconds" (expire only)
  uint64_t packets = 0;
  uint64_t bytes = 0;
};

class Engine {
 public:
  virtual ~Engine() = default;

  // NDIS_IPSEC_OFFLOAD_V2 view of what this engine offloads.
  virtual Capabilities capabilities() const = 0;

  // ADD_SA for one SA under a handle the database chose.  For a bundle
  // (sa.inner_handle != 0) the inner SA was added before.  Throws ov2::Error.
  virtual void add_sa(uint64_t handle, const SaSpec& sa) = 0;

  // DELETE_SA for one handle the engine holds.  Never throws.
  virtual void delete_sa(uint64_t handle) noexcept = 0;

  // Many ADD_SAs in one request (a batched sa.add): between begin_batch()
  // and commit_batch() an engine may hold back what it can write at once
  // (the AF_XDP engine: the inbound SAs' ov2_wire entries, written with
  // BPF_MAP_UPDATE_BATCH by commit_batch()).  commit_batch() throws
  // ov2::Error when that fails: the SAs added since begin_batch() are then
  // still held but not reachable, and the caller deletes them.
  // abort_batch() ends a batch without writing.  Default: nothing held back.
  virtual void begin_batch(size_t /*expected*/) {}
  virtual void commit_batch() {}
  virtual void abort_batch() noexcept {}

  // UPDATE_SA: new ESN high-order sequence number.  Throws ov2::Error.
  virtual void update_sa(uint64_t handle, uint32_t seq_hi) = 0;

  // Replace the outbound SPD (sorted by priority, then id).  Throws
  // ov2::Error (e.g. ResourceExhausted from the compiler); the old one stays.
  virtual void set_outbound_spd(const std::vector<CompiledPolicy>& policies) = 0;

  // Replace the inbound SPD the worker checks decrypted packets against
  // (RFC 4301 §5.2).  Throws ov2::Error; the old one stays.
  virtual void set_inbound_spd(const std::vector<CompiledPolicy>& policies) = 0;

  // Which engine holds an installed SA ("afxdp", "nic"); engines that hold
  // everything themselves answer with their own name.
  virtual std::string engine_of(uint64_t /*handle*/) const { return capabilities().engine; }

  // The SA's counters when this engine keeps them outside the AF_XDP data
  // plane (the NIC engine reads the kernel's XFRM state); nullopt when the
  // data plane's counters are the SA's.  Throws ov2::Error if reading fails.
  virtual std::optional<SaRuntimeCounters> sa_counters(uint64_t /*handle*/) { return std::nullopt; }

  // Called once the saved state is restored (or skipped) and before any
  // request is served: an engine that found a crashed run's kernel entries
  // removes those the restore did not take over.  Never throws.
  virtual void finish_restore() noexcept {}

  // Kernel SA events: an fd to poll for readability (-1: this engine has
  // none) and the reader of what arrived (events about SAs it holds only).
  virtual int kernel_event_fd() const { return -1; }
  virtual std::vector<KernelSaEvent> read_kernel_events() { return {}; }
};

// Where engines report problems they cannot throw (delete_sa).
using WarningSink = std::function<void(const std::string&)>;

}  // namespace ov2
