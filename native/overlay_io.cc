// Native file operations for the overlay that Node's fs lacks: hole punching,
// writes through O_DIRECT (which need aligned memory), and the shared mapping
// bs_swift uses for direct I/O (doc/protocol.md, "Direct I/O"), whose words
// other processes change concurrently and so must be read and cleared with
// atomic instructions.
#include <napi.h>
#include <fcntl.h>
#include <sched.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

static Napi::Value ThrowErrno(Napi::Env env, const char* what, int err) {
  Napi::Error e = Napi::Error::New(env, std::string(what) + ": " + strerror(err));
  e.Set("errno", Napi::Number::New(env, err));
  e.ThrowAsJavaScriptException();
  return env.Undefined();
}

static bool Numbers(const Napi::CallbackInfo& info, size_t from, size_t count) {
  for (size_t i = from; i < from + count; i++)
    if (info.Length() <= i || !info[i].IsNumber()) return false;
  return true;
}

// punchHole(fd, offset, length): frees the byte range of a sparse file; it
// reads back as zeros. Used when blocks are unmapped.
static Napi::Value PunchHole(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() != 3 || !Numbers(info, 0, 3)) {
    Napi::TypeError::New(env, "punchHole(fd, offset, length)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  int fd = info[0].As<Napi::Number>().Int32Value();
  int64_t offset = info[1].As<Napi::Number>().Int64Value();
  int64_t length = info[2].As<Napi::Number>().Int64Value();
  if (offset < 0 || length <= 0) {
    Napi::RangeError::New(env, "punchHole: bad range").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length) != 0)
    return ThrowErrno(env, "fallocate(PUNCH_HOLE)", errno);
  return env.Undefined();
}

// mapShared(fd, length): a Buffer over a read-write MAP_SHARED mapping of the
// file's first length bytes; unmapped when the Buffer is collected.
static Napi::Value MapShared(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() != 2 || !Numbers(info, 0, 2)) {
    Napi::TypeError::New(env, "mapShared(fd, length)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  int fd = info[0].As<Napi::Number>().Int32Value();
  int64_t length = info[1].As<Napi::Number>().Int64Value();
  if (length <= 0) {
    Napi::RangeError::New(env, "mapShared: bad length").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  void* p = mmap(nullptr, (size_t)length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) return ThrowErrno(env, "mmap", errno);
  return Napi::Buffer<uint8_t>::New(env, static_cast<uint8_t*>(p), (size_t)length,
                                    [](Napi::Env, uint8_t* data, void* hint) {
                                      munmap(data, reinterpret_cast<size_t>(hint));
                                    },
                                    reinterpret_cast<void*>(length));
}

static bool InRange(const Napi::Buffer<uint8_t>& buf, int64_t offset, int64_t length) {
  return offset >= 0 && length >= 0 && (uint64_t)(offset + length) <= buf.Length();
}

// takeBytes(map, offset, length, out): moves length bytes at offset into
// out[0..length) and leaves zeros, each byte exchanged atomically, so a bit
// another process sets meanwhile is either taken now or left for next time.
// Returns whether any byte was non-zero.
static Napi::Value TakeBytes(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() != 4 || !info[0].IsBuffer() || !Numbers(info, 1, 2) || !info[3].IsBuffer()) {
    Napi::TypeError::New(env, "takeBytes(map, offset, length, out)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  auto map = info[0].As<Napi::Buffer<uint8_t>>();
  auto out = info[3].As<Napi::Buffer<uint8_t>>();
  int64_t offset = info[1].As<Napi::Number>().Int64Value();
  int64_t length = info[2].As<Napi::Number>().Int64Value();
  if (!InRange(map, offset, length) || out.Length() < (size_t)length) {
    Napi::RangeError::New(env, "takeBytes: bad range").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  uint8_t* p = map.Data() + offset;
  uint8_t any = 0;
  for (int64_t i = 0; i < length; i++) {
    // a plain load first: most bytes are zero and need no locked instruction
    uint8_t v = __atomic_load_n(p + i, __ATOMIC_RELAXED) ? __atomic_exchange_n(p + i, 0, __ATOMIC_SEQ_CST) : 0;
    out.Data()[i] = v;
    any |= v;
  }
  return Napi::Boolean::New(env, any != 0);
}

// waitZero(map, offset, timeoutMs): after a full fence (so that stores made
// before the call are visible to other processes first), waits until the
// 32-bit counter at offset is 0. Returns false on timeout.
static Napi::Value WaitZero(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() != 3 || !info[0].IsBuffer() || !Numbers(info, 1, 2)) {
    Napi::TypeError::New(env, "waitZero(map, offset, timeoutMs)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  auto map = info[0].As<Napi::Buffer<uint8_t>>();
  int64_t offset = info[1].As<Napi::Number>().Int64Value();
  int64_t timeout = info[2].As<Napi::Number>().Int64Value();
  if (!InRange(map, offset, 4) || offset % 4 != 0) {
    Napi::RangeError::New(env, "waitZero: bad offset").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  uint32_t* counter = reinterpret_cast<uint32_t*>(map.Data() + offset);
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
  struct timespec start, now;
  clock_gettime(CLOCK_MONOTONIC, &start);
  for (unsigned spins = 0;; spins++) {
    if (__atomic_load_n(counter, __ATOMIC_SEQ_CST) == 0) return Napi::Boolean::New(env, true);
    clock_gettime(CLOCK_MONOTONIC, &now);
    int64_t ms = (now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000;
    if (ms >= timeout) return Napi::Boolean::New(env, false);
    if (spins < 1000) {
      sched_yield();
    } else {
      struct timespec pause = {0, 100000};
      nanosleep(&pause, nullptr);
    }
  }
}

// O_DIRECT needs memory aligned to the device's blocks. Node's buffers are
// not, unless made so (alignedBuffer in src/native/addons.ts, from
// pageOffset): an aligned buffer is written as it is; any other goes through
// an aligned bounce buffer, a piece at a time (a copy: 7.5% of serve's CPU on
// a cold stream, when every fill went that way). A few bounce buffers are
// kept for reuse (one per pool thread at most is in use): fresh ones would
// cost a page fault per 4 KiB.
static const size_t kAlign = 4096;
static const size_t kBounceSize = 1 << 20;
static const size_t kKeepBounce = 4;
static std::mutex bounceLock;
static std::vector<void*> bounceFree;

static void* TakeBounce() {
  {
    std::lock_guard<std::mutex> hold(bounceLock);
    if (!bounceFree.empty()) {
      void* p = bounceFree.back();
      bounceFree.pop_back();
      return p;
    }
  }
  void* p = nullptr;
  return posix_memalign(&p, kAlign, kBounceSize) == 0 ? p : nullptr;
}

static void GiveBounce(void* p) {
  std::lock_guard<std::mutex> hold(bounceLock);
  if (bounceFree.size() < kKeepBounce) {
    bounceFree.push_back(p);
  } else {
    free(p);
  }
}

class AlignedWrite : public Napi::AsyncWorker {
 public:
  AlignedWrite(Napi::Function callback, Napi::Buffer<uint8_t> data, int fd, int64_t position)
      : Napi::AsyncWorker(callback),
        keep_(Napi::Persistent(data)),
        source_(data.Data()),
        length_(data.Length()),
        fd_(fd),
        position_(position) {}

  // On a libuv pool thread; keep_ holds the source buffer alive meanwhile.
  void Execute() override {
    if (reinterpret_cast<uintptr_t>(source_) % kAlign == 0) {
      WriteAll(source_, length_, position_);
      return;
    }
    void* bounce = TakeBounce();
    if (bounce == nullptr) {
      error_ = ENOMEM;
      return;
    }
    for (size_t done = 0; done < length_ && error_ == 0;) {
      size_t piece = length_ - done < kBounceSize ? length_ - done : kBounceSize;
      memcpy(bounce, source_ + done, piece);
      WriteAll(static_cast<const uint8_t*>(bounce), piece, position_ + (int64_t)done);
      done += piece;
    }
    GiveBounce(bounce);
  }

  // pwrite of all of [from, from + length) at position, or error_ set.
  void WriteAll(const uint8_t* from, size_t length, int64_t position) {
    for (size_t written = 0; written < length;) {
      ssize_t n = pwrite(fd_, from + written, length - written, position + (int64_t)written);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        error_ = n < 0 ? errno : EIO;
        return;
      }
      written += (size_t)n;
    }
  }

  void OnOK() override {
    Napi::Env env = Env();
    if (error_ == 0) {
      Callback().Call({env.Null()});
      return;
    }
    Napi::Error e = Napi::Error::New(env, std::string("pwrite(O_DIRECT): ") + strerror(error_));
    e.Set("errno", Napi::Number::New(env, error_));
    Callback().Call({e.Value()});
  }

 private:
  Napi::Reference<Napi::Buffer<uint8_t>> keep_;
  const uint8_t* source_;
  size_t length_;
  int fd_;
  int64_t position_;
  int error_ = 0;
};

// writeAligned(fd, data, position, callback): writes data at position through
// fd, a file opened with O_DIRECT, in the background; position and the length
// must be multiples of 4096. callback(err) once done.
static Napi::Value WriteAligned(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() != 4 || !info[0].IsNumber() || !info[1].IsBuffer() || !info[2].IsNumber() || !info[3].IsFunction()) {
    Napi::TypeError::New(env, "writeAligned(fd, data, position, callback)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  int fd = info[0].As<Napi::Number>().Int32Value();
  auto data = info[1].As<Napi::Buffer<uint8_t>>();
  int64_t position = info[2].As<Napi::Number>().Int64Value();
  if (position < 0 || position % (int64_t)kAlign != 0 || data.Length() == 0 || data.Length() % kAlign != 0) {
    Napi::RangeError::New(env, "writeAligned: position and length must be multiples of 4096").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  (new AlignedWrite(info[3].As<Napi::Function>(), data, fd, position))->Queue();
  return env.Undefined();
}

// pageOffset(buffer): where the buffer's memory starts within its 4 KiB
// page, so that JavaScript can take a page-aligned view of a buffer it made
// a page larger (alignedBuffer in src/native/addons.ts).
static Napi::Value PageOffset(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() != 1 || !info[0].IsBuffer()) {
    Napi::TypeError::New(env, "pageOffset(buffer)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  auto buffer = info[0].As<Napi::Buffer<uint8_t>>();
  return Napi::Number::New(env, (double)(reinterpret_cast<uintptr_t>(buffer.Data()) % kAlign));
}

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("punchHole", Napi::Function::New(env, PunchHole));
  exports.Set("writeAligned", Napi::Function::New(env, WriteAligned));
  exports.Set("mapShared", Napi::Function::New(env, MapShared));
  exports.Set("takeBytes", Napi::Function::New(env, TakeBytes));
  exports.Set("waitZero", Napi::Function::New(env, WaitZero));
  exports.Set("pageOffset", Napi::Function::New(env, PageOffset));
  return exports;
}

NODE_API_MODULE(overlay_io, Init)
