// An Engine that records what it is asked to do and can be told to fail, for
// testing the SA database, the SPD and the protocol without BPF.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/error.h"
#include "engine/afxdp_engine.h"
#include "engine/engine.h"

namespace ov2::test {

class FakeEngine : public Engine {
 public:
  Capabilities capabilities() const override { return afxdp_capabilities(); }
  void add_sa(uint64_t handle, const SaSpec& sa) override {
    if (fail_next_add) {
      fail_next_add = false;
      fail(ErrorCode::Kernel, "injected engine failure");
    }
    installed[handle] = sa;
    add_calls.push_back(handle);
  }
  void delete_sa(uint64_t handle) noexcept override {
    installed.erase(handle);
    delete_calls.push_back(handle);
  }
  void update_sa(uint64_t handle, uint32_t seq_hi) override { installed.at(handle).seq_hi = seq_hi; }
  void set_outbound_spd(const std::vector<CompiledPolicy>& policies) override {
    if (fail_next_spd) {
      fail_next_spd = false;
      fail(ErrorCode::ResourceExhausted, "injected SPD failure");
    }
    outbound = policies;
  }
  void set_inbound_spd(const std::vector<CompiledPolicy>& policies) override { inbound = policies; }
  // A batch is recorded as its events ("begin N", "commit", "abort"); commit can be told to fail.
  void begin_batch(size_t expected) override { batch_events.push_back("begin " + std::to_string(expected)); }
  void commit_batch() override {
    batch_events.push_back("commit");
    if (fail_next_commit) {
      fail_next_commit = false;
      fail(ErrorCode::ResourceExhausted, "injected batch write failure");
    }
  }
  void abort_batch() noexcept override { batch_events.push_back("abort"); }
  // Counters an engine keeps itself (as the NIC engine reads the kernel's).
  std::optional<SaRuntimeCounters> sa_counters(uint64_t handle) override {
    const auto it = own_counters.find(handle);
    if (it == own_counters.end()) return std::nullopt;
    return it->second;
  }

  bool fail_next_add = false;
  bool fail_next_spd = false;
  bool fail_next_commit = false;
  std::vector<std::string> batch_events;
  std::map<uint64_t, SaSpec> installed;
  std::vector<uint64_t> add_calls;
  std::vector<uint64_t> delete_calls;
  std::vector<CompiledPolicy> outbound;
  std::vector<CompiledPolicy> inbound;
  std::map<uint64_t, SaRuntimeCounters> own_counters;
};

// A valid AES-GCM-128 SA (20 bytes of key material).
inline SaSpec gcm_sa(Direction dir, Mode mode, const char* src, const char* dst, uint32_t spi) {
  SaSpec sa;
  sa.dir = dir;
  sa.mode = mode;
  sa.src = IpAddr::parse(src);
  sa.dst = IpAddr::parse(dst);
  sa.spi = spi;
  sa.enc = EncAlg::AesGcm128;
  sa.enc_key = SecureBytes::from_hex("000102030405060708090a0b0c0d0e0f10111213");
  return sa;
}

}  // namespace ov2::test
