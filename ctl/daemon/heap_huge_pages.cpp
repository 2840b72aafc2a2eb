#include "daemon/heap_huge_pages.h"

#include <unistd.h>

#include <cstdlib>
#include <cstring>

namespace ov2 {

std::optional<std::string> tunables_with_heap_huge_pages(const char* current) {
  constexpr const char* kTunable = "glibc.malloc.hugetlb";
  if (current == nullptr || *current == '\0') return std::string(kTunable) + "=1";
  if (std::strstr(current, kTunable) != nullptr) return std::nullopt;
  return std::string(current) + ":" + kTunable + "=1";
}

void reexec_with_heap_huge_pages(char** argv) {
  const std::optional<std::string> tunables = tunables_with_heap_huge_pages(std::getenv("GLIBC_TUNABLES"));
  if (!tunables) return;
  if (setenv("GLIBC_TUNABLES", tunables->c_str(), 1) != 0) return;
  execv("/proc/self/exe", argv);
  // No /proc, or the exec was refused: run on as we are (the tunable stays set, so no second try).
}

}  // namespace ov2
