// Helpers for the reliability tests (reliability_*.cpp): a sequence-numbered
// UDP stream between two namespaces and a make-before-break rekey driven over
// the control socket the way an IKE daemon would drive it.  Needs root.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "control/control_client.h"

namespace ov2::reliability {

// A UDP socket created inside the named network namespace (/run/netns/NAME),
// bound to addr:port.  The calling thread returns to its own namespace.
inline int udp_socket_in(const std::string& netns, const char* addr, uint16_t port) {
  const int self = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
  const int target = open(("/run/netns/" + netns).c_str(), O_RDONLY | O_CLOEXEC);
  if (self < 0 || target < 0 || setns(target, CLONE_NEWNET) != 0) {
    if (self >= 0) close(self);
    if (target >= 0) close(target);
    throw std::runtime_error("cannot enter namespace " + netns);
  }
  close(target);
  const int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  const int restored = setns(self, CLONE_NEWNET);
  close(self);
  if (restored != 0) std::abort();  // never continue in the wrong namespace
  if (fd < 0) throw std::runtime_error("socket failed");
  int big = 8 << 20;
  setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof big);
  setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &big, sizeof big);
  int on = 1;
  setsockopt(fd, SOL_SOCKET, SO_RXQ_OVFL, &on, sizeof on);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(port);
  inet_pton(AF_INET, addr, &sa.sin_addr);
  if (bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
    close(fd);
    throw std::runtime_error(std::string("bind ") + addr + " failed: " + strerror(errno));
  }
  return fd;
}

// What the receiver saw of one stream.
struct StreamResult {
  uint64_t sent = 0;
  uint64_t received = 0;  // datagrams, duplicates included
  uint64_t unique = 0;    // distinct sequence numbers
  uint64_t duplicates = 0;
  uint64_t reordered = 0;     // arrived after a higher sequence number
  uint64_t max_reorder = 0;   // the largest such distance
  uint64_t send_errors = 0;   // sendto() refused (e.g. no route): the sender's own count
  uint64_t socket_drops = 0;  // the receiving socket's overflow count (SO_RXQ_OVFL)
  uint64_t lost() const { return sent - unique; }
  // "sent N, received N, lost N (a-b,...), duplicated N, reordered N (max distance N), ...", for test output.
  std::string text() const {
    return "sent " + std::to_string(sent) + ", received " + std::to_string(received) + ", lost " +
           std::to_string(lost()) + (missing.empty() ? "" : " (" + missing + ")") + ", duplicated " +
           std::to_string(duplicates) + ", reordered " + std::to_string(reordered) + " (max distance " +
           std::to_string(max_reorder) + "), send errors " + std::to_string(send_errors) + ", socket drops " +
           std::to_string(socket_drops);
  }
  // Sequence numbers that never arrived, as ranges "a-b" (at most 20).
  std::string missing;
};

// One direction: a paced sender (each datagram carries its 64-bit sequence
// number, then padding) in one namespace, a receiver in the other.
class SeqStream {
 public:
  SeqStream(const std::string& from_ns, const char* from_addr, const std::string& to_ns, const char* to_addr,
            uint16_t port, uint32_t pps, size_t payload = 200)
      : pps_(pps), payload_(std::max<size_t>(payload, 8)) {
    rx_ = udp_socket_in(to_ns, to_addr, port);
    tx_ = udp_socket_in(from_ns, from_addr, 0);
    dst_.sin_family = AF_INET;
    dst_.sin_port = htons(port);
    inet_pton(AF_INET, to_addr, &dst_.sin_addr);
  }
  ~SeqStream() {
    stop_sending();
    stop_receiving();
    close(rx_);
    close(tx_);
  }
  SeqStream(const SeqStream&) = delete;
  SeqStream& operator=(const SeqStream&) = delete;

  void start() {
    receiver_ = std::thread([this] { receive_loop(); });
    sender_ = std::thread([this] { send_loop(); });
  }
  void stop_sending() {
    sending_ = false;
    if (sender_.joinable()) sender_.join();
  }
  // Waits until `settle_ms` pass without a new datagram (bounded by 5 s), then stops.
  void stop_receiving(int settle_ms = 500) {
    if (!receiver_.joinable()) return;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    uint64_t last = received_.load();
    auto quiet_since = std::chrono::steady_clock::now();
    while (std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      const uint64_t now = received_.load();
      if (now != last) {
        last = now;
        quiet_since = std::chrono::steady_clock::now();
      } else if (std::chrono::steady_clock::now() - quiet_since > std::chrono::milliseconds(settle_ms)) {
        break;
      }
    }
    receiving_ = false;
    receiver_.join();
  }
  uint64_t sent() const { return sent_.load(); }
  uint64_t received() const { return received_.load(); }

  // Valid after stop_sending() and stop_receiving().
  StreamResult result() const {
    StreamResult r;
    r.sent = sent_;
    r.received = received_;
    r.duplicates = duplicates_;
    r.reordered = reordered_;
    r.max_reorder = max_reorder_;
    r.send_errors = send_errors_;
    r.socket_drops = socket_drops_;
    int ranges = 0;
    for (uint64_t s = 0; s < r.sent; ++s) {
      if (s < seen_.size() && seen_[s]) {
        ++r.unique;
        continue;
      }
      uint64_t e = s;
      while (e + 1 < r.sent && !(e + 1 < seen_.size() && seen_[e + 1])) ++e;
      if (ranges++ < 20) r.missing += (r.missing.empty() ? "" : ",") + std::to_string(s) + "-" + std::to_string(e);
      s = e;
    }
    return r;
  }

 private:
  void send_loop() {
    std::vector<uint8_t> buf(payload_, 0xa5);
    const auto t0 = std::chrono::steady_clock::now();
    uint64_t seq = 0;
    while (sending_) {
      const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      const uint64_t due = static_cast<uint64_t>(elapsed * pps_);
      while (seq < due && sending_) {
        std::memcpy(buf.data(), &seq, sizeof seq);
        if (sendto(tx_, buf.data(), buf.size(), 0, reinterpret_cast<const sockaddr*>(&dst_), sizeof dst_) < 0) {
          ++send_errors_;
          break;  // counted, retried at the next tick with the same number: the stream stays dense
        }
        ++seq;
        sent_ = seq;
      }
      std::this_thread::sleep_for(std::chrono::microseconds(500));
    }
  }

  void receive_loop() {
    std::vector<uint8_t> buf(65536);
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(uint32_t))];
    uint64_t highest = 0;
    bool any = false;
    while (receiving_) {
      pollfd p{rx_, POLLIN, 0};
      if (poll(&p, 1, 50) != 1) continue;
      iovec iov{buf.data(), buf.size()};
      msghdr msg{};
      msg.msg_iov = &iov;
      msg.msg_iovlen = 1;
      msg.msg_control = control;
      msg.msg_controllen = sizeof control;
      const ssize_t n = recvmsg(rx_, &msg, MSG_DONTWAIT);
      if (n < static_cast<ssize_t>(sizeof(uint64_t))) continue;
      for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c))
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SO_RXQ_OVFL)
          std::memcpy(&socket_drops_, CMSG_DATA(c), sizeof(uint32_t));
      uint64_t seq;
      std::memcpy(&seq, buf.data(), sizeof seq);
      if (seq > (1u << 28)) continue;  // not ours
      if (seq >= seen_.size()) seen_.resize(std::max<size_t>(seq + 1, seen_.size() * 2), false);
      if (seen_[seq]) {
        ++duplicates_;
      } else {
        seen_[seq] = true;
        if (any && seq < highest) {
          ++reordered_;
          max_reorder_ = std::max(max_reorder_, highest - seq);
        }
      }
      if (!any || seq > highest) highest = seq;
      any = true;
      received_.fetch_add(1);
    }
  }

  uint32_t pps_;
  size_t payload_;
  int rx_ = -1, tx_ = -1;
  sockaddr_in dst_{};
  std::thread sender_, receiver_;
  std::atomic<bool> sending_{true}, receiving_{true};
  std::atomic<uint64_t> sent_{0}, received_{0};
  uint64_t send_errors_ = 0, duplicates_ = 0, reordered_ = 0, max_reorder_ = 0;
  uint32_t socket_drops_ = 0;
  std::vector<bool> seen_;
};

// Collects the daemon's monitor events (op "monitor") on a thread until destroyed.
class MonitorTap {
 public:
  explicit MonitorTap(const std::string& socket) : client_(socket) {
    if (!client_.call({{"op", "monitor"}}).value("ok", false)) throw std::runtime_error("monitor refused");
    thread_ = std::thread([this] {
      while (!stop_) {
        try {
          auto line = client_.next_line(100);
          if (!line) return;  // the daemon closed the stream
          std::lock_guard<std::mutex> lock(mu_);
          events_.push_back(*line);
        } catch (const std::exception&) {
          // timeout: look at stop_ again
        }
      }
    });
  }
  ~MonitorTap() {
    stop_ = true;
    thread_.join();
  }
  MonitorTap(const MonitorTap&) = delete;
  MonitorTap& operator=(const MonitorTap&) = delete;
  // The events seen so far whose "event" is `name`.
  std::vector<nlohmann::json> events(const std::string& name) {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<nlohmann::json> out;
    for (const auto& e : events_)
      if (e.value("event", "") == name) out.push_back(e);
    return out;
  }

 private:
  ControlClient client_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::vector<nlohmann::json> events_;
};

// `n` random bytes as hex (fresh key material for every SA generation).
inline std::string random_hex(size_t n) {
  static std::mt19937_64 rng(std::random_device{}());
  static const char* digits = "0123456789abcdef";
  std::string s;
  for (size_t i = 0; i < n; ++i) {
    const auto b = static_cast<unsigned>(rng() & 0xff);
    s += digits[b >> 4];
    s += digits[b & 15];
  }
  return s;
}

// One host's view of a tunnel as an IKE daemon keeps it: the current inbound
// and outbound SA and the two policies that use them, over the control socket.
class TunnelEnd {
 public:
  TunnelEnd(const std::string& socket, std::string me, std::string peer)
      : client_(socket), me_(std::move(me)), peer_(std::move(peer)) {
    // Adopt what is installed: one outbound and one inbound SA, a policy each.
    const nlohmann::json sas = ok(client_.call({{"op", "sa.list"}}), "sa.list")["sas"];
    for (const auto& s : sas) (s["dir"] == "out" ? out_sa : in_sa) = s["handle"].get<std::string>();
    const nlohmann::json pols = ok(client_.call({{"op", "policy.list"}}), "policy.list")["policies"];
    for (const auto& p : pols) (p["dir"] == "out" ? out_policy : in_policy) = p["id"].get<uint32_t>();
    if (out_sa.empty() || in_sa.empty() || out_policy == 0 || in_policy == 0)
      throw std::runtime_error("TunnelEnd: expected one SA and one policy per direction");
  }

  // Adds an SA (AES-GCM-128, tunnel mode, this key) and returns its handle.
  std::string add_sa(const char* dir, uint32_t spi, const std::string& key_hex) {
    const bool out = std::string(dir) == "out";
    nlohmann::json sa = {{"dir", dir},
                         {"mode", "tunnel"},
                         {"src", out ? me_ : peer_},
                         {"dst", out ? peer_ : me_},
                         {"spi", spi},
                         {"aead", "aes-gcm-128"},
                         {"key", key_hex}};
    return ok(client_.call({{"op", "sa.add"}, {"sa", std::move(sa)}}), "sa.add")["handle"].get<std::string>();
  }
  void switch_policy(uint32_t id, const std::string& sa) {
    ok(client_.call({{"op", "policy.update"}, {"id", id}, {"sa", sa}}), "policy.update");
  }
  void delete_sas(const std::vector<std::string>& handles) {
    ok(client_.call({{"op", "sa.del"}, {"handles", handles}}), "sa.del");
  }
  // The per-SA counters (`stats` "sas" entry) of this handle, or null.
  nlohmann::json sa_stats(const std::string& handle) {
    const nlohmann::json all = stats();  // a named copy: the loop must not run over a temporary's member
    for (const auto& s : all["sas"])
      if (s["handle"] == handle) return s;
    return nullptr;
  }
  nlohmann::json stats() { return ok(client_.call({{"op", "stats"}}), "stats")["stats"]; }

  std::string out_sa, in_sa;
  uint32_t out_policy = 0, in_policy = 0;

 private:
  static nlohmann::json ok(nlohmann::json answer, const char* what) {
    if (!answer.value("ok", false)) throw std::runtime_error(std::string(what) + " failed: " + answer.dump());
    return answer;
  }
  ControlClient client_;
  std::string me_, peer_;
};

// Counters of one retired SA generation, read just before it was deleted.
struct Generation {
  uint64_t a_out = 0, b_in = 0;  // packets A encrypted / B decrypted on the A->B SA
  uint64_t b_out = 0, a_in = 0;  // the same for B->A
  nlohmann::json errors_b_in, errors_a_in;
};

// Make-before-break rekey of the tunnel between A and B, as an IKE daemon
// does it for a CHILD_SA:
//   1. both new inbound SAs are installed (each host can now decrypt the new
//      generation before anyone sends it);
//   2. both new outbound SAs are installed;
//   3. each host switches its outbound policy to the new outbound SA in one
//      step (policy.update: the SPD is replaced as a whole, no packet ever
//      sees no policy, none goes out in clear);
//   4. the old SAs stay for `drain_ms` (packets already encrypted with the
//      old outbound SA, or queued in front of the worker with its handle, are
//      still decrypted by the old inbound SA);
//   5. the inbound policies move to the new inbound SAs, the old SAs' counters
//      are read and the old SAs are deleted.
// Returns the counters of the retired generation.
inline Generation rekey(TunnelEnd& a, TunnelEnd& b, uint32_t spi_ab, uint32_t spi_ba, int drain_ms) {
  const std::string key_ab = random_hex(20), key_ba = random_hex(20);
  const std::string b_in = b.add_sa("in", spi_ab, key_ab);
  const std::string a_in = a.add_sa("in", spi_ba, key_ba);
  const std::string a_out = a.add_sa("out", spi_ab, key_ab);
  const std::string b_out = b.add_sa("out", spi_ba, key_ba);
  a.switch_policy(a.out_policy, a_out);
  b.switch_policy(b.out_policy, b_out);
  std::this_thread::sleep_for(std::chrono::milliseconds(drain_ms));
  a.switch_policy(a.in_policy, a_in);
  b.switch_policy(b.in_policy, b_in);
  Generation g;
  const nlohmann::json sa_a_out = a.sa_stats(a.out_sa), sa_a_in = a.sa_stats(a.in_sa);
  const nlohmann::json sa_b_out = b.sa_stats(b.out_sa), sa_b_in = b.sa_stats(b.in_sa);
  g.a_out = sa_a_out.is_null() ? 0 : sa_a_out["packets"].get<uint64_t>();
  g.a_in = sa_a_in.is_null() ? 0 : sa_a_in["packets"].get<uint64_t>();
  g.b_out = sa_b_out.is_null() ? 0 : sa_b_out["packets"].get<uint64_t>();
  g.b_in = sa_b_in.is_null() ? 0 : sa_b_in["packets"].get<uint64_t>();
  if (!sa_b_in.is_null()) g.errors_b_in = sa_b_in["errors"];
  if (!sa_a_in.is_null()) g.errors_a_in = sa_a_in["errors"];
  a.delete_sas({a.out_sa, a.in_sa});
  b.delete_sas({b.out_sa, b.in_sa});
  a.out_sa = a_out;
  a.in_sa = a_in;
  b.out_sa = b_out;
  b.in_sa = b_in;
  return g;
}

}  // namespace ov2::reliability
