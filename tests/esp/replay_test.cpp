// Anti-replay (RFC 4303 §3.4.3, Appendix A) and sequence numbers: duplicates,
// the left edge of the window, reordering inside it, window sizes 32..4096
// and beyond, ESN inference across 2^32, exhaustion, UPDATE_SA.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <random>
#include <thread>

#include "esp/esp_test_util.h"
#include "esp/ip_checksum.h"
#include "ov2_abi.h"

namespace ov2::esp::test {
namespace {

// A sender and a receiver of one SA; the test picks each packet's sequence number.
class Link {
 public:
  explicit Link(uint32_t window, bool esn = false, const Suite& suite = all_suites()[0]) {
    SaSpec s = make_spec(suite, Direction::Out, Mode::Tunnel, "192.0.2.1", "192.0.2.2", 0x4242, esn);
    s.replay_window = window;
    out_ = std::make_unique<OutboundSa>(s, 0);
    in_ = std::make_unique<InboundSa>(mirror(s), 0);
  }
  // Seals one packet carrying `seq`.
  Bytes seal(uint64_t seq) {
    out_->set_next_seq(seq);
    PacketBuffer buf(make_udp_packet("10.0.0.1", "10.0.0.2", 20, 0, false, uint8_t(seq)));
    EXPECT_EQ(out_->encapsulate(buf.packet(), 0), Reason::Ok);
    return buf.bytes();
  }
  InboundSa::Result deliver_bytes(const Bytes& wire) {
    PacketBuffer buf(wire);
    return in_->decapsulate(buf.packet(), 0);
  }
  Reason deliver(uint64_t seq) { return deliver_bytes(seal(seq)).reason; }
  InboundSa& in() { return *in_; }
  OutboundSa& out() { return *out_; }

 private:
  std::unique_ptr<OutboundSa> out_;
  std::unique_ptr<InboundSa> in_;
};

TEST(EspReplay, DuplicateIsReplayedWithGenericErrorAndCounted) {
  Link l(64);
  EXPECT_EQ(l.deliver(1), Reason::Ok);
  const auto r = l.deliver_bytes(l.seal(1));
  EXPECT_EQ(r.reason, Reason::Replayed);
  EXPECT_TRUE(r.crypto_done);
  EXPECT_EQ(r.crypto_status, uint32_t(CRYPTO_GENERIC_ERROR));
  EXPECT_EQ(rx_info_for(r), ov2_rx_make(0, 1, 0, CRYPTO_GENERIC_ERROR));
  EXPECT_EQ(l.in().counters().count(Reason::Replayed), 1u);
  EXPECT_EQ(l.in().counters().count(Reason::Ok), 1u);
}

TEST(EspReplay, SequenceNumberZeroIsNeverAccepted) {
  // The engine never sends 0; an ESN sender at 2^32 puts a low half of 0 on
  // the wire, which a non-ESN receiver must refuse before any crypto.
  SaSpec s = make_spec(all_suites()[0], Direction::Out, Mode::Tunnel, "192.0.2.1", "192.0.2.2", 0x4242, true);
  OutboundSa out(s, 0);
  out.set_next_seq(1ull << 32);
  PacketBuffer buf(make_udp_packet("10.0.0.1", "10.0.0.2", 20));
  ASSERT_EQ(out.encapsulate(buf.packet(), 0), Reason::Ok);
  for (uint32_t window : {64u, 0u}) {
    SaSpec r = mirror(s);
    r.esn = false;
    r.replay_window = window;
    InboundSa in(r, 0);
    PacketBuffer copy(buf.bytes());
    EXPECT_EQ(in.decapsulate(copy.packet(), 0).reason, Reason::Replayed) << window;
  }
}

TEST(EspReplay, WindowEdgesReorderingAndJumpsAreExactForEverySize) {
  for (uint32_t w : {32u, 64u, 100u, 128u, 1024u, 4096u, 5000u, 65536u}) {
    SCOPED_TRACE("window " + std::to_string(w));
    Link l(w);
    const uint64_t top = 100000;
    ASSERT_EQ(l.deliver(top), Reason::Ok);
    EXPECT_EQ(l.in().highest_seq(), top);
    EXPECT_EQ(l.deliver(top - w), Reason::Replayed);      // just left of the window
    EXPECT_EQ(l.deliver(top - w + 1), Reason::Ok);        // the oldest in the window
    EXPECT_EQ(l.deliver(top - w + 1), Reason::Replayed);  // ... only once
    // Reordering: every unseen number inside the window, shuffled, exactly once.
    std::vector<uint64_t> inside;
    for (uint64_t s = top - w + 2; s < top; ++s) inside.push_back(s);
    std::shuffle(inside.begin(), inside.end(), std::mt19937(w));
    if (inside.size() > 300) inside.resize(300);  // enough to prove it, bounded in time
    for (uint64_t s : inside) ASSERT_EQ(l.deliver(s), Reason::Ok) << s;
    for (uint64_t s : inside) ASSERT_EQ(l.deliver(s), Reason::Replayed) << s;
    // Slide by w-1: the old top stays inside, top - w + 1 falls out.
    ASSERT_EQ(l.deliver(top + w - 1), Reason::Ok);
    EXPECT_EQ(l.deliver(top), Reason::Replayed);
    EXPECT_EQ(l.deliver(top - 1), Reason::Replayed);  // just left of the new window
    EXPECT_EQ(l.deliver(top + 1), Reason::Ok);        // never seen, inside
    EXPECT_EQ(l.deliver(top - 2), Reason::Replayed);  // left of the new window
    // Jump by far more than the window: everything before is out, the bitmap is clean.
    const uint64_t far = top + 10ull * w + 12345;
    ASSERT_EQ(l.deliver(far), Reason::Ok);
    EXPECT_EQ(l.deliver(far - w), Reason::Replayed);
    EXPECT_EQ(l.deliver(far - w + 1), Reason::Ok);
    EXPECT_EQ(l.deliver(far - 1), Reason::Ok);
    // Jump by exactly the window: the previous top is now just outside.
    ASSERT_EQ(l.deliver(far + w), Reason::Ok);
    EXPECT_EQ(l.deliver(far), Reason::Replayed);
    EXPECT_EQ(l.deliver(far + 1), Reason::Ok);
  }
}

TEST(EspReplay, ForgedPacketsNeitherMoveTheWindowNorDodgeTheReplayCheck) {
  Link l(32);
  ASSERT_EQ(l.deliver(10), Reason::Ok);
  Bytes forged = l.seal(1000);
  forged.back() ^= 1;  // bad ICV on a far-ahead sequence number
  const auto r = l.deliver_bytes(forged);
  EXPECT_EQ(r.reason, Reason::AuthFailed);
  EXPECT_EQ(r.crypto_status, uint32_t(CRYPTO_TUNNEL_ESP_AUTH_FAILED));
  EXPECT_EQ(l.in().highest_seq(), 10u);
  EXPECT_EQ(l.deliver(5), Reason::Ok);  // would be left of the window had 1000 counted
  // A replay is refused before any crypto: even with a bad ICV it is Replayed.
  Bytes replay = l.seal(10);
  replay.back() ^= 1;
  EXPECT_EQ(l.deliver_bytes(replay).reason, Reason::Replayed);
}

TEST(EspReplay, DisabledWindowAcceptsDuplicates) {
  Link l(0);
  EXPECT_EQ(l.deliver(7), Reason::Ok);
  EXPECT_EQ(l.deliver(7), Reason::Ok);
  EXPECT_EQ(l.deliver(3), Reason::Ok);
}

TEST(EspReplay, EsnInfersTheHighBitsAcrossTheRollOverAndBack) {
  for (const Suite* suite : {&all_suites()[0], &all_suites()[3], &all_suites()[4], &all_suites()[10]}) {
    SCOPED_TRACE(suite->name);
    Link l(64, true, *suite);
    l.in().set_highest_seq(0xfffffffcull);
    for (uint64_t s = 0xfffffffdull; s <= 0x100000002ull; ++s) {
      const auto r = l.deliver_bytes(l.seal(s));
      ASSERT_EQ(r.reason, Reason::Ok) << std::hex << s;
      EXPECT_EQ(r.seq, s);
    }
    EXPECT_EQ(l.in().highest_seq(), 0x100000002ull);
    // Late packets from below 2^32 (case B of Appendix A2.2: high bits - 1).
    const auto late = l.deliver_bytes(l.seal(0xfffffff0ull));
    EXPECT_EQ(late.reason, Reason::Ok);
    EXPECT_EQ(late.seq, 0xfffffff0ull);
    EXPECT_EQ(l.deliver(0xfffffffeull), Reason::Replayed);
    // 64 below the top is outside the window, so Appendix A reads it as the
    // next subspace (0x1ffffffc2): the ICV, computed with high bits 0, fails.
    const auto below = l.deliver_bytes(l.seal(0xffffffc2ull));
    EXPECT_EQ(below.reason, Reason::AuthFailed);
    EXPECT_EQ(below.seq, 0x1ffffffc2ull);
    // Case A: top well inside a subspace; a low number below the window means the next subspace.
    l.in().set_highest_seq(0x1fffffff0ull);
    const auto next = l.deliver_bytes(l.seal(0x200000005ull));
    EXPECT_EQ(next.reason, Reason::Ok);
    EXPECT_EQ(next.seq, 0x200000005ull);
  }
}

TEST(EspReplay, EsnHighBitsAreInTheIcvSoAWrongGuessFailsAuthentication) {
  Link l(64, true);
  const Bytes sealed_hi1 = l.seal(0x100000005ull);
  l.in().set_highest_seq(0x30000000aull);  // the receiver believes subspace 3
  const auto r = l.deliver_bytes(sealed_hi1);
  EXPECT_EQ(r.reason, Reason::AuthFailed);
  EXPECT_EQ(r.seq, 0x300000005ull);
  EXPECT_EQ(l.in().highest_seq(), 0x30000000aull);
}

TEST(EspSequence, NonEsnStopsAtTwoToThe32MinusOneAndAsksForDeletion) {
  Link l(64);
  l.out().set_next_seq(0xfffffffeull);
  LifetimeEvent ev;
  PacketBuffer a(make_udp_packet("10.0.0.1", "10.0.0.2", 1));
  EXPECT_EQ(l.out().encapsulate(a.packet(), 0, &ev), Reason::Ok);
  EXPECT_FALSE(ev.hard_expired_now);
  EXPECT_FALSE(l.out().delete_requested());
  PacketBuffer b(make_udp_packet("10.0.0.1", "10.0.0.2", 1));
  EXPECT_EQ(l.out().encapsulate(b.packet(), 0, &ev), Reason::Ok);  // 0xffffffff: the last one
  EXPECT_TRUE(ev.hard_expired_now);
  EXPECT_TRUE(l.out().delete_requested());
  for (int i = 0; i < 3; ++i) {
    PacketBuffer c(make_udp_packet("10.0.0.1", "10.0.0.2", 1));
    EXPECT_EQ(l.out().encapsulate(c.packet(), 0, &ev), Reason::SeqExhausted);  // never wraps to 0
    EXPECT_FALSE(ev.hard_expired_now);
  }
  EXPECT_EQ(l.out().counters().count(Reason::SeqExhausted), 3u);
  EXPECT_EQ(l.deliver_bytes(a.bytes()).seq, 0xfffffffeull);
  EXPECT_EQ(l.deliver_bytes(b.bytes()).seq, 0xffffffffull);
}

TEST(EspSequence, EsnStopsAtTwoToThe64MinusOne) {
  Link l(64, true);
  l.out().set_next_seq(UINT64_MAX);
  PacketBuffer a(make_udp_packet("10.0.0.1", "10.0.0.2", 1));
  EXPECT_EQ(l.out().encapsulate(a.packet(), 0), Reason::Ok);
  EXPECT_TRUE(l.out().delete_requested());
  PacketBuffer b(make_udp_packet("10.0.0.1", "10.0.0.2", 1));
  EXPECT_EQ(l.out().encapsulate(b.packet(), 0), Reason::SeqExhausted);
  PacketBuffer c(make_udp_packet("10.0.0.1", "10.0.0.2", 1));
  EXPECT_EQ(l.out().encapsulate(c.packet(), 0), Reason::SeqExhausted);
}

TEST(EspSequence, UpdateSaSetsTheEsnHighBitsOnlyForEsnSas) {
  Link esn(64, true);
  esn.out().set_next_seq(7);
  EXPECT_TRUE(esn.out().set_seq_hi(5));
  EXPECT_EQ(esn.out().next_seq(), (5ull << 32) | 7);
  EXPECT_TRUE(esn.in().set_seq_hi(5));
  EXPECT_EQ(esn.in().highest_seq(), 5ull << 32);
  const auto r = esn.deliver_bytes(esn.seal((5ull << 32) | 7));
  EXPECT_EQ(r.reason, Reason::Ok);
  EXPECT_EQ(r.seq, (5ull << 32) | 7);

  Link plain(64, false);
  EXPECT_FALSE(plain.out().set_seq_hi(5));
  EXPECT_FALSE(plain.in().set_seq_hi(5));
  EXPECT_EQ(plain.out().next_seq(), 1u);
}

// An SA of one thread (crypto_slots 1) takes UPDATE_SA from another thread
// before its next packet; a shared one (crypto_slots > 1) at once.  Either
// way the low 32 bits keep counting: no number is skipped or sent twice.
TEST(EspSequence, UpdateSaFromAnotherThreadKeepsTheLowBitsCounting) {
  for (unsigned slots : {1u, 3u}) {
    SCOPED_TRACE(slots);
    SaSpec s = make_spec(all_suites()[0], Direction::Out, Mode::Tunnel, "192.0.2.1", "192.0.2.2", 0x4242, true);
    s.replay_window = 64;
    OutboundSa out(s, 0, slots);
    constexpr uint32_t kPackets = 4000;
    std::vector<uint32_t> low;
    Bytes last;
    std::atomic<uint32_t> sent{0};
    std::atomic<bool> updated{false};
    std::thread owner([&] {
      for (uint32_t i = 0; i < kPackets; ++i) {
        // Half-way the owner waits until the update is made: the packets
        // after it must carry it.
        if (i == kPackets / 2)
          while (!updated.load(std::memory_order_acquire)) std::this_thread::yield();
        PacketBuffer buf(make_udp_packet("10.0.0.1", "10.0.0.2", 20));
        ASSERT_EQ(out.encapsulate(buf.packet(), 0), Reason::Ok);
        low.push_back(wire::be32(buf.packet().data + 24));
        if (i + 1 == kPackets) last = buf.bytes();
        sent.store(i + 1, std::memory_order_release);
      }
    });
    while (sent.load(std::memory_order_acquire) < kPackets / 2) std::this_thread::yield();
    EXPECT_TRUE(out.set_seq_hi(6));
    EXPECT_EQ(out.next_seq() >> 32, 6u);  // seen at once, also before the owner's next packet
    updated.store(true, std::memory_order_release);
    owner.join();
    ASSERT_EQ(low.size(), size_t(kPackets));
    for (uint32_t i = 0; i < kPackets; ++i) ASSERT_EQ(low[i], i + 1);
    EXPECT_EQ(out.next_seq(), (6ull << 32) | (kPackets + 1));
    // The last packet's ICV covers high bits 6 (RFC 4303 §2.2.1): a receiver
    // in that subspace accepts it.
    InboundSa in(mirror(s), 0);
    ASSERT_TRUE(in.set_seq_hi(6));
    PacketBuffer wire_copy(last);
    const auto r = in.decapsulate(wire_copy.packet(), 0);
    EXPECT_EQ(r.reason, Reason::Ok);
    EXPECT_EQ(r.seq, (6ull << 32) | kPackets);
    out.set_next_seq(9);  // the restore hook replaces a pending update too
    EXPECT_EQ(out.next_seq(), 9u);
  }
}

// The receiving side of UPDATE_SA: set from the control thread while the
// SA's thread decapsulates; the window top moves to the new subspace before
// that thread's next packet, keeping its low half.
TEST(EspSequence, InboundUpdateSaFromAnotherThreadIsTakenBeforeTheNextPacket) {
  Link l(64, true);
  std::vector<Bytes> before, after;
  for (uint64_t i = 1; i <= 100; ++i) before.push_back(l.seal(i));
  for (uint64_t i = 101; i <= 200; ++i) after.push_back(l.seal((6ull << 32) | i));
  std::atomic<bool> half{false}, updated{false};
  std::vector<Reason> got;
  std::thread owner([&] {
    for (const auto& b : before) got.push_back(l.deliver_bytes(b).reason);
    half.store(true, std::memory_order_release);
    while (!updated.load(std::memory_order_acquire)) std::this_thread::yield();
    for (const auto& b : after) got.push_back(l.deliver_bytes(b).reason);
  });
  while (!half.load(std::memory_order_acquire)) std::this_thread::yield();
  ASSERT_TRUE(l.in().set_seq_hi(6));
  EXPECT_EQ(l.in().highest_seq(), (6ull << 32) | 100);
  updated.store(true, std::memory_order_release);
  owner.join();
  ASSERT_EQ(got.size(), 200u);
  EXPECT_EQ(std::count(got.begin(), got.end(), Reason::Ok), 200);
  EXPECT_EQ(l.in().highest_seq(), (6ull << 32) | 200);
}

TEST(EspSequence, SpecSeqHiStartsBothSidesInThatSubspace) {
  SaSpec s = make_spec(all_suites()[0], Direction::Out, Mode::Tunnel, "192.0.2.1", "192.0.2.2", 0x55, true);
  s.seq_hi = 9;
  OutboundSa out(s, 0);
  InboundSa in(mirror(s), 0);
  EXPECT_EQ(out.next_seq(), (9ull << 32) | 1);
  PacketBuffer buf(make_udp_packet("10.0.0.1", "10.0.0.2", 1));
  ASSERT_EQ(out.encapsulate(buf.packet(), 0), Reason::Ok);
  const auto r = in.decapsulate(buf.packet(), 0);
  EXPECT_EQ(r.reason, Reason::Ok);
  EXPECT_EQ(r.seq, (9ull << 32) | 1);
}

}  // namespace
}  // namespace ov2::esp::test
