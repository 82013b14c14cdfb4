#include "thread_pool.h"

#include <algorithm>
#include <cerrno>
#include <chrono>

#if defined(__linux__)
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace fusedrt::cpu {

namespace {

// Chunks handed out per thread: more than one so that a thread that finishes
// early (or starts late) picks up work instead of idling at the barrier.
constexpr int64_t kChunksPerThread = 4;

// How long an idle worker polls for the next job before it sleeps. A run
// posts its ops back to back, a few microseconds apart; waking a sleeping
// thread costs tens of microseconds each time, which adds up to about a
// millisecond per forward pass of a small model.
constexpr std::chrono::microseconds kSpinBeforeSleep{100};

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

// Polls `posted` (without the lock) for a moment, until it moves; the
// caller's wait that follows re-checks under the lock, so work posted
// meanwhile is not lost. Posting bumps `posted` under the same lock.
void poll_before_sleeping(const std::atomic<uint64_t>& posted, std::unique_lock<std::mutex>& lock) {
  const uint64_t seen = posted.load(std::memory_order_relaxed);
  lock.unlock();
  const auto deadline = std::chrono::steady_clock::now() + kSpinBeforeSleep;
  while (posted.load(std::memory_order_acquire) == seen && std::chrono::steady_clock::now() < deadline) cpu_relax();
  lock.lock();
}

}  // namespace

void lower_thread_priority() {
#if defined(__linux__)
  // Linux keeps a nice value per thread; PRIO_PROCESS with a thread id sets
  // that thread's alone.
  const auto thread = static_cast<id_t>(syscall(SYS_gettid));
  errno = 0;
  const int nice = getpriority(PRIO_PROCESS, thread);
  if (errno == 0) setpriority(PRIO_PROCESS, thread, std::min(19, nice + kBackgroundNice));
#endif
}

ThreadPool::ThreadPool(int threads, bool background) : background_(background) {
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  try {
    for (int i = 1; i < threads; ++i) workers_.emplace_back([this] { worker_loop(); });
    if (background_) lead_ = std::thread([this] { lead_loop(); });
  } catch (...) {
    // A joinable std::thread destroyed during unwinding would terminate the
    // process; stop the workers already started before rethrowing.
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    work_ready_.notify_all();
    for (auto& worker : workers_) worker.join();
    throw;
  }
}

ThreadPool::~ThreadPool() {
  if (lead_.joinable()) {
    {
      std::lock_guard<std::mutex> lock(lead_mutex_);
      lead_stopping_ = true;
    }
    task_ready_.notify_all();
    lead_.join();
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
    generation_.fetch_add(1, std::memory_order_release);
  }
  work_ready_.notify_all();
  for (auto& worker : workers_) worker.join();
}

void ThreadPool::run(const std::function<void()>& task) {
  if (!lead_.joinable()) {
    task();
    return;
  }
  std::unique_lock<std::mutex> lock(lead_mutex_);
  task_ = &task;
  task_finished_ = false;
  task_posted_.fetch_add(1, std::memory_order_release);
  task_ready_.notify_one();
  task_done_.wait(lock, [this] { return task_finished_; });
  task_ = nullptr;
  std::exception_ptr error = std::move(task_error_);
  task_error_ = nullptr;
  lock.unlock();
  if (error) std::rethrow_exception(error);
}

void ThreadPool::lead_loop() {
  lower_thread_priority();
  std::unique_lock<std::mutex> lock(lead_mutex_);
  for (;;) {
    // As the workers do: runs come back to back.
    poll_before_sleeping(task_posted_, lock);
    task_ready_.wait(lock, [this] { return lead_stopping_ || (task_ != nullptr && !task_finished_); });
    if (lead_stopping_) return;
    const auto* task = task_;
    lock.unlock();
    std::exception_ptr error;
    try {
      (*task)();
    } catch (...) {
      error = std::current_exception();
    }
    lock.lock();
    task_error_ = error;
    task_finished_ = true;
    task_done_.notify_one();
  }
}

void ThreadPool::parallel_for(int64_t n, int64_t min_chunk,
                              const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  const int64_t target_chunks = static_cast<int64_t>(size()) * kChunksPerThread;
  const int64_t chunk = std::max({int64_t{1}, min_chunk, (n + target_chunks - 1) / target_chunks});
  if (workers_.empty() || chunk >= n) {
    fn(0, n);
    return;
  }

  std::unique_lock<std::mutex> lock(mutex_);
  job_ = &fn;
  job_n_ = n;
  job_chunk_ = chunk;
  chunk_count_ = (n + chunk - 1) / chunk;
  next_chunk_ = 0;
  chunks_left_ = chunk_count_;
  error_ = nullptr;
  generation_.fetch_add(1, std::memory_order_release);
  work_ready_.notify_all();
  run_chunks(lock);
  work_done_.wait(lock, [this] { return chunks_left_ == 0; });

  job_ = nullptr;
  chunk_count_ = 0;
  next_chunk_ = 0;
  std::exception_ptr error = std::move(error_);
  error_ = nullptr;
  lock.unlock();
  if (error) std::rethrow_exception(error);
}

void ThreadPool::run_chunks(std::unique_lock<std::mutex>& lock) {
  while (next_chunk_ < chunk_count_) {
    const int64_t begin = next_chunk_++ * job_chunk_;
    const int64_t end = std::min(job_n_, begin + job_chunk_);
    const auto* fn = job_;
    lock.unlock();
    std::exception_ptr error;
    try {
      (*fn)(begin, end);
    } catch (...) {
      error = std::current_exception();
    }
    lock.lock();
    if (error) {
      if (!error_) error_ = error;
      // Nobody will run the chunks not yet handed out: count them as done.
      chunks_left_ -= chunk_count_ - next_chunk_;
      next_chunk_ = chunk_count_;
    }
    if (--chunks_left_ == 0) work_done_.notify_all();
  }
}

void ThreadPool::worker_loop() {
  if (background_) lower_thread_priority();
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    if (!stopping_ && next_chunk_ >= chunk_count_) poll_before_sleeping(generation_, lock);
    work_ready_.wait(lock, [this] { return stopping_ || next_chunk_ < chunk_count_; });
    if (stopping_) return;
    run_chunks(lock);
  }
}

}  // namespace fusedrt::cpu
