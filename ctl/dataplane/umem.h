// One AF_XDP UMEM per worker: the packet buffer area both of the worker's
// sockets (wire and ov2-nic) share, so a frame received on one is transmitted
// on the other without a copy, and a free-frame stack owned by that worker.
#pragma once

#include <xdp/xsk.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace ov2 {

class Umem {
 public:
  struct Config {
    uint32_t frames = 4096;      // number of frames
    uint32_t frame_size = 4096;  // power of two (aligned mode): 2048 or 4096
    uint32_t fill_size = 2048;   // fill/completion ring entries per socket (power of two)
    uint32_t comp_size = 2048;
  };

  // mmaps the area and registers it (xsk_umem__create).  Throws ov2::Error(Kernel).
  explicit Umem(const Config& cfg);
  ~Umem();
  Umem(const Umem&) = delete;
  Umem& operator=(const Umem&) = delete;

  xsk_umem* handle() const { return umem_; }
  uint8_t* area() const { return area_; }
  uint32_t frame_size() const { return cfg_.frame_size; }
  const Config& config() const { return cfg_; }

  // Free-frame stack (the owning worker thread only; no locks).
  bool alloc(uint64_t* addr) {
    if (free_count_ == 0) return false;
    *addr = free_[--free_count_];
    return true;
  }
  // Takes back the frame that contains `addr` (any offset inside the frame).
  void release(uint64_t addr) { free_[free_count_++] = addr & ~static_cast<uint64_t>(cfg_.frame_size - 1); }
  uint32_t free_frames() const { return free_count_; }

 private:
  // "8 MiB (4096 frames of 2048 bytes)", for messages.
  std::string size_text() const;
  Config cfg_;
  uint8_t* area_ = nullptr;
  size_t area_size_ = 0;
  xsk_umem* umem_ = nullptr;
  xsk_ring_prod fill_save_{};  // handed to xsk_umem__create; the first socket copies it
  xsk_ring_cons comp_save_{};
  std::unique_ptr<uint64_t[]> free_;
  uint32_t free_count_ = 0;
};

}  // namespace ov2
