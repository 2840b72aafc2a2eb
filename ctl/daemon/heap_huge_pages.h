// Transparent huge pages for the daemon's heap.
//
// A start that restores 200 000 SAs touches about half a gigabyte of fresh
// heap (parsed specs, ESP objects, database records, the start-up snapshot's
// copy).  With 4 KiB pages that is ~125 000 page faults, and on the virtual
// machines we run on a fault costs several microseconds: a third of the
// restore's CPU time went there.  glibc puts its heap on huge pages when told
// so by the tunable glibc.malloc.hugetlb=1 (madvise(MADV_HUGEPAGE) on what it
// takes from the system; the kernel's THP mode "madvise" honours it), but a
// tunable is read only when the program starts -- hence a re-exec.
#pragma once

#include <optional>
#include <string>

namespace ov2 {

// The GLIBC_TUNABLES value that adds glibc.malloc.hugetlb=1 to `current`
// (null: unset), or nullopt when `current` already says something about
// glibc.malloc.hugetlb (the administrator's choice, or our own re-exec).
std::optional<std::string> tunables_with_heap_huge_pages(const char* current);

// When GLIBC_TUNABLES does not choose yet: sets it and execs this program
// again with the same arguments (same pid).  Returns (nothing changed) if the
// exec fails -- the daemon then runs on 4 KiB pages.  Call first in main().
void reexec_with_heap_huge_pages(char** argv);

}  // namespace ov2
