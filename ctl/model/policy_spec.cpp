#include "model/policy_spec.h"

#include <charconv>

#include "common/error.h"

namespace ov2 {

const char* to_string(PolicyAction a) {
  switch (a) {
    case PolicyAction::Discard: return "discard";
    case PolicyAction::Bypass: return "bypass";
    case PolicyAction::Protect: return "protect";
  }
  return "discard";
}

PolicyAction parse_policy_action(std::string_view s) {
  if (s == "protect") return PolicyAction::Protect;
  if (s == "bypass") return PolicyAction::Bypass;
  if (s == "discard") return PolicyAction::Discard;
  fail(ErrorCode::InvalidArgument, "action must be protect, bypass or discard, not '" + std::string(s) + "'");
}

namespace {

bool parse_uint(std::string_view s, unsigned max, unsigned& out) {
  if (s.empty()) return false;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && p == s.data() + s.size() && out <= max;
}

}  // namespace

uint16_t parse_proto(std::string_view s) {
  if (s == "any") return kAnyProto;
  if (s == "tcp") return 6;
  if (s == "udp") return 17;
  if (s == "icmp") return 1;
  if (s == "icmpv6" || s == "ipv6-icmp") return 58;
  if (s == "sctp") return 132;
  if (s == "esp") return 50;
  unsigned v = 0;
  if (!parse_uint(s, 255, v))
    fail(ErrorCode::InvalidArgument,
         "protocol must be tcp, udp, icmp, icmpv6, sctp, esp, any or a number 0-255, not '" + std::string(s) + "'");
  return static_cast<uint16_t>(v);
}

std::string proto_to_string(uint16_t proto) {
  switch (proto) {
    case kAnyProto: return "any";
    case 6: return "tcp";
    case 17: return "udp";
    case 1: return "icmp";
    case 58: return "icmpv6";
    case 132: return "sctp";
    case 50: return "esp";
    default: return std::to_string(proto);
  }
}

PortRange parse_port_range(std::string_view s) {
  const auto dash = s.find('-');
  unsigned lo = 0, hi = 0;
  const bool ok = dash == std::string_view::npos
                      ? (parse_uint(s, 65535, lo) && (hi = lo, true))
                      : (parse_uint(s.substr(0, dash), 65535, lo) && parse_uint(s.substr(dash + 1), 65535, hi));
  if (!ok || lo > hi)
    fail(ErrorCode::InvalidArgument,
         "port must be a number 0-65535 or a range LO-HI with LO <= HI, not '" + std::string(s) + "'");
  return PortRange{static_cast<uint16_t>(lo), static_cast<uint16_t>(hi)};
}

void validate_policy(const PolicySpec& p) {
  if (p.src.addr.family != p.dst.addr.family)
    fail(ErrorCode::InvalidArgument, "source " + p.src.to_string() + " and destination " + p.dst.to_string() +
                                         " are of different address families");
  const bool has_ports = p.proto == 6 || p.proto == 17 || p.proto == 132;
  if ((!p.sport.any() || !p.dport.any()) && !has_ports)
    fail(ErrorCode::InvalidArgument, "port selectors need --proto tcp, udp or sctp");
  if (p.action == PolicyAction::Protect && p.sa_handle == 0)
    fail(ErrorCode::InvalidArgument, "action protect needs --sa HANDLE");
  if (p.action != PolicyAction::Protect && p.sa_handle != 0)
    fail(ErrorCode::InvalidArgument, std::string("--sa is only for action protect, not ") + to_string(p.action));
}

}  // namespace ov2
