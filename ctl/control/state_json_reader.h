// The fast path of the state loader: reads the JSON that
// control/state_json_writer.h writes (the snapshot and the journal records)
// without building a json tree, and takes the keys' hex straight from the
// text read from the file into key storage (SecureBytes::from_hex: no
// temporary string ever holds a key).
//
// It is deliberately narrow: it accepts only what it understands completely
// (objects of known keys in any order, JSON whitespace anywhere, strings
// without escapes, unsigned integers written as JSON integers), and every
// value goes through the same parsers and checks as the nlohmann path
// (parse_direction, IpAddr::parse, parse_aead_alg, SecureBytes::from_hex,
// validate_sa, validate_policy, ...).  Anything else -- an unknown or
// repeated key, a number written as a string, an escape, a bad value --
// makes it answer "not mine" (nullopt / false), and the caller uses the
// nlohmann path (parse_state / the record branch of replay_journal), which
// is the reference: the result is the same state, and a bad file gets the
// same error message as before.  tests/fuzz/fuzz_state_reader.cpp checks
// that whatever the fast path accepts, the nlohmann path accepts with the
// same result.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

#include "control/state_store.h"

namespace ov2 {

// The snapshot `text` as a DaemonState, or nullopt when the fast path does
// not take it.  Does not run validate_state (the caller does, as parse_state
// does).  Never throws.
// `more_sas`: room reserved for that many more SAs (a journal to replay).
std::optional<DaemonState> fast_parse_state(std::string_view text, size_t more_sas = 0);

// One journal record payload (after the header).
struct FastRecord {
  enum class Op : uint8_t { Sa, SaDeleted, Mark, Policy, PolicyDeleted, Sequences, Stop };
  Op op = Op::Sa;
  SavedSa sa;                     // Sa (all fields); SaDeleted, Mark: handle (and seq_mark)
  PolicyRecord policy;            // Policy (all fields); PolicyDeleted: id
  uint64_t next_sa_sequence = 0;  // Sequences, Stop
  uint32_t next_policy_id = 0;    // Sequences, Stop
};
// False when the fast path does not take `payload` (the caller then uses the
// nlohmann branch).  Never throws.
bool fast_parse_record(std::string_view payload, FastRecord& out);

}  // namespace ov2
