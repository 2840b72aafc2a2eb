// Fuzzes the state loader's fast reader (control/state_json_reader.h)
// against its reference, nlohmann::json: any bytes as a snapshot
// (parse_state vs parse_state_reference) and as a journal record replayed
// over a small state (replay_journal with and without the fast reader) must
// give the same answer -- the same state, or an error with the same message
// -- and never crash.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/error.h"
#include "control/state_json_writer.h"
#include "control/state_store.h"

namespace {

// Everything that restore uses, as text (keys included: this is a test state).
std::string describe(const ov2::DaemonState& s) {
  std::string out = std::to_string(s.next_sa_sequence) + " " + std::to_string(s.next_policy_id) + " " + s.journal_id;
  for (const ov2::SavedSa& sa : s.sas) {
    out += "\n";
    ov2::write_sa_entry(out, sa);
  }
  for (const ov2::PolicyRecord& p : s.policies) {
    out += "\n";
    ov2::write_policy_entry(out, p);
  }
  return out;
}

template <typename Run>
std::string answer(Run run) {
  try {
    return "ok " + describe(run());
  } catch (const ov2::Error& e) {
    return std::string("error ") + e.what();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  if (answer([&] { return ov2::parse_state(text, "state.json"); }) !=
      answer([&] { return ov2::parse_state_reference(text, "state.json"); }))
    __builtin_trap();

  static const ov2::DaemonState* base = [] {
    auto* s = new ov2::DaemonState;
    s->next_sa_sequence = 10;
    s->next_policy_id = 10;
    ov2::SavedSa sa;
    sa.handle = (uint64_t{3} << 24) | 3;
    sa.spec.spi = 0x1000;
    sa.spec.src = ov2::IpAddr::parse("192.0.2.1");
    sa.spec.dst = ov2::IpAddr::parse("192.0.2.2");
    const uint8_t key[20] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20};
    sa.spec.enc_key = ov2::SecureBytes(std::span<const uint8_t>(key, sizeof key));
    s->sas.push_back(std::move(sa));
    return s;
  }();
  const std::vector<std::string> records = {"header", text};
  if (answer([&] { return ov2::replay_journal(*base, records, 1, "state.journal"); }) !=
      answer([&] { return ov2::replay_journal(*base, records, 1, "state.journal", false); }))
    __builtin_trap();
  return 0;
}
