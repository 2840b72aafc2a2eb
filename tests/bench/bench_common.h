// Shared measurement helpers for ipsecov2-bench: median of repeated timed
// runs, and the report (table + JSON).
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "bench_interrupt.h"

namespace ov2::bench {

struct Timing {
  double seconds_per_run;  // each run lasts about this long
  int runs;                // the median of this many runs is reported
};

// CPU time this thread has used, in seconds (on a shared machine a rate per
// CPU-second is what one core of our own would give).
inline double thread_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

// Calls body(n) with growing n until one call lasts ~seconds_per_run, then
// returns the median rate (iterations/s) over `runs` runs.  cpu_time: per
// second of this thread's CPU time instead of wall-clock time.  A signal
// (bench_interrupt.h) is looked for between calls, outside what is timed.
inline double measure_rate(const Timing& t, const std::function<void(uint64_t)>& body, bool cpu_time = false) {
  using clock = std::chrono::steady_clock;
  uint64_t n = 64;
  for (;;) {  // calibrate
    const auto a = clock::now();
    body(n);
    const double s = std::chrono::duration<double>(clock::now() - a).count();
    check_interrupt();
    if (s > t.seconds_per_run / 4 || n > (1ull << 40)) {
      n = static_cast<uint64_t>(static_cast<double>(n) * t.seconds_per_run / std::max(s, 1e-9));
      break;
    }
    n *= 4;
  }
  n = std::max<uint64_t>(n, 1);
  std::vector<double> rates;
  for (int r = 0; r < t.runs; ++r) {
    const auto a = clock::now();
    const double cpu = thread_cpu_seconds();
    body(n);
    const double s = cpu_time ? thread_cpu_seconds() - cpu : std::chrono::duration<double>(clock::now() - a).count();
    rates.push_back(static_cast<double>(n) / std::max(s, 1e-9));
    check_interrupt();
  }
  std::sort(rates.begin(), rates.end());
  return rates[rates.size() / 2];
}

// For work that needs untimed preparation per batch: prepare() is not timed,
// batch() processes `batch_size` items and is timed.  Median over runs.
// Signals are looked for between batches, outside what is timed.
inline double measure_rate_batched(const Timing& t, size_t batch_size, const std::function<void()>& prepare,
                                   const std::function<void()>& batch) {
  using clock = std::chrono::steady_clock;
  std::vector<double> rates;
  for (int r = 0; r < t.runs; ++r) {
    double timed = 0;
    uint64_t items = 0;
    while (timed < t.seconds_per_run) {
      prepare();
      const auto a = clock::now();
      batch();
      timed += std::chrono::duration<double>(clock::now() - a).count();
      items += batch_size;
      check_interrupt();
    }
    rates.push_back(static_cast<double>(items) / timed);
  }
  std::sort(rates.begin(), rates.end());
  return rates[rates.size() / 2];
}

inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

// One batched measurement: prepare() is not timed, batch() processes `items`
// items and is timed.
struct BatchedCase {
  std::function<void()> prepare;
  std::function<void()> batch;
  size_t items;
};

// Runs the cases in turn, each for about t.seconds_per_run, in t.runs rounds,
// so that a change of machine load during the bench hits them all alike
// (and a ratio can be taken round by round).  Returns rates[case][round].
inline std::vector<std::vector<double>> interleaved_rates(const Timing& t, const std::vector<BatchedCase>& cases) {
  std::vector<std::vector<double>> rates(cases.size());
  const Timing single{t.seconds_per_run, 1};
  for (int r = 0; r < t.runs; ++r)
    for (size_t c = 0; c < cases.size(); ++c)
      rates[c].push_back(measure_rate_batched(single, cases[c].items, cases[c].prepare, cases[c].batch));
  return rates;
}

// The median over rounds of a[round] / b[round].
inline double median_ratio(const std::vector<double>& a, const std::vector<double>& b) {
  std::vector<double> r;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) r.push_back(a[i] / b[i]);
  return median(r);
}

class Report {
 public:
  void add(const std::string& key, double value, const std::string& unit, const std::string& note) {
    rows_.push_back({key, value, unit, note});
  }

  void print_table(FILE* out) const {
    size_t w = 4;
    for (const auto& r : rows_) w = std::max(w, r.key.size());
    std::fprintf(out, "%-*s  %14s  %-10s  %s\n", static_cast<int>(w), "key", "value", "unit", "note");
    for (const auto& r : rows_) {
      // Seconds and percent: 1.468, not 1.
      if (r.unit == "ratio" || r.unit == "Gbit/s" || r.unit == "Mpps" || r.unit == "s" || r.unit == "%")
        std::fprintf(out, "%-*s  %14.3f  %-10s  %s\n", static_cast<int>(w), r.key.c_str(), r.value, r.unit.c_str(),
                     r.note.c_str());
      else
        std::fprintf(out, "%-*s  %14.0f  %-10s  %s\n", static_cast<int>(w), r.key.c_str(), r.value, r.unit.c_str(),
                     r.note.c_str());
    }
  }

  // A measurement that could not be made and why (printed after the table,
  // in JSON under "notes").
  void add_note(const std::string& key, const std::string& why) { notes_.push_back({key, why}); }

  void print_notes(FILE* out) const {
    for (const auto& n : notes_) std::fprintf(out, "not measured: %s: %s\n", n.first.c_str(), n.second.c_str());
  }

  bool write_json(const std::string& path) const {
    nlohmann::json j = nlohmann::json::object();
    for (const auto& r : rows_) j[r.key] = r.value;
    if (!notes_.empty()) {
      j["notes"] = nlohmann::json::object();
      for (const auto& n : notes_) j["notes"][n.first] = n.second;
    }
    std::ofstream f(path);
    f << j.dump(2) << "\n";
    return static_cast<bool>(f);
  }

 private:
  struct Row {
    std::string key;
    double value;
    std::string unit;
    std::string note;
  };
  std::vector<Row> rows_;
  std::vector<std::pair<std::string, std::string>> notes_;
};

// The engine group (ipsecov2_bench.cpp): every cipher label and size listed
// (empty: all of them).
struct EngineSelection {
  std::vector<std::string> ciphers;  // aes128gcm, aes256gcm, chacha20poly1305
  std::vector<uint32_t> sizes;       // 64, 512, 1400
};
void run_engine_benchmarks(Report& report, const Timing& t, const EngineSelection& only = {});
// Decapsulation + the worker's inbound policy check with 1 and `count` inbound policies.
void run_inbound_policy_benchmarks(Report& report, const Timing& t, uint32_t count);
// Raw AEAD records/s of `size` bytes on one prepared OpenSSL context (the
// baseline every ratio divides by); evp_name e.g. "AES-128-GCM".
// cpu_time: records per CPU-second of the measuring thread.
double raw_aead_records_per_s(const char* evp_name, uint32_t size, const Timing& t, bool cpu_time = false);
// A plaintext IPv4/UDP packet 10.1.0.1 -> 10.2.0.1 of exactly `size` bytes.
std::vector<uint8_t> plaintext_packet(uint32_t size);

// The pipeline group (pipeline_bench.cpp): needs root.  AF_XDP in -> ESP ->
// AF_XDP out through the real data plane, driven by the LIVE_FRAMES generator.
// Adds notes instead of keys for what it could not measure.  `cases`: a subset
// of encap64 decap64 encap1400 decap1400 scaling (empty: all).
void run_pipeline_benchmarks(Report& report, const Timing& t, const std::vector<std::string>& cases);

// Inbound lookup + decapsulation with 1 vs `sa_count` SAs installed (ipsecov2_bench.cpp).
void run_sa_scale_benchmarks(Report& report, const Timing& t, uint32_t sa_count);

struct ControlOptions {
  std::string daemon_binary;  // path of ipsecov2d
  uint32_t sa_count;          // SAs per direction
  bool with_wire;             // run the daemon in a private netns on a veth wire
  double idle_seconds;        // how long the idle daemon's CPU is measured with all 2 * sa_count SAs
};
// The control group (control_bench.cpp): needs root.  Throws std::runtime_error.
void run_control_benchmarks(Report& report, const ControlOptions& options);

// The tcp group (tcp_bench.cpp): runs scripts/bench/tcp_{ov2,plain,strongswan}.sh.
void run_tcp_benchmarks(Report& report, const std::string& scripts_dir, const std::string& build_dir,
                        unsigned seconds);

}  // namespace ov2::bench
