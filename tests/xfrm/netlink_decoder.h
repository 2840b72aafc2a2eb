// A small XFRM netlink decoder for the tests: nlmsghdr, the fixed body of the
// XFRM messages we send (field by field, so struct padding is not compared:
// iproute2 leaves some of it uninitialised), and every attribute as type +
// decoded fields.  Key bytes are shown only as length and a digest.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace ov2::xfrm::test {

struct Field {
  std::string name;
  std::string value;
  bool operator==(const Field&) const = default;
};

struct DecodedAttr {
  uint16_t type = 0;
  std::vector<Field> fields;  // includes "payload_len"
};

struct DecodedMessage {
  uint16_t type = 0;
  uint16_t flags = 0;
  std::vector<Field> body;
  std::vector<DecodedAttr> attrs;
};

// Decodes one netlink message (seq and pid are dropped: they always differ).
DecodedMessage decode_xfrm_message(std::span<const uint8_t> bytes);

const char* xfrm_attr_name(uint16_t type);
std::string to_string(const DecodedAttr& a);

// strace `-e write=all` hex dumps -> the bytes of each sendmsg, in order.
std::vector<std::vector<uint8_t>> parse_strace_dumps(const std::string& strace_output);

// Patches a raw request: ORs `flags` into the XFRMA_OFFLOAD_DEV attribute's
// flags byte; returns false if there is no such attribute.
bool or_offload_flags(std::vector<uint8_t>& msg, uint8_t flags);
// Appends an attribute to a raw request (updates nlmsg_len).
void append_attr(std::vector<uint8_t>& msg, uint16_t type, std::span<const uint8_t> payload);

}  // namespace ov2::xfrm::test
