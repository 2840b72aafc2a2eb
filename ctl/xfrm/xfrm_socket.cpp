#include "xfrm/xfrm_socket.h"

#include <libmnl/libmnl.h>
#include <linux/netlink.h>
#include <linux/xfrm.h>
#include <openssl/crypto.h>
#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>

#include "model/algorithms.h"

namespace ov2::xfrm {

namespace {

std::string hex_spi(uint32_t spi) {
  char buf[16];
  std::snprintf(buf, sizeof(buf), "0x%08x", spi);
  return buf;
}

const char* op_object(XfrmOperation op) {
  switch (op) {
    case XfrmOperation::AddSa:
      return "the SA";
    case XfrmOperation::DeleteSa:
      return "deleting the SA";
    case XfrmOperation::GetSa:
      return "reading the SA";
    case XfrmOperation::GetReplayState:
      return "reading the SA's replay state";
    case XfrmOperation::UpdateReplayState:
      return "updating the SA's ESN high-order bits";
    case XfrmOperation::AddPolicy:
      return "the offload policy";
    case XfrmOperation::GetPolicy:
      return "reading the policies";
    case XfrmOperation::DeletePolicy:
      return "deleting the policy";
  }
  return "the request";
}

bool contains(std::string_view hay, std::string_view needle) { return hay.find(needle) != std::string_view::npos; }

}  // namespace

std::string describe_sa(const SaSpec& sa) {
  return std::string(sa.dir == Direction::In ? "inbound" : "outbound") + " SA spi " + hex_spi(sa.spi) + " to " +
         sa.dst.to_string();
}

std::string describe_sa(const SaId& id) { return "SA spi " + hex_spi(id.spi) + " to " + id.dst.to_string(); }

ErrorCode error_code_for_errno(int error) {
  switch (error) {
    case EEXIST:
      return ErrorCode::Exists;
    case ESRCH:
    case ENOENT:
      return ErrorCode::NotFound;
    case EPROTONOSUPPORT:
    case ENOSYS:
    case EOPNOTSUPP:
    case EAFNOSUPPORT:
      return ErrorCode::Unsupported;
    case EINVAL:
    case ENODEV:
      return ErrorCode::InvalidArgument;
    case ENOMEM:
    case ENOBUFS:
    case ENOSPC:
      return ErrorCode::ResourceExhausted;
    default:
      return ErrorCode::Kernel;
  }
}

std::string describe_kernel_refusal(const RequestContext& ctx, int error, std::string_view extack) {
  const bool adding = ctx.op == XfrmOperation::AddSa || ctx.op == XfrmOperation::AddPolicy;
  const std::string head = adding ? std::string("the kernel refused ") + op_object(ctx.op)
                                  : std::string("the kernel failed ") + op_object(ctx.op);
  const std::string subject = ctx.subject.empty() ? "" : " (" + ctx.subject + ")";
  const std::string kernel_says = extack.empty() ? "" : " [kernel: " + std::string(extack) + "]";
  const char* object = ctx.op == XfrmOperation::AddPolicy ? "policy" : "SA";
  const bool offload_words = contains(extack, "offload") || contains(extack, "Offload") || contains(extack, "Device") ||
                             contains(extack, "device");
  std::string why;
  switch (error) {
    case EPROTONOSUPPORT:
      why = "it has no ESP support (CONFIG_INET_ESP is off) — use --engine afxdp";
      break;
    case ENOSYS:
      why = "it has no implementation of " + (ctx.algorithm.empty() ? std::string("the algorithm") : ctx.algorithm) +
            " (the kernel crypto module for it is not available) — use --engine afxdp";
      break;
    case EOPNOTSUPP:
      if (!ctx.device.empty())
        return "device " + ctx.device + " cannot offload this " + object + subject + ": " +
               (extack.empty() ? std::string("its driver refused it") : std::string(extack)) + " — check `ethtool -k " +
               ctx.device + "` (esp-hw-offload) or use --engine afxdp";
      why = "the kernel does not support this operation";
      break;
    case EINVAL:
      if (!ctx.device.empty() && offload_words)
        return "device " + ctx.device + " cannot offload this " + object + subject + ": " + std::string(extack) +
               " — use --engine afxdp";
      why = "it considers the request invalid";
      break;
    case ENODEV:
      why = "the offload device " + (ctx.device.empty() ? std::string("") : ctx.device + " ") + "does not exist";
      break;
    case EEXIST:
      why =
          "an SA with the same SPI, destination and protocol is already installed; delete it first or pick another SPI";
      break;
    case ESRCH:
    case ENOENT:
      why = "the kernel has no such SA (already deleted, expired, or never installed)";
      break;
    case EPERM:
    case EACCES:
      why = "permission denied: XFRM needs CAP_NET_ADMIN in this network namespace";
      break;
    case ENOMEM:
    case ENOBUFS:
    case ENOSPC:
      why = "the kernel ran out of memory or SA space";
      break;
    case EAFNOSUPPORT:
      why = "the kernel has no XFRM support for this address family (IPv6 XFRM missing?) — use --engine afxdp";
      break;
    default:
      why = std::string(std::strerror(error));
      break;
  }
  return head + subject + ": " + why + kernel_says;
}

// ---------------------------------------------------------------------------

XfrmSocket::XfrmSocket() {
  nl_ = mnl_socket_open(NETLINK_XFRM);
  if (!nl_) {
    const int e = errno;
    fail(ErrorCode::Kernel,
         std::string("cannot open an XFRM netlink socket: ") + std::strerror(e) +
             (e == EPROTONOSUPPORT ? " (the kernel has no XFRM user interface, CONFIG_XFRM_USER)" : ""));
  }
  if (mnl_socket_bind(nl_, 0, MNL_SOCKET_AUTOPID) < 0) {
    const int e = errno;
    mnl_socket_close(nl_);
    nl_ = nullptr;
    fail(ErrorCode::Kernel, std::string("cannot bind the XFRM netlink socket: ") + std::strerror(e));
  }
  int on = 1;
  // Extended acks carry the kernel's reason text; capped acks stop the kernel
  // from echoing our request (with its keys) back in an error.
  mnl_socket_setsockopt(nl_, NETLINK_EXT_ACK, &on, sizeof(on));
  mnl_socket_setsockopt(nl_, NETLINK_CAP_ACK, &on, sizeof(on));
  port_id_ = mnl_socket_get_portid(nl_);
  seq_ = static_cast<uint32_t>(std::time(nullptr));
}

XfrmSocket::~XfrmSocket() {
  if (nl_) mnl_socket_close(nl_);
}

namespace {

int collect_extack(const nlattr* attr, void* data) {
  if (mnl_attr_get_type(attr) == NLMSGERR_ATTR_MSG && mnl_attr_validate(attr, MNL_TYPE_NUL_STRING) >= 0)
    *static_cast<std::string*>(data) = mnl_attr_get_str(attr);
  return MNL_CB_OK;
}

std::string extack_message(const nlmsghdr* nlh) {
  if (!(nlh->nlmsg_flags & NLM_F_ACK_TLVS)) return {};
  const auto* err = static_cast<const nlmsgerr*>(mnl_nlmsg_get_payload(nlh));
  size_t offset = sizeof(nlmsgerr);
  if (!(nlh->nlmsg_flags & NLM_F_CAPPED)) offset += err->msg.nlmsg_len - sizeof(nlmsghdr);
  if (NLMSG_LENGTH(offset) > nlh->nlmsg_len) return {};
  std::string text;
  mnl_attr_parse(nlh, static_cast<unsigned>(offset), collect_extack, &text);
  return text;
}

}  // namespace

std::vector<std::vector<uint8_t>> XfrmSocket::transact(NetlinkRequest& req, const RequestContext& ctx, int timeout_ms) {
  nlmsghdr* nlh = req.header();
  nlh->nlmsg_seq = ++seq_;
  nlh->nlmsg_pid = 0;
  const auto bytes = req.bytes();
  if (mnl_socket_sendto(nl_, bytes.data(), bytes.size()) < 0) {
    const int e = errno;
    fail(error_code_for_errno(e), describe_kernel_refusal(ctx, e, {}));
  }
  std::vector<std::vector<uint8_t>> replies;
  // GETSA replies carry the SA's keys: wipe the receive buffer however we leave.
  struct WipedBuffer {
    std::vector<uint8_t> bytes = std::vector<uint8_t>(MNL_SOCKET_BUFFER_SIZE * 4);
    ~WipedBuffer() { OPENSSL_cleanse(bytes.data(), bytes.size()); }
  } wiped;
  std::vector<uint8_t>& buf = wiped.bytes;
  for (;;) {
    pollfd pfd{mnl_socket_get_fd(nl_), POLLIN, 0};
    const int ready = poll(&pfd, 1, timeout_ms);
    if (ready == 0) fail(ErrorCode::Kernel, "the kernel did not answer the XFRM request in time (" + ctx.subject + ")");
    if (ready < 0) {
      if (errno == EINTR) continue;
      fail(ErrorCode::Kernel, std::string("waiting for the kernel's XFRM answer failed: ") + std::strerror(errno));
    }
    const ssize_t n = mnl_socket_recvfrom(nl_, buf.data(), buf.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      fail(ErrorCode::Kernel, std::string("reading the kernel's XFRM answer failed: ") + std::strerror(errno));
    }
    int len = static_cast<int>(n);
    for (auto* m = reinterpret_cast<const nlmsghdr*>(buf.data()); mnl_nlmsg_ok(m, len); m = mnl_nlmsg_next(m, &len)) {
      if (m->nlmsg_seq != seq_ || (m->nlmsg_pid != 0 && m->nlmsg_pid != port_id_)) continue;  // stale
      if (m->nlmsg_type == NLMSG_ERROR) {
        if (m->nlmsg_len < NLMSG_LENGTH(sizeof(nlmsgerr)))
          fail(ErrorCode::Kernel, "truncated netlink error from the kernel");
        const int error = -static_cast<const nlmsgerr*>(mnl_nlmsg_get_payload(m))->error;
        if (error == 0) return replies;
        fail(error_code_for_errno(error), describe_kernel_refusal(ctx, error, extack_message(m)));
      }
      if (m->nlmsg_type == NLMSG_DONE) return replies;
      const auto* p = reinterpret_cast<const uint8_t*>(m);
      replies.emplace_back(p, p + m->nlmsg_len);
    }
  }
}

void XfrmSocket::add_sa(const SaSpec& sa, const NewSaOptions& options, std::string_view device_name) {
  NetlinkRequest req = build_new_sa(sa, options);
  RequestContext ctx{XfrmOperation::AddSa,
                     describe_sa(sa),
                     options.offload == OffloadKind::None ? std::string() : std::string(device_name),
                     {}};
  const EncAlgInfo& enc = info(sa.enc);
  ctx.algorithm = enc.xfrm_name;
  if (!enc.aead && sa.auth != AuthAlg::None) ctx.algorithm += std::string(" with ") + info(sa.auth).xfrm_name;
  if (!enc.aead && (sa.auth == AuthAlg::AesGmac128 || sa.auth == AuthAlg::AesGmac192 || sa.auth == AuthAlg::AesGmac256))
    ctx.algorithm = info(sa.auth).xfrm_name;
  transact(req, ctx);
  if (options.offload == OffloadKind::None) return;
  // The kernel answers "yes" even when it ignored XFRMA_OFFLOAD_DEV; check.
  const SaId id = sa_id_of(sa);
  SaReadback back;
  try {
    back = get_sa(id);
  } catch (const Error&) {
    delete_quietly(id);
    throw;
  }
  if (back.offload_ifindex && *back.offload_ifindex == options.ifindex) return;
  delete_quietly(id);
  fail(ErrorCode::Unsupported,
       "device " + std::string(device_name) + " cannot offload this SA (" + describe_sa(sa) +
           "): the kernel installed it without offload (no XFRM offload driver on the device, or "
           "CONFIG_XFRM_OFFLOAD off), so it was removed again — use --engine afxdp");
}

void XfrmSocket::delete_quietly(const SaId& id) noexcept {
  try {
    delete_sa(id);
  } catch (const Error&) {  // cleanup after a failure: the first error is the one to report
  }
}

void XfrmSocket::delete_policy_quietly(const XfrmPolicy& policy) noexcept {
  try {
    delete_policy(policy);
  } catch (const Error&) {
  }
}

void XfrmSocket::delete_sa(const SaId& id) {
  NetlinkRequest req = build_delete_sa(id);
  transact(req, RequestContext{XfrmOperation::DeleteSa, describe_sa(id), {}, {}});
}

SaReadback XfrmSocket::get_sa(const SaId& id) {
  NetlinkRequest req = build_get_sa(id);
  auto replies = transact(req, RequestContext{XfrmOperation::GetSa, describe_sa(id), {}, {}});
  if (replies.empty())
    fail(ErrorCode::Kernel, "the kernel acknowledged reading the SA but sent no state (" + describe_sa(id) + ")");
  // The reply carries the SA's keys: parse, then wipe the copy.
  SaReadback out = parse_sa(reinterpret_cast<const nlmsghdr*>(replies.front().data()));
  for (auto& r : replies) OPENSSL_cleanse(r.data(), r.size());
  return out;
}

AeReadback XfrmSocket::get_replay_state(const SaId& id, uint32_t reqid) {
  NetlinkRequest req = build_get_ae(id, reqid);
  auto replies = transact(req, RequestContext{XfrmOperation::GetReplayState, describe_sa(id), {}, {}});
  if (replies.empty()) fail(ErrorCode::Kernel, "the kernel sent no replay state (" + describe_sa(id) + ")");
  return parse_ae(reinterpret_cast<const nlmsghdr*>(replies.front().data()));
}

void XfrmSocket::set_esn_high_bits(const SaId& id, uint32_t reqid, Direction dir, uint32_t high_bits) {
  AeReadback now = get_replay_state(id, reqid);
  if (!now.replay_esn)
    fail(ErrorCode::InvalidArgument,
         "the " + describe_sa(id) + " is not an ESN SA: its high-order sequence bits cannot be updated");
  ReplayEsn st = *now.replay_esn;
  (dir == Direction::In ? st.seq_hi : st.oseq_hi) = high_bits;
  NetlinkRequest req = build_new_ae(id, reqid, st);
  transact(req, RequestContext{XfrmOperation::UpdateReplayState, describe_sa(id), {}, {}});
}

void XfrmSocket::add_policy(const XfrmPolicy& policy, std::string_view device_name, bool replace) {
  NetlinkRequest req = build_new_policy(policy, replace);
  transact(req, RequestContext{XfrmOperation::AddPolicy,
                               describe_policy(policy),
                               policy.offload_ifindex ? std::string(device_name) : std::string(),
                               {}});
  if (policy.offload_ifindex == 0) return;
  std::optional<PolicyReadback> back;
  try {
    NetlinkRequest get = build_get_policy(policy);
    auto replies = transact(get, RequestContext{XfrmOperation::AddPolicy, describe_policy(policy), {}, {}});
    if (!replies.empty()) back = parse_policy(reinterpret_cast<const nlmsghdr*>(replies.front().data()));
  } catch (const Error&) {
    delete_policy_quietly(policy);
    throw;
  }
  if (back && back->offload_ifindex && *back->offload_ifindex == policy.offload_ifindex) return;
  delete_policy_quietly(policy);
  fail(ErrorCode::Unsupported,
       "device " + std::string(device_name) + " cannot offload this policy (" + describe_policy(policy) +
           "): the kernel installed it without offload (CONFIG_XFRM_OFFLOAD off, or no packet-offload driver), "
           "so it was removed again — use --nic-offload crypto or --engine afxdp");
}

void XfrmSocket::delete_policy(const XfrmPolicy& policy) {
  NetlinkRequest req = build_delete_policy(policy);
  transact(req, RequestContext{XfrmOperation::DeletePolicy, describe_policy(policy), {}, {}});
}

void XfrmSocket::delete_policy_by_index(uint32_t index, XfrmPolicyDir dir) {
  NetlinkRequest req = build_delete_policy_by_index(index, dir);
  transact(req, RequestContext{XfrmOperation::DeletePolicy,
                               std::string(to_string(dir)) + " policy with index " + std::to_string(index), {}, {}});
}

std::vector<XfrmPolicy> XfrmSocket::dump_policies() {
  NetlinkRequest req = build_dump_policies();
  const auto replies = transact(req, RequestContext{XfrmOperation::GetPolicy, "the kernel's policies", {}, {}});
  std::vector<XfrmPolicy> out;
  for (const auto& r : replies) {
    const auto* m = reinterpret_cast<const nlmsghdr*>(r.data());
    if (m->nlmsg_type != XFRM_MSG_NEWPOLICY) continue;
    PolicyReadback back = parse_policy(m);
    if (back.main_type) out.push_back(back.policy);
  }
  return out;
}

XfrmEventSocket::XfrmEventSocket() {
  nl_ = mnl_socket_open2(NETLINK_XFRM, SOCK_NONBLOCK | SOCK_CLOEXEC);
  if (!nl_)
    fail(ErrorCode::Kernel, std::string("cannot open an XFRM netlink socket for expire events: ") + std::strerror(errno));
  const int fail_errno = [&] {
    if (mnl_socket_bind(nl_, 0, MNL_SOCKET_AUTOPID) < 0) return errno;
    for (int group : {XFRMNLGRP_EXPIRE, XFRMNLGRP_SA})
      if (mnl_socket_setsockopt(nl_, NETLINK_ADD_MEMBERSHIP, &group, sizeof(group)) < 0) return errno;
    return 0;
  }();
  if (fail_errno != 0) {
    mnl_socket_close(nl_);
    nl_ = nullptr;
    fail(ErrorCode::Kernel, std::string("cannot subscribe to the kernel's XFRM expire and SA events: ") +
                                std::strerror(fail_errno) +
                                (fail_errno == EPERM ? " (needs CAP_NET_ADMIN in this network namespace)" : ""));
  }
}

XfrmEventSocket::~XfrmEventSocket() {
  if (nl_) mnl_socket_close(nl_);
}

int XfrmEventSocket::fd() const { return mnl_socket_get_fd(nl_); }

std::vector<KernelSaMessage> XfrmEventSocket::read(bool* lost) {
  std::vector<KernelSaMessage> out;
  struct WipedBuffer {  // NEWSA notifications of other processes carry keys
    std::vector<uint8_t> bytes = std::vector<uint8_t>(MNL_SOCKET_BUFFER_SIZE * 4);
    ~WipedBuffer() { OPENSSL_cleanse(bytes.data(), bytes.size()); }
  } wiped;
  for (;;) {
    const ssize_t n = mnl_socket_recvfrom(nl_, wiped.bytes.data(), wiped.bytes.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == ENOBUFS && lost) *lost = true;
      if (errno == ENOBUFS) continue;
      return out;  // EAGAIN: all read
    }
    int len = static_cast<int>(n);
    for (auto* m = reinterpret_cast<const nlmsghdr*>(wiped.bytes.data()); mnl_nlmsg_ok(m, len);
         m = mnl_nlmsg_next(m, &len)) {
      try {
        if (auto e = parse_kernel_sa_event(m)) out.push_back(std::move(*e));
      } catch (const Error&) {  // truncated: not ours to repair
      }
    }
  }
}

}  // namespace ov2::xfrm
