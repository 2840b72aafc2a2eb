// Steady-state traffic through one SA pair per suite: every packet round-trips
// and the counters add up.  Also the workload used to count heap allocations
// per packet (run the binary under `valgrind` with OV2_ESP_HOT_PATH_PACKETS=N
// for two values of N: the difference in "allocs" is the per-packet count).
#include <gtest/gtest.h>
#include <openssl/evp.h>

#include <algorithm>
#include <cstdlib>
#include <string>

#include "esp/esp_test_util.h"

// Counting malloc: the test binary interposes malloc (forwarding to glibc's
// __libc_malloc) so a test can prove the packet path allocates nothing.
// OpenSSL allocates through malloc too.  Not under AddressSanitizer, which
// owns malloc itself (gcc says so with __SANITIZE_ADDRESS__, clang 14 only
// with __has_feature: its ASan runtime aborts before main, in its dlsym
// path, if this malloc replaces its own).
#if defined(__SANITIZE_ADDRESS__)
#define OV2_UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define OV2_UNDER_ASAN 1
#endif
#endif
#if !defined(OV2_UNDER_ASAN)
#define OV2_COUNTING_MALLOC 1
extern "C" void* __libc_malloc(size_t size);
static thread_local uint64_t g_mallocs = 0;
extern "C" void* malloc(size_t size) {
  ++g_mallocs;
  return __libc_malloc(size);
}
#endif

namespace ov2::esp::test {
namespace {

TEST(EspHotPath, SteadyTrafficRoundTripsAndCountsEveryPacketForEverySuiteOnEveryBackend) {
  const char* env = std::getenv("OV2_ESP_HOT_PATH_PACKETS");
  const int packets = env ? std::atoi(env) : 300;
  const char* only = std::getenv("OV2_ESP_HOT_PATH_SUITE");  // e.g. aes_gcm_128, for measuring one suite
  for (const CryptoBackend backend : kAllBackends)
    for (const Suite& suite : all_suites()) {
      if (only && std::string(only) != suite.name) continue;
      SCOPED_TRACE(std::string(backend_name(backend)) + " " + suite.name);
      ScopedCryptoBackend use(backend);
      SaSpec s = make_spec(suite, Direction::Out, Mode::Tunnel, "192.0.2.1", "192.0.2.2", 0x900, true);
      OutboundSa out(s, 0);
      InboundSa in(mirror(s), 0);
      const Bytes plain = make_udp_packet("10.0.0.1", "10.0.0.2", 1372);  // 1400-byte inner packet
      PacketBuffer buf(plain);
      for (int i = 0; i < packets; ++i) {
        Packet& p = buf.packet();
        // Reset the buffer to the plaintext without allocating.
        uint8_t* const base = p.data - p.headroom;
        p = Packet{base + 256, uint32_t(plain.size()), 256, 256};
        std::copy(plain.begin(), plain.end(), p.data);
        ASSERT_EQ(out.encapsulate(p, 0), Reason::Ok);
        ASSERT_EQ(in.decapsulate(p, 0).reason, Reason::Ok);
      }
      ASSERT_EQ(buf.bytes(), plain);
      EXPECT_EQ(out.counters().packets.load(), uint64_t(packets));
      EXPECT_EQ(in.counters().packets.load(), uint64_t(packets));
      EXPECT_EQ(in.counters().bytes.load(), uint64_t(packets) * plain.size());
      EXPECT_EQ(in.highest_seq(), uint64_t(packets));
    }
}

#ifdef OV2_COUNTING_MALLOC
TEST(EspHotPath, EncapsulateAndDecapsulateAllocateNothingPerPacketOnEveryBackend) {
  for (const CryptoBackend backend : kAllBackends)
    for (const Suite& suite : all_suites()) {
      for (Mode mode : {Mode::Tunnel, Mode::Transport}) {
        SCOPED_TRACE(std::string(backend_name(backend)) + " " + suite.name +
                     (mode == Mode::Tunnel ? " tunnel" : " transport"));
        ScopedCryptoBackend use(backend);
        SaSpec s = make_spec(suite, Direction::Out, mode, "192.0.2.1", "192.0.2.2", 0x901, true, true);
        OutboundSa out(s, 0);
        InboundSa in(mirror(s), 0);
        const Bytes plain = make_udp_packet("192.0.2.1", "192.0.2.2", 1372);
        PacketBuffer buf(plain);
        uint64_t counted = 0;
        for (int i = 0; i < 110; ++i) {
          Packet& p = buf.packet();
          uint8_t* const base = p.data - p.headroom;
          p = Packet{base + 256, uint32_t(plain.size()), 256, 256};
          std::copy(plain.begin(), plain.end(), p.data);
          const uint64_t before = g_mallocs;
          const Reason e = out.encapsulate(p, 0);
          const Reason d = in.decapsulate(p, 0).reason;
          if (i >= 10) counted += g_mallocs - before;  // after warm-up (OpenSSL's per-thread DRBG etc.)
          ASSERT_EQ(e, Reason::Ok);
          ASSERT_EQ(d, Reason::Ok);
        }
        EXPECT_EQ(counted, 0u) << "heap allocations in 100 encapsulate+decapsulate pairs";
      }
    }
}

TEST(EspHotPath, TheMallocCounterCountsOpenSslAllocations) {
  const uint64_t before = g_mallocs;
  EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
  EXPECT_GT(g_mallocs, before);  // so a zero above means something
  EVP_CIPHER_CTX_free(ctx);
}
#endif

}  // namespace
}  // namespace ov2::esp::test
