// The workers' failure notes on their own (no root needed): what the daemon's
// periodic check learns about SAs that counted a failure -- each noted SA in
// order, a run on one SA once per take, a full ring reported as lost (so that the
// reader looks at every SA) and never a stale or torn handle under two threads.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

#include "dataplane/failure_notes.h"

namespace ov2 {
namespace {

TEST(DataplaneFailureNotes, NotesComeInOrderOnceForARunOnOneSaAndATakeEmptiesThem) {
  FailureNotes n;
  std::vector<uint64_t> out;
  EXPECT_TRUE(n.take(out));
  EXPECT_TRUE(out.empty());
  for (uint64_t h : {7, 7, 7, 9, 7, 7}) n.note(h);
  EXPECT_TRUE(n.take(out));
  EXPECT_EQ(out, (std::vector<uint64_t>{7, 9, 7}));
  out.clear();
  EXPECT_TRUE(n.take(out));
  EXPECT_TRUE(out.empty());
  n.note(7);  // the last one noted, but taken since: again (this failure may be a kind the last was not)
  n.note(7);
  n.note(11);
  EXPECT_TRUE(n.take(out));
  EXPECT_EQ(out, (std::vector<uint64_t>{7, 11}));
}

TEST(DataplaneFailureNotes, AnSaWhoseNoteWasLostIsNotedAgainAfterTheTakeThatReportedTheLoss) {
  FailureNotes n;
  const uint64_t k = FailureNotes::kCapacity;
  for (uint64_t h = 1; h <= k; ++h) n.note(h);
  n.note(500);  // dropped: the ring is full
  n.note(500);  // still waiting for the reader: nothing
  std::vector<uint64_t> out;
  EXPECT_FALSE(n.take(out));
  out.clear();
  n.note(500);
  EXPECT_TRUE(n.take(out));
  EXPECT_EQ(out, std::vector<uint64_t>{500});
}

TEST(DataplaneFailureNotes, AFullRingDropsTheNoteAndTheNextTakeSaysSomeWereLostOnce) {
  FailureNotes n;
  const uint64_t k = FailureNotes::kCapacity;
  for (uint64_t h = 1; h <= k + 5; ++h) n.note(h);
  std::vector<uint64_t> out;
  EXPECT_FALSE(n.take(out));  // look at every SA
  ASSERT_EQ(out.size(), k);
  EXPECT_EQ(out.front(), 1u);
  EXPECT_EQ(out.back(), k);
  out.clear();
  EXPECT_TRUE(n.take(out));  // reported once
  EXPECT_TRUE(out.empty());
  n.note(1000);  // room again
  EXPECT_TRUE(n.take(out));
  EXPECT_EQ(out, std::vector<uint64_t>{1000});
}

TEST(DataplaneFailureNotes, UnderConcurrentNoteAndTakeEveryHandleTakenWasNotedInOrderAndLossesAreReported) {
  FailureNotes n;
  constexpr uint64_t kNotes = 300000;
  std::atomic<bool> done{false};
  std::thread producer([&] {
    for (uint64_t h = 1; h <= kNotes; ++h) n.note(h);
    done.store(true);
  });
  std::vector<uint64_t> all;
  bool lost = false;
  for (;;) {
    const bool finished = done.load();
    std::vector<uint64_t> out;
    lost |= !n.take(out);
    all.insert(all.end(), out.begin(), out.end());
    if (finished) break;
  }
  producer.join();
  std::vector<uint64_t> rest;
  lost |= !n.take(rest);
  all.insert(all.end(), rest.begin(), rest.end());
  for (size_t i = 0; i < all.size(); ++i) {
    ASSERT_GE(all[i], 1u);
    ASSERT_LE(all[i], kNotes);
    if (i > 0) {
      ASSERT_GT(all[i], all[i - 1]) << i;  // no stale entry read twice, none out of order
    }
  }
  // Whatever is missing was reported as lost.
  if (all.size() != kNotes) {
    EXPECT_TRUE(lost) << all.size() << " of " << kNotes << " taken";
  }
}

}  // namespace
}  // namespace ov2
