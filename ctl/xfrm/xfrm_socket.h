// A NETLINK_XFRM socket: sends one request, waits for the kernel's answer, and
// turns a refusal into plain words a user can act on (never with key bytes:
// the socket asks for capped acks, so the kernel does not even echo the keys).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"
#include "xfrm/xfrm_messages.h"

struct mnl_socket;

namespace ov2::xfrm {

enum class XfrmOperation : uint8_t {
  AddSa,
  DeleteSa,
  GetSa,
  GetReplayState,
  UpdateReplayState,
  AddPolicy,
  DeletePolicy,
  GetPolicy
};

// What a request was about, for the error message (no keys here).
struct RequestContext {
  XfrmOperation op = XfrmOperation::AddSa;
  std::string subject;    // e.g. "outbound SA spi 0x00001000 to 192.0.2.2"
  std::string device;     // offload device name, empty without offload
  std::string algorithm;  // XFRM algorithm name(s), for "no implementation of"
};

// Describes an SA for messages: direction, SPI, destination.
std::string describe_sa(const SaSpec& sa);
std::string describe_sa(const SaId& id);

// The kernel's refusal (negative errno from NLMSG_ERROR, plus its extack
// text) in plain words: what failed, why, what to do.  Pure; tested directly.
std::string describe_kernel_refusal(const RequestContext& ctx, int error, std::string_view extack);
// ov2::ErrorCode for a kernel errno (EEXIST -> Exists, ESRCH -> NotFound, ...).
ErrorCode error_code_for_errno(int error);

class XfrmSocket {
 public:
  // Opens and binds a NETLINK_XFRM socket in the caller's network namespace.
  // Throws ov2::Error(Kernel) with plain words (e.g. missing CAP_NET_ADMIN).
  XfrmSocket();
  ~XfrmSocket();
  XfrmSocket(const XfrmSocket&) = delete;
  XfrmSocket& operator=(const XfrmSocket&) = delete;

  // Sends `req` (sequence number and port id are set here), waits up to
  // `timeout_ms` for the ACK and returns the reply messages that came before
  // it (GET requests), each a copy owned by the caller.  A refusal throws
  // ov2::Error(error_code_for_errno(e), describe_kernel_refusal(...)).
  std::vector<std::vector<uint8_t>> transact(NetlinkRequest& req, const RequestContext& ctx, int timeout_ms = 5000);

  // Installs an SA (XFRM_MSG_NEWSA).  `device_name` is only for messages.
  // With offload, reads the SA back: a kernel without CONFIG_XFRM_OFFLOAD, or
  // a device without an XFRM offload driver (crypto mode), installs a plain
  // software SA silently; then the SA is deleted again and this throws
  // ov2::Error(Unsupported) "device D cannot offload this SA: ...".
  void add_sa(const SaSpec& sa, const NewSaOptions& options, std::string_view device_name);
  // Deletes an SA (XFRM_MSG_DELSA).
  void delete_sa(const SaId& id);
  // Reads an SA back (XFRM_MSG_GETSA): counters, replay state, offload.
  SaReadback get_sa(const SaId& id);
  // Reads the replay state (XFRM_MSG_GETAE).
  AeReadback get_replay_state(const SaId& id, uint32_t reqid);
  // UPDATE_SA: sets the ESN high-order bits (seq_hi for inbound, oseq_hi for
  // outbound) by reading the replay state and writing it back changed.
  void set_esn_high_bits(const SaId& id, uint32_t reqid, Direction dir, uint32_t high_bits);
  // Installs a policy (XFRM_MSG_NEWPOLICY).  With packet offload
  // (offload_ifindex != 0) reads it back; if the kernel dropped the offload
  // (it does so silently without CONFIG_XFRM_OFFLOAD) the policy is deleted
  // again and this throws ov2::Error(Unsupported) "device D cannot offload
  // this policy: ...".  `device_name` is only for messages.  `replace`:
  // XFRM_MSG_UPDPOLICY (replaces the entry with the same key in place).
  void add_policy(const XfrmPolicy& policy, std::string_view device_name, bool replace = false);
  // Deletes a policy (XFRM_MSG_DELPOLICY by selector and direction).
  void delete_policy(const XfrmPolicy& policy);
  // Deletes a policy by its index and direction.
  void delete_policy_by_index(uint32_t index, XfrmPolicyDir dir);
  // Every main-type policy of the namespace, as the kernel holds it.
  std::vector<XfrmPolicy> dump_policies();

 private:
  // Rollback after a failed add; errors here would hide the real one.
  void delete_quietly(const SaId& id) noexcept;
  void delete_policy_quietly(const XfrmPolicy& policy) noexcept;

  mnl_socket* nl_ = nullptr;
  uint32_t port_id_ = 0;
  uint32_t seq_ = 0;
};

// A NETLINK_XFRM socket subscribed to XFRMNLGRP_EXPIRE (soft and hard SA
// expiry) and XFRMNLGRP_SA (SA changes, for SAs deleted by someone else), in
// the caller's network namespace.  Non-blocking: poll fd(), then read().
// The SA group also carries other processes' NEWSA notifications with their
// keys: the receive buffer is wiped after each read and nothing but what
// parse_kernel_sa_event keeps leaves it.
class XfrmEventSocket {
 public:
  // Throws ov2::Error(Kernel) in plain words (no XFRM, no CAP_NET_ADMIN).
  XfrmEventSocket();
  ~XfrmEventSocket();
  XfrmEventSocket(const XfrmEventSocket&) = delete;
  XfrmEventSocket& operator=(const XfrmEventSocket&) = delete;

  int fd() const;
  // Reads every queued message and returns the SA events among them
  // (parse_kernel_sa_event).  Malformed messages are skipped.  When the
  // kernel dropped messages (ENOBUFS: the socket buffer overflowed),
  // `*lost` is set.
  std::vector<KernelSaMessage> read(bool* lost = nullptr);

 private:
  mnl_socket* nl_ = nullptr;
};

}  // namespace ov2::xfrm
