#include "dataplane/link_watch.h"

#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include "common/error.h"

#ifndef IFF_LOWER_UP
#define IFF_LOWER_UP 0x10000  // linux/if.h; not in glibc net/if.h
#endif

namespace ov2 {

namespace {
bool is_running(unsigned flags) { return (flags & IFF_UP) != 0 && (flags & IFF_LOWER_UP) != 0; }

// The flags of `ifindex` right now, or -1 if it does not exist.
long current_flags(int ifindex) {
  char name[IF_NAMESIZE];
  if (if_indextoname(static_cast<unsigned>(ifindex), name) == nullptr) return -1;
  const int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) return -1;
  ifreq ifr{};
  std::memcpy(ifr.ifr_name, name, std::min(std::strlen(name), sizeof ifr.ifr_name - 1));
  const int rc = ioctl(s, SIOCGIFFLAGS, &ifr);
  close(s);
  // SIOCGIFFLAGS has only 16 bits: carrier comes from IFF_RUNNING there.
  if (rc != 0) return -1;
  unsigned flags = static_cast<uint16_t>(ifr.ifr_flags);
  if (flags & IFF_RUNNING) flags |= IFF_LOWER_UP;
  return static_cast<long>(flags);
}
}  // namespace

const char* link_change_name(LinkWatch::Change change) {
  switch (change) {
    case LinkWatch::Change::Deleted:
      return "deleted";
    case LinkWatch::Change::Down:
      return "down";
    case LinkWatch::Change::Up:
      return "up";
  }
  return "unknown";
}

LinkWatch::LinkWatch() {
  fd_ = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, NETLINK_ROUTE);
  if (fd_ < 0) fail(ErrorCode::Kernel, std::string("cannot open rtnetlink for link events: ") + strerror(errno));
  sockaddr_nl addr{};
  addr.nl_family = AF_NETLINK;
  addr.nl_groups = RTMGRP_LINK;
  if (bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    const int e = errno;
    close(fd_);
    fail(ErrorCode::Kernel, std::string("cannot subscribe to link events: ") + strerror(e));
  }
}

LinkWatch::~LinkWatch() {
  if (fd_ >= 0) close(fd_);
}

void LinkWatch::watch(int ifindex, const std::string& name) {
  const long flags = current_flags(ifindex);
  watched_[ifindex] = Watched{name, flags >= 0 && is_running(static_cast<unsigned>(flags))};
}

void LinkWatch::poll() {
  std::vector<char> buf(32768);
  for (;;) {
    const ssize_t n = recv(fd_, buf.data(), buf.size(), 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == ENOBUFS) {  // notifications were lost: look at the state instead
        resync();
        continue;
      }
      return;  // EAGAIN: all read
    }
    handle(buf.data(), static_cast<size_t>(n));
  }
}

void LinkWatch::handle(const void* data, size_t len) {
  auto* nlh = static_cast<const nlmsghdr*>(data);
  for (; NLMSG_OK(nlh, len); nlh = NLMSG_NEXT(nlh, len)) {
    if (nlh->nlmsg_type != RTM_NEWLINK && nlh->nlmsg_type != RTM_DELLINK) continue;
    if (nlh->nlmsg_len < NLMSG_LENGTH(sizeof(ifinfomsg))) continue;
    const auto* ifi = static_cast<const ifinfomsg*>(NLMSG_DATA(nlh));
    auto it = watched_.find(ifi->ifi_index);
    if (it == watched_.end()) continue;
    if (nlh->nlmsg_type == RTM_DELLINK) {
      const std::string name = it->second.name;
      watched_.erase(it);
      if (callback_) callback_(name, Change::Deleted);
      continue;
    }
    const bool running = is_running(ifi->ifi_flags);
    if (running == it->second.running) continue;
    it->second.running = running;
    if (callback_) callback_(it->second.name, running ? Change::Up : Change::Down);
  }
}

void LinkWatch::resync() {
  for (auto it = watched_.begin(); it != watched_.end();) {
    const long flags = current_flags(it->first);
    const std::string name = it->second.name;
    if (flags < 0) {
      it = watched_.erase(it);
      if (callback_) callback_(name, Change::Deleted);
      continue;
    }
    const bool running = is_running(static_cast<unsigned>(flags));
    if (running != it->second.running) {
      it->second.running = running;
      if (callback_) callback_(name, running ? Change::Up : Change::Down);
    }
    ++it;
  }
}

}  // namespace ov2
