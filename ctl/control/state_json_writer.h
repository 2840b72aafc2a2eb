// The state file's JSON written by hand (no nlohmann::json tree per change):
// the journal records of the hot changes and the snapshot's entries.  The
// text is exactly what nlohmann::json's compact dump() of the same objects
// gives (keys sorted, no spaces), so the loader (parse_state,
// replay_journal: nlohmann::json + sa_spec_from_json / policy_spec_from_json)
// reads it unchanged; a unit test compares the bytes with that dump and
// parses every field back.
//
// Everything is appended to the caller's string, which holds key hex
// afterwards: the caller wipes it (wipe_string).  No temporary holds a key.
#pragma once

#include <cstdint>
#include <string>

#include "control/state_store.h"

namespace ov2 {

// Journal record payloads ({"op": ...}); see state_store.h.
void write_sa_record(std::string& out, const SavedSa& sa);
void write_sa_deleted_record(std::string& out, uint64_t handle);
void write_policy_record(std::string& out, const PolicyRecord& policy);
void write_policy_deleted_record(std::string& out, uint32_t id);
void write_seq_mark_record(std::string& out, uint64_t handle, uint64_t seq_mark);
void write_sequences_record(std::string& out, uint64_t next_sa_sequence, uint32_t next_policy_id);
// The last record of a clean stop: the sequences' exact values (not a reservation).
void write_stop_record(std::string& out, uint64_t next_sa_sequence, uint32_t next_policy_id);

// The snapshot's list entries: {"handle","seq_mark","spec"} and {"id","spec"}.
void write_sa_entry(std::string& out, const SavedSa& sa);
void write_policy_entry(std::string& out, const PolicyRecord& policy);

// An SA's spec with its keys (hex), and a policy's spec: the objects
// sa_spec_from_json / policy_spec_from_json read.
void write_sa_spec(std::string& out, const SaSpec& spec);
void write_policy_spec(std::string& out, const PolicySpec& spec);

}  // namespace ov2
