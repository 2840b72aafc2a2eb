#include "dataplane/event_reader.h"

#include <bpf/libbpf.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "common/error.h"

namespace ov2 {

EventReader::EventReader(int events_fd, Callback callback) : callback_(std::move(callback)) {
  rb_ = ring_buffer__new(events_fd, &EventReader::on_event, this, nullptr);
  if (!rb_) fail(ErrorCode::Kernel, std::string("cannot open the BPF event ring buffer: ") + strerror(errno));
}

EventReader::~EventReader() { ring_buffer__free(rb_); }

int EventReader::on_event(void* ctx, void* data, size_t size) {
  if (size < sizeof(ov2_event)) return 0;  // not ours: skip
  ov2_event ev;
  std::memcpy(&ev, data, sizeof(ev));
  static_cast<EventReader*>(ctx)->callback_(ev);
  return 0;
}

int EventReader::poll(int timeout_ms) {
  int n = ring_buffer__poll(rb_, timeout_ms);
  if (n < 0 && n != -EINTR) fail(ErrorCode::Kernel, std::string("BPF event ring buffer poll: ") + strerror(-n));
  return n < 0 ? 0 : n;
}

int EventReader::fd() const { return ring_buffer__epoll_fd(rb_); }

}  // namespace ov2
