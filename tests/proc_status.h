// What /proc says about a process, for tests and the bench.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <string>

namespace ov2::test {

// VmRSS of process `pid` (0: this process) in bytes, 0 if unreadable.
inline uint64_t vm_rss_bytes(pid_t pid) {
  std::ifstream f(pid == 0 ? std::string("/proc/self/status") : "/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::strtoull(line.c_str() + 6, nullptr, 10) * 1024;
  return 0;
}

}  // namespace ov2::test
