// MD5 on libuv's thread pool, for the checksums Swift keeps (ETags): a
// context fed a piece at a time, each piece one job on the pool, so hashing
// an 8 MiB object neither stops the event loop for ~15 ms nor holds a pool
// thread (shared with file I/O) that long. The bytes are read where they
// are: a job keeps a reference to its Buffer, so the memory stays alive.
// OpenSSL is Node's own (its symbols are exported by the node binary).
#include <napi.h>
#include <openssl/evp.h>
#include <string>

// The digest state, owned by a JS object (freed when that is collected).
class Md5Context {
 public:
  Md5Context() : ctx_(EVP_MD_CTX_new()) {
    if (ctx_ && EVP_DigestInit_ex(ctx_, EVP_md5(), nullptr) != 1) {
      EVP_MD_CTX_free(ctx_);
      ctx_ = nullptr;
    }
  }
  ~Md5Context() { EVP_MD_CTX_free(ctx_); }
  bool ok() const { return ctx_ != nullptr; }
  bool Update(const uint8_t* data, size_t length) { return EVP_DigestUpdate(ctx_, data, length) == 1; }
  bool Final(std::string* hex) {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    if (EVP_DigestFinal_ex(ctx_, md, &n) != 1) return false;
    static const char digits[] = "0123456789abcdef";
    hex->assign(2 * n, '0');
    for (unsigned int i = 0; i < n; i++) {
      (*hex)[2 * i] = digits[md[i] >> 4];
      (*hex)[2 * i + 1] = digits[md[i] & 15];
    }
    return true;
  }

 private:
  EVP_MD_CTX* ctx_;
};

using ContextHandle = Napi::External<Md5Context>;

static Napi::Value Fail(Napi::Env env, const char* message) {
  Napi::TypeError::New(env, message).ThrowAsJavaScriptException();
  return env.Undefined();
}

// md5Begin(): a new context.
static Napi::Value Begin(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto* context = new Md5Context();
  if (!context->ok()) {
    delete context;
    Napi::Error::New(env, "md5Begin: OpenSSL could not start an MD5 context").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  return ContextHandle::New(env, context, [](Napi::Env, Md5Context* c) { delete c; });
}

class UpdateWorker : public Napi::AsyncWorker {
 public:
  UpdateWorker(Napi::Function callback, ContextHandle context, Napi::Uint8Array data)
      : Napi::AsyncWorker(callback, "md5Update"),
        context_ref_(Napi::Persistent(context)),
        data_ref_(Napi::Persistent(data)),
        context_(context.Data()),
        data_(data.Data()),
        length_(data.ByteLength()) {}

  void Execute() override {
    if (!context_->Update(data_, length_)) SetError("md5Update: OpenSSL failed");
  }

 private:
  Napi::Reference<ContextHandle> context_ref_;
  Napi::Reference<Napi::Uint8Array> data_ref_;
  Md5Context* context_;
  const uint8_t* data_;
  size_t length_;
};

// md5Update(context, bytes, callback): feeds bytes on the pool; callback(err).
// The caller must not feed a context again before the callback.
static Napi::Value Update(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() != 3 || !info[0].IsExternal() || !info[1].IsTypedArray() || !info[2].IsFunction())
    return Fail(env, "md5Update(context, bytes, callback)");
  Napi::TypedArray bytes = info[1].As<Napi::TypedArray>();
  if (bytes.TypedArrayType() != napi_uint8_array) return Fail(env, "md5Update: bytes must be a Uint8Array or Buffer");
  (new UpdateWorker(info[2].As<Napi::Function>(), info[0].As<ContextHandle>(), bytes.As<Napi::Uint8Array>()))->Queue();
  return env.Undefined();
}

// md5End(context): the hex digest (the context is spent).
static Napi::Value End(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() != 1 || !info[0].IsExternal()) return Fail(env, "md5End(context)");
  std::string hex;
  if (!info[0].As<ContextHandle>().Data()->Final(&hex)) {
    Napi::Error::New(env, "md5End: OpenSSL failed").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  return Napi::String::New(env, hex);
}

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("md5Begin", Napi::Function::New(env, Begin));
  exports.Set("md5Update", Napi::Function::New(env, Update));
  exports.Set("md5End", Napi::Function::New(env, End));
  return exports;
}

NODE_API_MODULE(md5_digest, Init)
