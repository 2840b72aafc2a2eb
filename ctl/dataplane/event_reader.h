// Reads the ov2_verdict ring buffer (SaDeleteReq events) for the daemon.
#pragma once

#include <functional>

#include "ov2_abi.h"

struct ring_buffer;

namespace ov2 {

class EventReader {
 public:
  using Callback = std::function<void(const ov2_event&)>;

  // `events_fd` is BpfPrograms::events_fd() (not owned).  Throws ov2::Error(Kernel).
  EventReader(int events_fd, Callback callback);
  ~EventReader();
  EventReader(const EventReader&) = delete;
  EventReader& operator=(const EventReader&) = delete;

  // Waits up to `timeout_ms` (0: no wait) and calls the callback for each event;
  // returns how many were handled.  Throws ov2::Error(Kernel) on a poll error.
  int poll(int timeout_ms);
  // An epoll fd that becomes readable when events are pending (for the daemon's loop).
  int fd() const;

 private:
  static int on_event(void* ctx, void* data, size_t size);
  Callback callback_;
  ring_buffer* rb_ = nullptr;
};

}  // namespace ov2
