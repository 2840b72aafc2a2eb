// One SPD entry (RFC 4301 §4.4.1): selectors and an action.
#pragma once

#include <cstdint>
#include <string>

#include "common/ip_addr.h"
#include "model/sa_spec.h"

namespace ov2 {

enum class PolicyAction : uint8_t { Discard = 0, Bypass = 1, Protect = 2 };

const char* to_string(PolicyAction a);
PolicyAction parse_policy_action(std::string_view s);

struct PortRange {
  uint16_t lo = 0;
  uint16_t hi = 65535;
  bool any() const { return lo == 0 && hi == 65535; }
  bool operator==(const PortRange&) const = default;
};

// IP protocol selector; kAnyProto matches every protocol.
inline constexpr uint16_t kAnyProto = 0xffff;

struct PolicySpec {
  Direction dir = Direction::Out;
  IpPrefix src;
  IpPrefix dst;
  uint16_t proto = kAnyProto;
  PortRange sport;
  PortRange dport;
  PolicyAction action = PolicyAction::Discard;
  uint64_t sa_handle = 0;  // Protect only
  uint32_t priority = 1000;  // lower wins
};

// Parses "tcp", "udp", "icmp", "icmpv6", "any" or a number 0..255.
uint16_t parse_proto(std::string_view s);
std::string proto_to_string(uint16_t proto);
// Parses "P" or "P-Q".
PortRange parse_port_range(std::string_view s);

// Checks one policy on its own: families agree, ports only with tcp/udp/sctp,
// handle given iff action is protect.
void validate_policy(const PolicySpec& p);

}  // namespace ov2
