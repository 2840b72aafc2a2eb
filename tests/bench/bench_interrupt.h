// How ipsecov2-bench ends, and what it leaves behind when it cannot end well.
//
// SIGINT / SIGTERM (^C, timeout): the handler only counts the signal and
// writes to a pipe (async-signal-safe).  The bench looks between measurements
// and in every wait (check_interrupt, interruptible_sleep, interrupt_fd in a
// poll) and throws Interrupted, which is deliberately not a std::exception: it
// unwinds through the groups' RAII (generators, sinks, data planes,
// namespaces, daemons, scripts, temporary directories) and past their
// `catch (const std::exception&)` error paths up to main, which prints what
// was measured and which measurement was interrupted and exits with 128 + the
// signal (130, 143).  A second signal forces the exit: a thread of its own
// kills the process groups, deletes the namespaces and removes the paths
// registered as Leftovers, then _exits.
//
// SIGKILL cannot be caught.  Every name the bench creates carries its pid
// (own_prefix(): ov2bench<pid>...), its children die with it
// (PR_SET_PDEATHSIG, fork_child_group), and the next run removes what is left
// of pids that are gone or no longer the bench (sweep_stale_leftovers).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

namespace ov2::bench {

// Thrown at a check after SIGINT/SIGTERM; caught only by main.
struct Interrupted {};

// Installs the SIGINT/SIGTERM handlers and starts the forced-exit thread.
void install_interrupt_handlers();
// Before main returns: if a forced exit has begun, waits for its thread to
// end the process (its cleanup must not be cut short, nor the statics it
// uses destroyed).
void wait_if_forced_exit();
// The first SIGINT/SIGTERM received, 0 if none.
int interrupt_signal();
// Readable once a signal came (never drained): poll it next to what a wait waits for.
int interrupt_fd();
// Throws Interrupted if a signal came.  Also the first thing in a handler of
// an ordinary error: a child killed by the same ^C fails a command, and that
// failure is the interruption, not a measurement error.
void check_interrupt();
// Sleeps, or throws Interrupted as soon as a signal comes.
void interruptible_sleep(std::chrono::duration<double> d);

// The measurement running now (the message of an interrupted run names it);
// `announce`: also print it on stderr as progress.  Throws Interrupted first
// if a signal came during the previous one.
void set_stage(const std::string& stage, bool announce = false);
std::string current_stage();

// "ov2bench<pid>": the start of every namespace, directory and file this run creates.
std::string own_prefix();

// Something the forced exit (second signal) removes by itself while this
// object exists; the normal paths remove it through their own RAII.
class Leftover {
 public:
  enum class Kind {
    ProcessGroup,  // killed with SIGKILL ("1234")
    Namespace,     // its processes killed, then deleted ("ov2bench1234p1")
    Path,          // removed with everything under it
    PathGlob,      // every match removed ("/tmp/ov2b4321.*")
  };
  Leftover(Kind kind, std::string what);
  ~Leftover();
  // Removes it now, as a forced exit would (for a child that does not end).
  void remove_now() const;
  Leftover(const Leftover&) = delete;
  Leftover& operator=(const Leftover&) = delete;

 private:
  uint64_t id_;
  Kind kind_;
  std::string what_;
};

// fork() for a child that must not outlive the bench: in the child (0
// returned), SIGINT/SIGTERM are back to their defaults, it gets SIGTERM when
// the bench dies (PR_SET_PDEATHSIG; it exits at once if the bench is already
// gone) and it leads a process group of its own, so that its whole tree can
// be stopped and a ^C on the terminal reaches the bench only (which stops it
// in order).  Throws std::runtime_error if fork fails.
pid_t fork_child_group();

// A directory `parent`/own_prefix()`suffix`XXXXXX, removed with its files when
// destroyed (and by a forced exit, and by the next run after a SIGKILL).
class TempDir {
 public:
  TempDir(const std::string& parent, const std::string& suffix);
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  Leftover leftover_;
};

// Removes what earlier runs killed by SIGKILL (or forced out) left behind:
// namespaces ov2bench<pid>p<N>, directories /tmp/ov2bench<pid>... and
// /run/ov2bench<pid>... whose bench is gone (no /proc/<pid>, or that pid is now
// another program), and the namespaces ov2b<pid>a|b and work directories
// /tmp/ov2b<pid>.* of scripts/bench/tcp_*.sh runs whose script is gone.
// Processes still inside such a namespace are killed first.  One line on
// `log` per removal.  Needs root.
void sweep_stale_leftovers(FILE* log);

}  // namespace ov2::bench
