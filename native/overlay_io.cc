// Native file operations for the overlay that Node's fs lacks.
#include <napi.h>
#include <fcntl.h>
#include <cerrno>
#include <cstring>
#include <string>

// punchHole(fd, offset, length): frees the byte range of a sparse file; it
// reads back as zeros. Used when blocks are unmapped.
static Napi::Value PunchHole(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() != 3 || !info[0].IsNumber() || !info[1].IsNumber() || !info[2].IsNumber()) {
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
  if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length) != 0) {
    int err = errno;
    Napi::Error e = Napi::Error::New(env, std::string("fallocate(PUNCH_HOLE): ") + strerror(err));
    e.Set("errno", Napi::Number::New(env, err));
    e.ThrowAsJavaScriptException();
  }
  return env.Undefined();
}

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("punchHole", Napi::Function::New(env, PunchHole));
  return exports;
}

NODE_API_MODULE(overlay_io, Init)
