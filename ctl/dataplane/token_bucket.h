// A token bucket (RFC 4443 §2.4(f)): `per_second` tokens a second, at most
// `burst` saved up, full at the start.  One thread; no allocation.  The worker
// limits its ICMP errors with it.
#pragma once

#include <algorithm>
#include <cstdint>

namespace ov2 {

class TokenBucket {
 public:
  TokenBucket(uint32_t per_second, uint32_t burst)
      : interval_ns_(per_second ? 1000000000ull / per_second : UINT64_MAX),
        cap_ns_(per_second ? interval_ns_ * burst : 0),
        credit_ns_(cap_ns_) {}

  // Takes one token if there is one at `now_ns` (CLOCK_MONOTONIC).
  bool take(uint64_t now_ns) {
    if (now_ns > last_ns_) {
      credit_ns_ = std::min(cap_ns_, credit_ns_ + (now_ns - last_ns_));
      last_ns_ = now_ns;
    }
    if (credit_ns_ < interval_ns_) return false;
    credit_ns_ -= interval_ns_;
    return true;
  }

 private:
  uint64_t interval_ns_;  // time one token takes to come back
  uint64_t cap_ns_;       // burst tokens' worth
  uint64_t credit_ns_;
  uint64_t last_ns_ = 0;
};

}  // namespace ov2
