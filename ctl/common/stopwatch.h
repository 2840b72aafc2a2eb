// Wall-clock and this thread's CPU time since construction, for the log
// lines that say where start-up time goes (on a loaded machine the two differ
// a lot: the CPU time is what the code costs).
#pragma once

#include <time.h>

#include <cstdint>
#include <string>

namespace ov2 {

class Stopwatch {
 public:
  Stopwatch() : wall0_(now(CLOCK_MONOTONIC)), cpu0_(now(CLOCK_THREAD_CPUTIME_ID)) {}
  uint64_t wall_us() const { return now(CLOCK_MONOTONIC) - wall0_; }
  uint64_t cpu_us() const { return now(CLOCK_THREAD_CPUTIME_ID) - cpu0_; }
  // "W ms (CPU C ms)"
  std::string text() const {
    return std::to_string(wall_us() / 1000) + " ms (CPU " + std::to_string(cpu_us() / 1000) + " ms)";
  }

 private:
  static uint64_t now(clockid_t clock) {
    timespec ts{};
    clock_gettime(clock, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1000000 + static_cast<uint64_t>(ts.tv_nsec) / 1000;
  }
  uint64_t wall0_;
  uint64_t cpu0_;
};

}  // namespace ov2
