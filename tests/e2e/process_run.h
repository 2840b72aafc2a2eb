// The built daemon and CLI, and a way to run a program, for the end-to-end
// tests (daemon_harness.h, service_harness.h): argv without a shell, `input`
// on its stdin, stdout and stderr captured, its exit code (128 + the signal
// if one killed it).
#pragma once

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <functional>
#include <string>
#include <thread>
#include <vector>

namespace ov2::e2e {

inline const std::string kDaemon = OV2_BINARY_DIR "/ctl/ipsecov2d";
inline const std::string kCtl = OV2_BINARY_DIR "/ctl/ipsecov2ctl";

struct Result {
  int exit_code = -1;
  std::string out;
  std::string err;
};

inline std::string read_fd(int fd) {
  std::string s;
  char buf[4096];
  ssize_t n;
  while ((n = read(fd, buf, sizeof buf)) > 0) s.append(buf, static_cast<size_t>(n));
  return s;
}

// `argv[0]` is looked up in PATH unless it names a path; `in_child` runs in
// the child after fork (e.g. to drop privileges or set environment variables).
inline Result run(const std::vector<std::string>& argv, const std::string& input = "",
                  const std::function<void()>& in_child = {}) {
  int in[2], out[2], err[2];
  if (pipe2(in, O_CLOEXEC) != 0 || pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0) return {};
  const pid_t pid = fork();
  if (pid == 0) {
    dup2(in[0], 0);
    dup2(out[1], 1);
    dup2(err[1], 2);
    if (in_child) in_child();
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execvp(args[0], args.data());
    _exit(127);
  }
  close(in[0]);
  close(out[1]);
  close(err[1]);
  (void)!write(in[1], input.data(), input.size());
  close(in[1]);
  Result r;
  std::thread t([&] { r.err = read_fd(err[0]); });
  r.out = read_fd(out[0]);
  t.join();
  close(out[0]);
  close(err[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

}  // namespace ov2::e2e
