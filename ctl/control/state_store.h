// The daemon's state across restarts (issue 5.3): every SA (with its keys,
// like the kernel's SAD: root-only state on tmpfs), every policy, the handle
// and policy-id sequences and each outbound SA's sequence-number high-water
// mark, in <state_dir>/state.json.
//
// The file is written atomically (temp file 0600, fsync, rename, fsync of the
// directory) after every change; the JSON text holding the keys is wiped with
// OPENSSL_cleanse once written.  Loading validates everything before anything
// is applied; a bad file is refused with a message naming the file and the
// problem.
//
// Outbound sequence numbers: the ESP objects are recreated on restart, so an
// outbound SA would start again at 1 -- reusing (key, IV) pairs for AES-GCM /
// ChaCha20-Poly1305 (their IV is the sequence number) and being dropped by
// the peer's replay window.  So the file keeps, per outbound SA, a mark at or
// above the next sequence number (rounded up to kSeqMarkStep, re-saved when
// traffic passes it, checked every second), and a restore continues at
// mark + kSeqRestoreMargin, which covers what can be sent between two checks.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "control/sa_database.h"
#include "control/spd.h"

namespace ov2 {

inline constexpr uint64_t kSeqMarkStep = uint64_t{1} << 16;
inline constexpr uint64_t kSeqRestoreMargin = uint64_t{1} << 20;

struct SavedSa {
  uint64_t handle = 0;
  SaSpec spec;
  uint64_t seq_mark = 0;  // outbound: the next sequence number is at most this (0: none sent yet)
};

struct DaemonState {
  uint64_t next_sa_sequence = 1;
  uint32_t next_policy_id = 1;
  std::vector<SavedSa> sas;
  std::vector<PolicyRecord> policies;
};

// The file's identification.
inline constexpr const char* kStateMagic = "ipsecov2-state";
inline constexpr int kStateVersion = 1;

// The JSON text of `state`, keys in hex.  The caller wipes it (wipe_string).
std::string serialize_state(const DaemonState& state);

// Parses and checks `text` completely: magic and version, every field, every
// SA (validate_sa), unique handles below next_sa_sequence, bundles naming
// existing transport SAs of the same direction, unique policy ids below
// next_policy_id, PROTECT policies naming existing SAs.  Throws
// ov2::Error(InvalidArgument) "NAME: what is wrong" (never key bytes).
DaemonState parse_state(std::string_view text, const std::string& name);

// Overwrites a string's bytes (OPENSSL_cleanse) and clears it.
void wipe_string(std::string& s);

class StateStore {
 public:
  // `dir` is created (0700) if missing; an existing one is tightened to at
  // most 0750.  Takes an exclusive lock on <dir>/state.lock for the store's
  // lifetime (the kernel drops it when the process dies, also by SIGKILL), so
  // two daemons never share a state file.  Throws ov2::Error if the directory
  // cannot be set up or another process holds the lock.
  explicit StateStore(std::string dir);
  ~StateStore();
  StateStore(const StateStore&) = delete;
  StateStore& operator=(const StateStore&) = delete;

  const std::string& path() const { return path_; }

  // Writes `state` atomically (see above).  Throws ov2::Error(Kernel).
  void save(const DaemonState& state) const;

  // The saved state, or nullopt if there is no file.  Throws
  // ov2::Error(InvalidArgument) naming the file for a bad one.
  std::optional<DaemonState> load() const;

  // Moves a bad file aside to state.json.bad-<UTC timestamp>; returns that path.
  std::string move_aside() const;

  // Removes the state file (the daemon started with --no-restore keeps it
  // until the first save overwrites it; tests use this).
  void remove() const;

 private:
  std::string dir_;
  std::string path_;
  int lock_fd_ = -1;
};

}  // namespace ov2
