// Watches network interfaces for changes made from outside the daemon (an
// admin's `ip link del ov2`, a cable pulled, a NIC unplugged): an rtnetlink
// socket subscribed to link notifications, read from the daemon's event loop.
#pragma once

#include <functional>
#include <map>
#include <string>

namespace ov2 {

class LinkWatch {
 public:
  enum class Change { Deleted, Down, Up };
  using Callback = std::function<void(const std::string& name, Change change)>;

  // Opens the socket (non-blocking, RTMGRP_LINK).  Throws ov2::Error(Kernel).
  LinkWatch();
  ~LinkWatch();
  LinkWatch(const LinkWatch&) = delete;
  LinkWatch& operator=(const LinkWatch&) = delete;

  // Reports changes of the interface with this ifindex under `name`.  The
  // operational state it starts from is read now (Up/Down are reported only
  // when it changes).
  void watch(int ifindex, const std::string& name);
  void set_callback(Callback cb) { callback_ = std::move(cb); }

  // For the event loop: readable when notifications are queued.
  int fd() const { return fd_; }
  // Reads every queued notification and calls the callback for changes of
  // watched interfaces.  If the socket overflowed (ENOBUFS), asks the kernel
  // for the current state of each watched interface instead.
  void poll();

 private:
  struct Watched {
    std::string name;
    bool running = false;  // IFF_UP and IFF_LOWER_UP (carrier)
  };
  void handle(const void* buf, size_t len);
  void resync();
  int fd_ = -1;
  std::map<int, Watched> watched_;
  Callback callback_;
};

// "deleted", "down", "up".
const char* link_change_name(LinkWatch::Change change);

}  // namespace ov2
