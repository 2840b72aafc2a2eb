// Fuzzes the outer fragment reassembly table (esp/reassembly.h): the input is
// a sequence of packets, each a 2-byte big-endian length and that many bytes
// (a 1-byte clock step first), all fed to one small table (with two large
// buffers) that lives across the run.  Each packet is copied into a buffer of
// exactly its size and the output goes to a buffer of exactly out_room bytes,
// or to one of exactly large_room bytes, so ASan sees any read or write out
// of bounds.  A completed datagram must fit the room it was written to (the
// large one only when it does not fit out_room) and carry a consistent
// header; the table never holds more than its entries and large buffers.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "esp/reassembly.h"

namespace {

ov2::esp::Reassembly& table() {
  static auto* t = new ov2::esp::Reassembly({8, 2048, 8, 1'000'000'000, 2, 64});
  return *t;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using ov2::esp::Reassembly;
  static uint64_t now = 0;
  size_t at = 0;
  while (at + 3 <= size) {
    now += uint64_t(data[at]) * 10'000'000;  // up to 2.55 s a step: timeouts happen
    const size_t len = size_t(data[at + 1]) << 8 | data[at + 2];
    at += 3;
    if (len > size - at) break;
    std::vector<uint8_t> pkt(data + at, data + at + len);
    at += len;
    table().expire(now);
    if (!Reassembly::is_fragment(pkt.data(), uint32_t(pkt.size()))) continue;
    const uint32_t room = 1500 + uint32_t(len % 700);
    // Smaller than the largest datagram now and then: TooBig at completion.
    const uint32_t large_room = 40000 + uint32_t(len % 4) * 10000;
    std::vector<uint8_t> out(room), large(large_room);
    const Reassembly::Result r =
        table().add(pkt.data(), uint32_t(pkt.size()), now, out.data(), room, large.data(), large_room);
    if (table().in_progress() > table().limits().entries) abort();
    if (table().large_in_use() > table().limits().large_entries) abort();
    if (r.kind != Reassembly::Kind::Complete) continue;
    if (r.large != (r.len > room) || r.len > (r.large ? large_room : room) || r.len < 20) abort();
    const uint8_t* d = r.large ? large.data() : out.data();
    const unsigned version = d[0] >> 4;
    if (version == 4 && (uint32_t(d[2]) << 8 | d[3]) != r.len) abort();
    if (version == 4 && ((d[6] & 0x3f) != 0 || d[7] != 0)) abort();  // no MF, no offset left
    if (version == 6 && (uint32_t(d[4]) << 8 | d[5]) + 40 != r.len) abort();
    if (version != 4 && version != 6) abort();
  }
  return 0;
}
