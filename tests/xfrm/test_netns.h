// A throwaway network namespace with a veth pair, for the XFRM tests: named
// ov2x<pid><tag>, removed on destruction (also when a test fails), leftovers
// of dead test processes with the same prefix removed on creation.
#pragma once

#include <functional>
#include <string>

namespace ov2::xfrm::test {

// Runs a shell command; returns its exit status and stdout.
struct CommandResult {
  int status = -1;
  std::string out;
};
CommandResult run_command(const std::string& cmd);

class TestNetns {
 public:
  // Creates the namespace and a veth pair `dev` <-> `peer` inside it (up).
  TestNetns(const std::string& tag, const std::string& dev = "ov2v0", const std::string& peer = "ov2v1");
  ~TestNetns();
  TestNetns(const TestNetns&) = delete;
  TestNetns& operator=(const TestNetns&) = delete;

  const std::string& name() const { return name_; }
  const std::string& dev() const { return dev_; }
  std::string path() const { return "/run/netns/" + name_; }
  // The interface index of `ifname` inside the namespace.
  int ifindex(const std::string& ifname) const;
  // Runs `fn` on a thread that has entered the namespace (sockets it opens
  // stay in the namespace); rethrows what fn throws.
  void run_inside(const std::function<void()>& fn) const;

 private:
  std::string name_;
  std::string dev_;
};

}  // namespace ov2::xfrm::test
