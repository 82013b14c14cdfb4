// The result-buffer pool (native/output_buffer.h) with a page-locking
// allocator stood in by a counting one, as a GPU backend registers it:
// pinned buffers come from it and are recycled, small ones and refusals fall
// back to ordinary memory, the cap on page-locked bytes holds, and only what
// the free pool cannot keep is given back. The buffers are never written, so
// the stand-in's allocations cost address space only. Prints PASS/FAIL per
// case and "OK: N cases, 0 failed" (test/output-buffer.test.ts runs it).
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include "errors.h"
#include "output_buffer.h"

namespace {

using fusedrt::OutputBuffer;
using Memory = OutputBuffer::Memory;

struct StandIn {
  int allocations = 0;
  int frees = 0;
  bool refuse = false;
  std::set<void*> live;
};
StandIn stand_in;

void* allocate(size_t bytes) {
  if (stand_in.refuse) return nullptr;
  void* p = std::malloc(bytes);
  if (p != nullptr) {
    ++stand_in.allocations;
    stand_in.live.insert(p);
  }
  return p;
}

void free_pinned(void* p) {
  ++stand_in.frees;
  stand_in.live.erase(p);
  std::free(p);
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
      if (stand_in.live.count(b.data()) == 0) return std::string("not the allocator's memory");
      first = b.data();
    }
    OutputBuffer again(kLarge, Memory::kPinned);
    if (again.data() != first) return std::string("a released pinned buffer was not reused");
    return stand_in.allocations == 1 ? std::string() : "allocator called " + std::to_string(stand_in.allocations) + " times";
  });

  check("pageable_stays_pageable", [] {
    OutputBuffer small(kLarge / 2, Memory::kPinned);
    OutputBuffer plain(kLarge, Memory::kPageable);
    if (small.pinned()) return std::string("a buffer below the pooled size was pinned");
    if (plain.pinned() || stand_in.live.count(plain.data()) != 0) return std::string("a pageable buffer was pinned");
    return std::string();
  });

  check("refusal_falls_back", [] {
    stand_in.refuse = true;
    OutputBuffer refused(kLarge * 4, Memory::kPinned);
    stand_in.refuse = false;
    if (refused.pinned()) return std::string("pinned although the allocator refused");
    OutputBuffer later(kLarge * 4, Memory::kPinned);
    return later.pinned() ? std::string() : std::string("a refusal kept its reservation");
  });

  check("cap_on_page_locked_bytes", [] {
    // 64 MB buffers: 16 fill the 1 GB cap, less what earlier cases keep in
    // the free pool (one 256 KB and one 1 MB buffer), so the 16th is refused.
    std::vector<OutputBuffer> held;
    int pinned = 0;
    for (int i = 0; i < 16; ++i) {
      held.emplace_back(kClass64M, Memory::kPinned);
      pinned += held.back().pinned() ? 1 : 0;
    }
    if (pinned != 15) return "pinned " + std::to_string(pinned) + " of 16 64 MB buffers, want 15 under the cap";
    if (held.back().pinned() || held.back().data() == nullptr) return std::string("the refused one is not an ordinary buffer");
    const int frees_before = stand_in.frees;
    held.clear();
    // The free pool keeps 256 MB of pinned buffers: 3 of the 64 MB ones fit
    // beside the 1.25 MB already free; 12 go back to the allocator.
    const int given_back = stand_in.frees - frees_before;
    if (given_back != 12) return "gave back " + std::to_string(given_back) + " buffers, want 12";
    OutputBuffer after(kClass64M, Memory::kPinned);
    return after.pinned() ? std::string() : std::string("not pinned after the others were released");
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
