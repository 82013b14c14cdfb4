// The result-buffer pool (native/output_buffer.h) with a page-locking
// allocator stood in by a counting one, as a GPU backend registers it:
// pinned buffers come from it and are recycled, small ones and refusals fall
// back to ordinary memory, spares of a class are allocated ahead on the
// pool's helper thread, the cap on page-locked bytes holds (spares
// included), and released ones are kept, not given back. The buffers are
// never written, so
// the stand-in's allocations cost address space only. Prints PASS/FAIL per
// case and "OK: N cases, 0 failed" (test/output-buffer.test.ts runs it).
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "errors.h"
#include "output_buffer.h"

namespace {

using fusedrt::OutputBuffer;
using Memory = OutputBuffer::Memory;

// Called on the test's thread and on the pool's helper thread.
struct StandIn {
  std::mutex mutex;
  int allocations = 0;
  int allocations_here = 0;  // on the test's thread
  int frees = 0;
  bool refuse = false;
  std::map<void*, size_t> live;
  size_t live_bytes = 0;
  size_t most_live_bytes = 0;
};
StandIn stand_in;
const std::thread::id test_thread = std::this_thread::get_id();

void* allocate(size_t bytes) {
  std::lock_guard<std::mutex> lock(stand_in.mutex);
  if (stand_in.refuse) return nullptr;
  void* p = std::malloc(bytes);
  if (p != nullptr) {
    ++stand_in.allocations;
    if (std::this_thread::get_id() == test_thread) ++stand_in.allocations_here;
    stand_in.live[p] = bytes;
    stand_in.live_bytes += bytes;
    stand_in.most_live_bytes = std::max(stand_in.most_live_bytes, stand_in.live_bytes);
  }
  return p;
}

void free_pinned(void* p) {
  std::lock_guard<std::mutex> lock(stand_in.mutex);
  ++stand_in.frees;
  stand_in.live_bytes -= stand_in.live[p];
  stand_in.live.erase(p);
  std::free(p);
}

// The stand-in's counters once the pool's helper is done.
StandIn& settled() {
  OutputBuffer::settle();
  return stand_in;
}

int cases = 0;
int failed = 0;

void check(const std::string& name, const std::function<std::string()>& body) {
  ++cases;
  std::string problem;
  try {
    problem = body();
  } catch (const std::exception& e) {
    problem = std::string("threw ") + e.what();
  }
  if (problem.empty()) {
    std::printf("PASS %s\n", name.c_str());
  } else {
    ++failed;
    std::printf("FAIL %s: %s\n", name.c_str(), problem.c_str());
  }
}

constexpr size_t kLarge = OutputBuffer::kPooledBytes / sizeof(float);  // floats in the smallest pooled class
constexpr size_t kClass64M = (size_t{64} << 20) / sizeof(float);

}  // namespace

int main() {
  check("pinned_without_allocator", [] {
    OutputBuffer b(kLarge, Memory::kPinned);
    if (b.pinned()) return std::string("pinned before any allocator was registered");
    return b.size() == kLarge && b.data() != nullptr ? std::string() : std::string("no usable buffer");
  });

  OutputBuffer::register_pinned_allocator({allocate, free_pinned});

  check("pinned_from_allocator_and_recycled", [] {
    void* first = nullptr;
    {
      OutputBuffer b(kLarge, Memory::kPinned);
      if (!b.pinned()) return std::string("not pinned");
      if (settled().live.count(b.data()) == 0) return std::string("not the allocator's memory");
      first = b.data();
    }
    OutputBuffer again(kLarge, Memory::kPinned);
    if (again.data() != first) return std::string("a released pinned buffer was not reused");
    // The first buffer was allocated here; its class's two spares ahead.
    const StandIn& s = settled();
    if (s.allocations != 3 || s.allocations_here != 1) {
      return "allocated " + std::to_string(s.allocations) + " (" + std::to_string(s.allocations_here) +
             " on this thread), want 3 (1)";
    }
    return std::string();
  });

  check("spares_are_had_off_the_taking_thread", [] {
    // 1 MB buffers: the first is allocated here, and every later one taken
    // comes from the spares the helper has allocated ahead meanwhile.
    std::vector<OutputBuffer> held;
    const int here_before = settled().allocations_here;
    for (int i = 0; i < 6; ++i) {
      held.emplace_back(kLarge * 4, Memory::kPinned);
      if (!held.back().pinned()) return "buffer " + std::to_string(i) + " not pinned";
      settled();
    }
    const int here = settled().allocations_here - here_before;
    return here == 1 ? std::string() : "allocated " + std::to_string(here) + " of 6 on the taking thread, want 1";
  });

  check("pinned_from_64_kb", [] {
    // A GPU's copy of an output above 64 KB can land in its result (a
    // BERT-base fill-mask row of logits is 122 KB): pinned, in a 128 KB class.
    OutputBuffer row(30522, Memory::kPinned);
    if (!row.pinned() || settled().live.count(row.data()) == 0) return std::string("a 122 KB buffer was not pinned");
    OutputBuffer at_minimum(OutputBuffer::kPinnedMinBytes / sizeof(float), Memory::kPinned);
    return at_minimum.pinned() ? std::string() : std::string("a 64 KB buffer was not pinned");
  });

  check("pageable_stays_pageable", [] {
    OutputBuffer small(OutputBuffer::kPinnedMinBytes / sizeof(float) / 2, Memory::kPinned);
    OutputBuffer plain(kLarge, Memory::kPageable);
    if (small.pinned()) return std::string("a buffer below kPinnedMinBytes was pinned");
    if (plain.pinned() || settled().live.count(plain.data()) != 0) return std::string("a pageable buffer was pinned");
    return std::string();
  });

  check("refusal_falls_back", [] {
    stand_in.refuse = true;
    OutputBuffer refused(kLarge * 2, Memory::kPinned);
    settled().refuse = false;  // the spares asked for were refused too
    if (refused.pinned()) return std::string("pinned although the allocator refused");
    OutputBuffer later(kLarge * 2, Memory::kPinned);
    return later.pinned() ? std::string() : std::string("a refusal kept its reservation");
  });

  check("cap_on_page_locked_bytes", [] {
    // 64 MB buffers, one spare each: with the smaller classes' few MB
    // page-locked, 15 held and no spare reach the 1 GB cap, so the 16th is
    // refused (as is every later one).
    std::vector<OutputBuffer> held;
    int pinned = 0;
    for (int i = 0; i < 20; ++i) {
      held.emplace_back(kClass64M, Memory::kPinned);
      pinned += held.back().pinned() ? 1 : 0;
      settled();
    }
    if (pinned != 15) return "pinned " + std::to_string(pinned) + " of 20 64 MB buffers, want 15 under the cap";
    if (held.back().pinned() || held.back().data() == nullptr) return std::string("the refused one is not an ordinary buffer");
    if (settled().most_live_bytes > OutputBuffer::kMaxPinnedBytes) {
      return "page-locked " + std::to_string(stand_in.most_live_bytes) + " bytes at once, over the cap";
    }
    // Released, every page-locked one is kept free (none given back), and
    // taken again without allocating.
    const int allocations_before = stand_in.allocations;
    held.clear();
    if (settled().frees != 0) return "gave back " + std::to_string(stand_in.frees) + " buffers, want none";
    for (int i = 0; i < 15; ++i) {
      held.emplace_back(kClass64M, Memory::kPinned);
      if (!held.back().pinned()) return "buffer " + std::to_string(i) + " not pinned when taken again";
    }
    const int more = settled().allocations - allocations_before;
    return more == 0 ? std::string() : "allocated " + std::to_string(more) + " more when taken again";
  });

  check("shrink_keeps_the_prefix", [] {
    OutputBuffer b(kLarge, Memory::kPinned);
    float* data = b.data();
    b.shrink(10);
    if (b.size() != 10 || b.data() != data) return std::string("shrink moved or mis-sized the buffer");
    b.shrink(20);
    return b.size() == 10 ? std::string() : std::string("shrink grew the buffer");
  });

  check("absurd_size_is_e_oom", [] {
    try {
      OutputBuffer b(size_t{1} << 62);
    } catch (const fusedrt::FusedError& e) {
      return e.code() == fusedrt::ErrorCode::kOom ? std::string() : std::string("wrong error code");
    }
    return std::string("no error");
  });

  std::printf("OK: %d cases, %d failed\n", cases, failed);
  return failed == 0 ? 0 : 1;
}
