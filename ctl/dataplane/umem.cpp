#include "dataplane/umem.h"

#include <sys/mman.h>
#include <sys/resource.h>
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
  if (p == MAP_FAILED)
    fail(ErrorCode::ResourceExhausted, "cannot map the AF_XDP UMEM of " + size_text() + ": " + strerror(errno) +
                                           "; lower [worker] umem_frames in the configuration");
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
    area_ = nullptr;
    if (err == -ENOBUFS || err == -ENOMEM || err == -EPERM) {
      // The kernel pins the UMEM and charges it to RLIMIT_MEMLOCK unless the
      // process has CAP_IPC_LOCK (net/xdp/xdp_umem.c xdp_umem_account_pages).
      rlimit lim{};
      getrlimit(RLIMIT_MEMLOCK, &lim);
      const std::string limit =
          lim.rlim_cur == RLIM_INFINITY ? "unlimited" : std::to_string(lim.rlim_cur / 1024) + " KiB";
      fail(ErrorCode::ResourceExhausted,
           "cannot register the AF_XDP UMEM of " + size_text() + " (" + strerror(-err) +
               "): the kernel locks it in memory and it does not fit the locked-memory limit (RLIMIT_MEMLOCK " + limit +
               ") of ipsecov2d; raise the limit (LimitMEMLOCK=infinity in the systemd unit, `ulimit -l unlimited`, "
               "or give ipsecov2d CAP_IPC_LOCK) or lower [worker] umem_frames");
    }
    fail(ErrorCode::Kernel, "cannot register the AF_XDP UMEM of " + size_text() + ": " + strerror(-err));
  }
  free_.reset(new uint64_t[cfg.frames]);
  for (uint32_t i = 0; i < cfg.frames; ++i)
    free_[free_count_++] = static_cast<uint64_t>(cfg.frames - 1 - i) * cfg.frame_size;
}

std::string Umem::size_text() const {
  const std::string amount =
      area_size_ >= (1u << 20) ? std::to_string(area_size_ >> 20) + " MiB" : std::to_string(area_size_ >> 10) + " KiB";
  return amount + " (" + std::to_string(cfg_.frames) + " frames of " + std::to_string(cfg_.frame_size) + " bytes)";
}

Umem::~Umem() {
  if (umem_) xsk_umem__delete(umem_);
  if (area_) munmap(area_, area_size_);
}

}  // namespace ov2
