// glibc malloc's thresholds, set from inside the process (GLIBC_TUNABLES is
// read only when a process starts, and serve is started by its operator).
// See src/os/malloc-tuning.ts for why.
#include <malloc.h>
#include <napi.h>

// setThresholds(mmapThreshold, trimThreshold): true when glibc took both.
static Napi::Value SetThresholds(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() != 2 || !info[0].IsNumber() || !info[1].IsNumber()) {
    Napi::TypeError::New(env, "setThresholds(mmapThreshold, trimThreshold)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  double mmap = info[0].As<Napi::Number>().DoubleValue();
  double trim = info[1].As<Napi::Number>().DoubleValue();
  if (!(mmap >= 0 && mmap <= 2147483647.0) || !(trim >= 0 && trim <= 2147483647.0)) {
    Napi::RangeError::New(env, "malloc thresholds must be 0 to 2^31-1 bytes").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  // mallopt returns 1 on success, 0 when it refuses the value.
  bool ok = mallopt(M_MMAP_THRESHOLD, static_cast<int>(mmap)) == 1;
  ok = mallopt(M_TRIM_THRESHOLD, static_cast<int>(trim)) == 1 && ok;
  return Napi::Boolean::New(env, ok);
}

// trim(): malloc_trim(0), every whole free page of the heap given back to the
// kernel; true when some memory was.
static Napi::Value Trim(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), malloc_trim(0) == 1);
}

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("setThresholds", Napi::Function::New(env, SetThresholds));
  exports.Set("trim", Napi::Function::New(env, Trim));
  return exports;
}

NODE_API_MODULE(malloc_tuning, Init)
