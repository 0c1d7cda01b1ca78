// A socket handed from serve's main thread to an engine thread
// (src/daemon/engine-threads.ts): Node closes a socket's descriptor when it
// lets go of it, so the thread that takes it over gets a duplicate first.
#include <fcntl.h>
#include <errno.h>
#include <string.h>
#include <napi.h>

// dupFd(fd): a new descriptor (close-on-exec) for the same open socket.
static Napi::Value DupFd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() != 1 || !info[0].IsNumber()) {
    Napi::TypeError::New(env, "dupFd(fd)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  int fd = info[0].As<Napi::Number>().Int32Value();
  if (fd < 0) {
    Napi::RangeError::New(env, "dupFd: the descriptor is negative").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  int copy = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (copy < 0) {
    Napi::Error::New(env, std::string("dup of descriptor ") + std::to_string(fd) + ": " + strerror(errno)).ThrowAsJavaScriptException();
    return env.Undefined();
  }
  return Napi::Number::New(env, copy);
}

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("dupFd", Napi::Function::New(env, DupFd));
  return exports;
}

NODE_API_MODULE(socket_handoff, Init)
