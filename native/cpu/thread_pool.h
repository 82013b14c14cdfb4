// A fixed pool of worker threads owned by one CPU backend instance. Ops split
// their work with parallel_for; the calling thread takes part, so a pool of
// size 1 runs everything inline.
//
// A background pool computes below the process's priority, so that a
// process's other threads (Node's event loop above all) get a core as soon
// as they wake, even when the pool has taken every core. A thread may lower
// its own priority but not raise it again, so such a pool never lowers a
// thread it does not own: its work goes through run(), which hands it to the
// pool's own lead thread, and the lead thread calls parallel_for.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace fusedrt::cpu {

class ThreadPool {
 public:
  // threads <= 0 means one per hardware thread.
  explicit ThreadPool(int threads, bool background = false);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return static_cast<int>(workers_.size()) + 1; }

  // Runs task and returns when it has finished, rethrowing what it threw:
  // on a background pool on its lead thread, otherwise on the calling
  // thread. One task at a time (callers serialise, as CpuBackend's runs do).
  void run(const std::function<void()>& task);

  // Calls fn(begin, end) on disjoint chunks covering [0, n), at least
  // min_chunk items per chunk (the last may be shorter), and returns when all
  // chunks are done.
  // Not re-entrant: one parallel_for at a time per pool (the runtime
  // serialises runs per execution context). If fn throws, chunks not yet
  // started are skipped and the first exception is rethrown here.
  void parallel_for(int64_t n, int64_t min_chunk, const std::function<void(int64_t, int64_t)>& fn);

 private:
  void worker_loop();
  void lead_loop();
  // Runs chunks of the current job until none is left to hand out. Called
  // with `lock` held; releases it while a chunk runs.
  void run_chunks(std::unique_lock<std::mutex>& lock);

  const bool background_;
  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable work_ready_;
  std::condition_variable work_done_;
  const std::function<void(int64_t, int64_t)>* job_ = nullptr;
  int64_t job_n_ = 0;
  int64_t job_chunk_ = 0;
  int64_t chunk_count_ = 0;  // chunks of the current job, 0 when idle
  int64_t next_chunk_ = 0;   // next chunk to hand out
  int64_t chunks_left_ = 0;  // chunks handed out or not, not yet finished
  std::exception_ptr error_;  // first exception a chunk threw; rethrown by parallel_for
  bool stopping_ = false;
  // Bumped (under mutex_) whenever a job is posted or the pool stops; idle
  // workers poll it for a short while before sleeping on work_ready_.
  std::atomic<uint64_t> generation_{0};

  // The lead thread's hand-over (background pools only).
  std::thread lead_;
  std::mutex lead_mutex_;
  std::condition_variable task_ready_;
  std::condition_variable task_done_;
  const std::function<void()>* task_ = nullptr;  // set by run() until the task has finished
  bool task_finished_ = false;
  std::exception_ptr task_error_;
  bool lead_stopping_ = false;
  std::atomic<uint64_t> task_posted_{0};  // bumped (under lead_mutex_) by each run(), polled by the idle lead
};

// Lowers the calling thread's scheduling priority by kBackgroundNice (Linux:
// its nice value, capped at 19); best effort, and nothing elsewhere.
constexpr int kBackgroundNice = 10;
void lower_thread_priority();

}  // namespace fusedrt::cpu
