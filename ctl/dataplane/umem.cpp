#include "dataplane/umem.h"

#include <sys/mman.h>
#include <xdp/xsk.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "common/error.h"

namespace ov2 {

Umem::Umem(const Config& cfg) : cfg_(cfg) {
  if (cfg.frame_size != 2048 && cfg.frame_size != 4096)
    fail(ErrorCode::InvalidArgument, "UMEM frame size must be 2048 or 4096");
  if (cfg.frames < 64) fail(ErrorCode::InvalidArgument, "UMEM needs at least 64 frames");
  area_size_ = static_cast<size_t>(cfg.frames) * cfg.frame_size;
  void* p = mmap(nullptr, area_size_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) fail(ErrorCode::Kernel, std::string("cannot map the UMEM area: ") + strerror(errno));
  area_ = static_cast<uint8_t*>(p);
  // Keys never land here, but packets do: keep them out of core dumps too.
  madvise(area_, area_size_, MADV_DONTDUMP);
  // The rings below are placeholders: each socket passes its own fill/completion
  // rings to xsk_socket__create_shared, and libxdp copies these over on the first.
  xsk_umem_config ucfg{};
  ucfg.fill_size = cfg.fill_size;
  ucfg.comp_size = cfg.comp_size;
  ucfg.frame_size = cfg.frame_size;
  ucfg.frame_headroom = 0;  // XDP_PACKET_HEADROOM (256) before the data is room enough for ESP + meta
  ucfg.flags = 0;
  int err = xsk_umem__create(&umem_, area_, area_size_, &fill_save_, &comp_save_, &ucfg);
  if (err) {
    munmap(area_, area_size_);
    fail(ErrorCode::Kernel, std::string("cannot register the AF_XDP UMEM: ") + strerror(-err));
  }
  free_.reset(new uint64_t[cfg.frames]);
  for (uint32_t i = 0; i < cfg.frames; ++i)
    free_[free_count_++] = static_cast<uint64_t>(cfg.frames - 1 - i) * cfg.frame_size;
}

Umem::~Umem() {
  if (umem_) xsk_umem__delete(umem_);
  if (area_) munmap(area_, area_size_);
}

}  // namespace ov2
