// The daemon's state across restarts (issue 5.3): every SA (with its keys,
// like the kernel's SAD: root-only state on tmpfs), every policy, the handle
// and policy-id sequences and each outbound SA's sequence-number high-water
// mark, in <state_dir>/state.json (the snapshot) plus <state_dir>/state.journal
// (the changes since that snapshot).
//
// Snapshot: written atomically (temp file 0600, fsync, rename, fsync of the
// directory) at start (in the background when the loaded files can be
// continued: compact_after_load), at a clean shutdown only when the journal
// is larger than the snapshot (synchronously: save(); otherwise the stop
// ends the journal with a "stop" record holding the exact sequences), and
// when the journal has grown past kCompactFactor times the snapshot's size
// (or kMaxJournalRecords records): compaction, in the background (below).
// It names the journal that continues it ("journal_id", random per
// snapshot).  Its JSON is written by hand (control/state_json_writer.h), one
// SA or policy per line.
//
// Journal: one record per change (an SA added/updated/deleted, a policy
// added/updated/deleted, an outbound sequence mark raised, the handle and
// policy-id sequences reserved), appended to state.journal (0600).  A record
// is self-delimiting and checksummed: u32 LE payload length, u32 LE CRC32C of
// (length bytes + payload), payload (compact JSON, written by hand in place,
// no json tree: state_json_writer.h).  The first record (header) names the
// snapshot it continues ("snapshot"); a journal naming another snapshot is
// stale (a crash between writing a snapshot and replacing the journal) and
// is ignored.  A synchronous save() writes the new snapshot first, then a
// fresh journal (state.journal.tmp, fsync, rename, fsync of the directory),
// so a crash at any point leaves a consistent pair.
//
// Background compaction (start_compaction): the control thread copies the
// state (no serialization), then opens a NEW journal generation
// state.journal.next whose header says {"snapshot": Y, "after": X}: it
// continues snapshot Y (being written) and, until Y is in place, follows
// the current journal of snapshot X.  Every later change goes to it.  A
// thread serializes Y, writes state.json.tmp, fsyncs, renames it to
// state.json and fsyncs the directory; then (finish_compaction, on the
// control thread) state.journal.next is renamed to state.journal.  The
// loader takes state.json (id S) and replays:
//   - state.journal if it continues S, then state.journal.next if it is
//     "after" S (a crash while Y was being written: X + journal X + next);
//   - else state.journal.next if it continues S (a crash after Y was
//     renamed into place, before its journal was);
//   - else nothing (the journal is stale: S holds it all).
// So a SIGKILL at any moment restores exactly what was acknowledged; the old
// generation disappears only by being replaced after the new snapshot is
// durable.  One compaction runs at a time; when one fails (disk full) the
// old snapshot and both journals stay consistent, and the next compaction
// is a synchronous save(), which also removes state.journal.next.  A clean
// stop may cancel a background snapshot instead of waiting for it
// (cancel_compaction: the files are then the crash-during-compaction shape
// above) and fold state.journal.next into state.journal (fold_next_journal:
// a new state.journal whose header says "folded": Y, renamed into place,
// then state.journal.next removed; the loader ignores a state.journal.next
// of the folded id, left by a crash between the two).
// OV2_TEST_COMPACT_EVERY_BYTES / OV2_TEST_COMPACT_DELAY_MS (tests only)
// compact at a small journal size and hold each background snapshot before
// its rename, so that tests can kill the daemon in the middle of one.
//
// Durability contract (group commit): records are appended to a buffer as
// changes happen (append_*); commit() writes the buffer with one write() and
// makes it durable with one fdatasync().  The daemon's control server calls
// commit() once per event-loop iteration, after handling every request that
// arrived in it and BEFORE sending any of their answers: an {"ok":true}
// answer to a mutating request is only sent once its record is durable, and
// all requests of one iteration (several connections, pipelined lines, a
// batch sa.add) share one fdatasync.  (On tmpfs, the default /run/ipsecov2,
// fdatasync costs nothing and "durable" means "survives a daemon crash",
// not a reboot -- like the kernel's SAD.)  If the journal cannot be written,
// the daemon logs it and writes a full snapshot instead; if that fails too,
// the requests that changed something are answered "not-saved" instead of
// ok, their monitor events go out only after that verdict, and later
// changes are "not-saved" until a full snapshot succeeds
// (daemon/service_state.h).
//
// Loading: the files are mapped read-only and parsed where they lie; the
// snapshot, then the journal records applied to its lists in place, then
// every check of parse_state, once, on the result (on the snapshot alone,
// named so, when no record applies), before anything is applied.  A torn or corrupt
// LAST record (a crash in the middle of a write: the record runs past the end
// of the file, or its checksum fails and only it -- or only zero bytes --
// follows) is discarded with a warning naming the file and the offset; it
// was never acknowledged.  A bad record before the tail, a record that does
// not apply (deleting an SA that is not there) or a bad snapshot refuses the
// whole state with a message naming the file, the offset and the problem.
//
// Keys: the JSON text holding them (snapshot text, record payloads, the
// unwritten buffer, the journals read back to be folded) is wiped with
// OPENSSL_cleanse once used; what the loader reads is mapped from the file,
// never copied to the heap; keys are never logged.
//
// Outbound sequence numbers: the ESP objects are recreated on restart, so an
// outbound SA would start again at 1 -- reusing (key, IV) pairs for AES-GCM /
// ChaCha20-Poly1305 (their IV is the sequence number) and being dropped by
// the peer's replay window.  So the file keeps, per outbound SA, a mark at or
// above the next sequence number (rounded up to kSeqMarkStep, re-saved when
// traffic passes it, checked every second), and a restore continues at
// mark + kSeqRestoreMargin, which covers what can be sent between two checks.
//
// Handle and policy-id sequences: not journaled per SA.  The journal holds a
// reservation (kSequenceReserve above the current value), re-journaled when
// the sequence passes it, so a restore after a crash starts above every
// handle or id ever given out (at most kSequenceReserve numbers are skipped;
// a clean shutdown's snapshot or "stop" record holds the exact values).
#pragma once

#include <atomic>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "common/crc32c.h"
#include "control/sa_database.h"
#include "control/spd.h"

namespace ov2 {

inline constexpr uint64_t kSeqMarkStep = uint64_t{1} << 16;
inline constexpr uint64_t kSeqRestoreMargin = uint64_t{1} << 20;
inline constexpr uint64_t kSequenceReserve = 4096;
// Compaction: when the journal is larger than kCompactFactor times the
// snapshot (and at least kMinCompactBytes), or holds more records than
// kMaxJournalRecords.  A compaction costs about what journaling the whole
// state costs, so the factor makes it a quarter of the journaling work while
// the SA count grows; a restore replays at most that much journal.
inline constexpr size_t kMaxJournalRecords = size_t{1} << 20;
inline constexpr uint64_t kMinCompactBytes = uint64_t{4} << 20;
inline constexpr uint64_t kCompactFactor = 4;
// A record's payload is at most this big (a bigger length is damage).
inline constexpr uint32_t kMaxJournalPayload = uint32_t{1} << 24;

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
  std::string journal_id;  // the journal that continues this snapshot ("" : none)
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
// Text in the shape this daemon's writer gives is read by the fast path
// (state_json_reader.h); everything else by parse_state_reference.
// `fast_path` (optional) tells which path read it.
DaemonState parse_state(std::string_view text, const std::string& name, bool* fast_path = nullptr);
// parse_state without validate_state on the fast path (the reference path
// checks anyway), for a caller that checks the state it makes of it (the
// loader: once, after replaying the journal); room for `more_sas` more SAs
// is reserved in the list.
DaemonState parse_state_unchecked(std::string_view text, const std::string& name, bool* fast_path, size_t more_sas);
// The reference: the same through nlohmann::json (a tree of the whole file,
// wiped after use).  Same result and messages as parse_state.
DaemonState parse_state_reference(std::string_view text, const std::string& name);

// The cross-checks of parse_state on a complete state (handles below the
// sequence, no duplicates, bundles, policy ids, PROTECT SAs).  Throws like
// parse_state.
void validate_state(const DaemonState& state, const std::string& name);

// Overwrites a string's bytes (OPENSSL_cleanse) and clears it.
void wipe_string(std::string& s);

// One journal record: length, checksum, payload (see above).
std::string encode_journal_record(std::string_view payload);
// Makes buffer[at..] (8 bytes of room, then the payload) a record: fills in
// its length and checksum.
void seal_journal_record(std::string& buffer, size_t at);

// The records of a journal file's bytes.  A torn/corrupt last record is left
// out and described in `torn_warning` ("NAME: offset N: ...").  Throws
// ov2::Error(InvalidArgument) "NAME: offset N: ..." for damage before the tail.
struct JournalScan {
  std::vector<std::string_view> payloads;  // into the scanned bytes (no copy: the caller keeps them alive)
  std::string torn_warning;
  size_t valid_bytes = 0;  // the length of the complete records (where a torn tail starts)
};
JournalScan scan_journal(std::string_view bytes, const std::string& name);

// Replays journal payloads (after the header) over `state` and validates the
// result (validate_state).  Throws ov2::Error(InvalidArgument) naming `name`
// and the record number for a record that is malformed or does not apply.
// Records in the writer's shape are read by the fast path (state_json_reader.h)
// unless `fast` is false (tests: the nlohmann reference for every record).
// Each record is read where it lies and applied to the result's lists in
// place (no map of the whole state, no copy of the records).
DaemonState replay_journal(DaemonState state, std::span<const std::string_view> payloads, size_t first,
                           const std::string& name, bool fast = true);
DaemonState replay_journal(DaemonState state, const std::vector<std::string>& payloads, size_t first,
                           const std::string& name, bool fast = true);

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
  const std::string& journal_path() const { return journal_path_; }
  const std::string& next_journal_path() const { return next_journal_path_; }

  // Compaction: writes `state` as the new snapshot (atomically, see above),
  // then starts a fresh journal continuing it.  Unwritten records are dropped
  // (`state` holds everything).  Throws ov2::Error(Kernel).
  void save(DaemonState state);

  // Background compaction (see above): on the calling thread, starts the new
  // journal generation state.journal.next (all later records go there);
  // in a thread, writes `state` as the new snapshot.  `state` must hold
  // every committed change (call right after commit()).  Falls back to a
  // synchronous save() when a generation after the current one already
  // exists (an earlier compaction failed).  Throws ov2::Error(Kernel).
  void start_compaction(DaemonState state);
  // When the background snapshot is written (or at once with `wait`):
  // joins the thread and makes state.journal.next the journal.  True when
  // a compaction finished; false when none ran (or, without `wait`, it is
  // still running).  Throws ov2::Error(Kernel) when it failed (everything
  // is still in the old snapshot and the two journals).
  bool finish_compaction(bool wait);
  // The start-up snapshot, without rewriting the state synchronously: when
  // the last load() found the plain shape -- a snapshot, its journal (or no
  // journal, or a stale one) and no state.journal.next -- it continues those
  // files: the new journal generation state.journal.next ("after" the loaded
  // snapshot) starts at once and `state` is written as the new snapshot in
  // the background (start_compaction).  Otherwise (another shape, nothing
  // loaded, or the files moved aside since) a synchronous save().  `state`
  // must be what was loaded, as restored.  Throws ov2::Error(Kernel).
  // Returns true when the snapshot is being written in the background.
  bool compact_after_load(DaemonState state);
  bool compaction_running() const { return compactor_.joinable(); }
  // At a clean stop, instead of waiting for a background snapshot (the
  // start-up one, typically): when the current journal and the new
  // generation together are not larger than a stop may end with (the bound
  // of journal_can_end_a_stop), stops the snapshot thread before its rename
  // (its temp file removed) and returns true: the old snapshot, its journal
  // and state.journal.next ("after" it) hold everything, the shape the
  // loader already restores after a crash in the middle of a compaction;
  // later records still go to state.journal.next.  False when none runs,
  // when the journals are too large (the caller waits with
  // finish_compaction), or when the snapshot was already in place (then it
  // is finished as finish_compaction does).  Throws like finish_compaction.
  bool cancel_compaction();
  // After cancel_compaction and the stop's last commit: folds the two
  // journals into one, so that the next start finds the plain shape (and
  // writes its start-up snapshot in the background): a new state.journal
  // (temp file, fsync, rename) holding the records of both, whose header
  // names the folded generation ("folded": its id; the loader ignores a
  // state.journal.next of that id, left by a crash before its unlink); then
  // state.journal.next is removed.  A crash at any point restores the same
  // state.  Throws ov2::Error (the two journals then stay as they were).
  void fold_next_journal();

  // Queue one journal record (nothing is written until commit()).
  void append_sa(const SavedSa& sa);
  void append_sa_deleted(uint64_t handle);
  void append_policy(const PolicyRecord& policy);
  void append_policy_deleted(uint32_t id);
  void append_seq_mark(uint64_t handle, uint64_t seq_mark);
  void append_sequences(uint64_t next_sa_sequence, uint32_t next_policy_id);
  // The last record of a clean stop: the sequences' exact values.
  void append_stop(uint64_t next_sa_sequence, uint32_t next_policy_id);

  bool has_pending() const { return !pending_.empty(); }
  // Writes the queued records (one write) and fdatasyncs the journal.  No-op
  // without queued records.  Throws ov2::Error(Kernel); the journal is cut
  // back to its last complete record then, and the caller should save().
  void commit();
  // True when the journal should be compacted into a new snapshot.
  bool needs_compaction() const;
  // A clean stop may end with the journal (no snapshot) when it is at most
  // as large as the snapshot (or kMinCompactBytes): the next start then reads
  // at most twice the snapshot's bytes.  False while a compaction runs.
  bool journal_can_end_a_stop() const;
  // The journal is past what a stop may end with (so an idle daemon compacts it in the background
  // before it is stopped).
  bool journal_too_large_for_a_stop() const;
  uint64_t journal_bytes() const { return journal_bytes_; }
  size_t journal_records() const { return journal_records_; }

  struct LoadReport {
    size_t journal_records = 0;  // replayed
    std::string warning;         // a torn tail or a stale journal ignored
    bool fast_path = false;      // the snapshot was read by the fast path (state_json_reader.h)
    std::string snapshot_time;   // reading, parsing and checking the snapshot: "W ms (CPU C ms)"
    std::string journal_time;    // reading, scanning and replaying the journals
  };
  // The saved state (snapshot + journal), or nullopt if there is no
  // snapshot.  Throws ov2::Error(InvalidArgument) naming the file for a bad
  // one.
  std::optional<DaemonState> load(LoadReport* report = nullptr) const;

  // Moves the bad files aside to state.json.bad-<UTC timestamp> (and
  // state.journal.bad-<same>); returns what was moved where.
  std::string move_aside() const;

  // Removes the state files (the daemon started with --no-restore keeps them
  // until the first save overwrites them; tests use this).
  void remove() const;

 private:
  template <typename Write>
  void append(Write&& write);
  // Writes a fresh journal at `path` (header naming `snapshot_id` and the
  // journal `after` which it follows, "" for none) and appends to it from now on.
  void open_journal(const std::string& path, const std::string& snapshot_id, const std::string& after);
  struct CompactionResult {
    std::string error;
    uint64_t bytes = 0;
    bool cancelled = false;  // stopped before its rename (cancel_compaction)
  };
  void fsync_dir() const;
  // The background part of start_compaction (the checks done).
  void begin_background_snapshot(DaemonState state);
  // The control thread's part once the snapshot thread is joined: state.journal.next becomes the journal.
  void complete_compaction();

  std::string dir_;
  std::string path_;
  std::string journal_path_;
  std::string next_journal_path_;
  int lock_fd_ = -1;
  int journal_fd_ = -1;
  std::string pending_;  // encoded records not yet written (holds keys: wiped)
  uint64_t journal_bytes_ = 0;
  uint64_t snapshot_bytes_ = 0;
  size_t journal_records_ = 0;
  std::string snapshot_id_;       // the snapshot in place, which state.journal continues
  bool journal_is_next_ = false;  // appending to state.journal.next
  std::thread compactor_;         // the background snapshot writer
  std::atomic<bool> compaction_done_{false};
  std::atomic<bool> compaction_cancel_{false};  // set by cancel_compaction, read by the thread
  bool compaction_cancelled_ = false;           // state.journal.next follows a cancelled snapshot
  uint64_t previous_journal_bytes_ = 0;         // state.journal when the compaction started
  size_t previous_journal_records_ = 0;
  CompactionResult compaction_result_;  // written by the thread before compaction_done_
  std::string compaction_id_;
  // What the last load() found, for compact_after_load ("" : nothing to continue).
  struct Loaded {
    std::string snapshot_id;
    uint64_t snapshot_bytes = 0;
    bool journal_continues = false;  // state.journal continues it (else none, or a stale one)
    uint64_t journal_bytes = 0;      // its complete records' length (a torn tail left out)
    size_t journal_records = 0;
  };
  mutable Loaded loaded_;
  uint64_t compact_every_bytes_ = 0;  // OV2_TEST_COMPACT_EVERY_BYTES
  unsigned compact_delay_ms_ = 0;     // OV2_TEST_COMPACT_DELAY_MS
};

}  // namespace ov2
