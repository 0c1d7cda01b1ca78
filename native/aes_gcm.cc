// AES-256-GCM of the 4 KiB blocks of a data object on libuv's thread pool,
// in the format of src/engine/volume-key.ts (doc/format.md, "Encryption"):
// block i of an object is sealed under the object's key with the 12-byte
// nonce of 8 zero bytes then i big-endian, no AAD, its ciphertext the length
// of the block (the last may be shorter than 4096), its tag 16 bytes. One job
// covers a range of blocks with one cipher context: the key is set once, then
// only the IV per block, where Node's crypto builds a cipher a block (~3.5 ms
// of the event loop per MB). The bytes are read and written where they are:
// a job keeps references to its buffers, so the memory stays alive.
// OpenSSL is Node's own (its symbols are exported by the node binary).
#include <napi.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>

static constexpr size_t kBlockSize = 4096;
static constexpr size_t kTagSize = 16;
static constexpr size_t kKeySize = 32;
static constexpr int kNonceSize = 12;

static size_t BlockCount(size_t length) { return length / kBlockSize + (length % kBlockSize != 0); }

static Napi::Value Fail(Napi::Env env, const std::string& message) {
  Napi::TypeError::New(env, message).ThrowAsJavaScriptException();
  return env.Undefined();
}

// A Uint8Array (or Buffer) argument: its bytes at its byteOffset, and the
// array itself, for the reference a job keeps.
struct Bytes {
  Napi::Uint8Array array;
  uint8_t* data = nullptr;
  size_t length = 0;
};

static bool GetBytes(const Napi::Value& value, Bytes* out) {
  if (!value.IsTypedArray() || value.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) return false;
  out->array = value.As<Napi::Uint8Array>();
  out->data = out->array.Data();
  out->length = out->array.ByteLength();
  return true;
}

static bool Overlap(const Bytes& a, const Bytes& b) {
  return a.length > 0 && b.length > 0 && a.data < b.data + b.length && b.data < a.data + a.length;
}

// One job: the blocks of input from block first on, into output and tags
// (seal), or checked against tags (open).
class BlocksWorker : public Napi::AsyncWorker {
 public:
  BlocksWorker(Napi::Function callback, bool seal, const uint8_t* key, const Bytes& input, const Bytes& output,
               const Bytes& tags, uint32_t first)
      : Napi::AsyncWorker(callback, seal ? "sealBlocks" : "openBlocks"),
        seal_(seal),
        input_ref_(Napi::Persistent(input.array)),
        output_ref_(Napi::Persistent(output.array)),
        tags_ref_(Napi::Persistent(tags.array)),
        input_(input.data),
        output_(output.data),
        tags_(tags.data),
        length_(input.length),
        first_(first) {
    std::memcpy(key_, key, kKeySize);
  }
  ~BlocksWorker() override { OPENSSL_cleanse(key_, kKeySize); }

  void Execute() override {
    if (length_ == 0) return;
    EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
    if (ctx == nullptr) return SetError(Name() + ": OpenSSL could not allocate a cipher context");
    const char* failed = Run(ctx);
    EVP_CIPHER_CTX_free(ctx);
    if (failed != nullptr) SetError(Name() + ": OpenSSL failed (" + failed + ")");
  }

  void OnOK() override {
    Napi::Env env = Env();
    if (seal_)
      Callback().Call({env.Null()});
    else
      Callback().Call({env.Null(), Napi::Number::New(env, bad_)});
  }

 private:
  std::string Name() const { return seal_ ? "sealBlocks" : "openBlocks"; }

  // What failed, or nullptr; a block that fails its tag is no failure here (bad_).
  const char* Run(EVP_CIPHER_CTX* ctx) {
    int enc = seal_ ? 1 : 0;
    if (EVP_CipherInit_ex(ctx, EVP_aes_256_gcm(), nullptr, nullptr, nullptr, enc) != 1) return "cipher";
    if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, kNonceSize, nullptr) != 1) return "IV length";
    if (EVP_CipherInit_ex(ctx, nullptr, nullptr, key_, nullptr, enc) != 1) return "key";
    uint8_t nonce[kNonceSize] = {0};
    size_t blocks = BlockCount(length_);
    for (size_t i = 0; i < blocks; i++) {
      size_t start = i * kBlockSize;
      int n = int(length_ - start < kBlockSize ? length_ - start : kBlockSize);
      uint32_t index = first_ + uint32_t(i);
      for (int k = 0; k < 4; k++) nonce[kNonceSize - 1 - k] = uint8_t(index >> (8 * k));
      uint8_t* tag = tags_ + i * kTagSize;
      if (EVP_CipherInit_ex(ctx, nullptr, nullptr, nullptr, nonce, enc) != 1) return "IV";
      if (!seal_ && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, int(kTagSize), tag) != 1) return "set tag";
      int written = 0;
      if (EVP_CipherUpdate(ctx, output_ + start, &written, input_ + start, n) != 1 || written != n) return "update";
      // GCM writes nothing at the end; output_ + start + n may be past the buffer, so a scratch block
      uint8_t rest[EVP_MAX_BLOCK_LENGTH];
      int final_ok = EVP_CipherFinal_ex(ctx, rest, &written);
      if (!seal_ && final_ok != 1) {
        bad_ = double(i);
        return nullptr;
      }
      if (final_ok != 1 || written != 0) return "final";
      if (seal_ && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, int(kTagSize), tag) != 1) return "get tag";
    }
    return nullptr;
  }

  const bool seal_;
  Napi::Reference<Napi::Uint8Array> input_ref_;
  Napi::Reference<Napi::Uint8Array> output_ref_;
  Napi::Reference<Napi::Uint8Array> tags_ref_;
  uint8_t key_[kKeySize];
  const uint8_t* input_;
  uint8_t* output_;
  uint8_t* tags_;
  size_t length_;
  uint32_t first_;
  double bad_ = -1;
};

// Checks the arguments of sealBlocks or openBlocks (out and tags stand in
// another order) and queues the job, or throws a TypeError saying what is wrong.
static Napi::Value Queue(const Napi::CallbackInfo& info, bool seal) {
  Napi::Env env = info.Env();
  const std::string name = seal ? "sealBlocks" : "openBlocks";
  const std::string in_name = seal ? "data" : "sealed";
  const size_t out_index = seal ? 2 : 3, tags_index = seal ? 3 : 2;
  if (info.Length() != 6)
    return Fail(env, seal ? "sealBlocks(key, data, out, tags, firstBlock, callback)"
                          : "openBlocks(key, sealed, tags, out, firstBlock, callback)");
  Bytes key, input, output, tags;
  if (!GetBytes(info[0], &key) || key.length != kKeySize)
    return Fail(env, name + ": key must be a Uint8Array or Buffer of 32 bytes");
  if (!GetBytes(info[1], &input)) return Fail(env, name + ": " + in_name + " must be a Uint8Array or Buffer");
  if (!GetBytes(info[out_index], &output)) return Fail(env, name + ": out must be a Uint8Array or Buffer");
  if (!GetBytes(info[tags_index], &tags)) return Fail(env, name + ": tags must be a Uint8Array or Buffer");
  if (!info[4].IsNumber()) return Fail(env, name + ": firstBlock must be a number");
  if (!info[5].IsFunction()) return Fail(env, name + ": callback must be a function");
  if (output.length < input.length)
    return Fail(env, name + ": out holds " + std::to_string(output.length) + " bytes, fewer than the " +
                         std::to_string(input.length) + " of " + in_name);
  size_t blocks = BlockCount(input.length);
  if (tags.length != kTagSize * blocks)
    return Fail(env, name + ": tags must hold 16 bytes per block of 4096, " + std::to_string(kTagSize * blocks) +
                         " for " + std::to_string(input.length) + " bytes, not " + std::to_string(tags.length));
  // nonces are 32-bit block indexes: every block's must fit
  double first = info[4].As<Napi::Number>().DoubleValue();
  if (!(first >= 0) || first != std::floor(first) || first + double(blocks) > 4294967296.0)
    return Fail(env, name + ": firstBlock must be a whole number from 0, and firstBlock + blocks at most 2^32");
  output.length = input.length;  // what is written
  if (output.data != input.data && Overlap(output, input))
    return Fail(env, name + ": out must be " + in_name + " itself (in place) or not overlap it");
  if (Overlap(tags, output) || (seal && Overlap(tags, input)))
    return Fail(env, name + ": tags must not overlap " + (seal ? "data or out" : "out"));
  (new BlocksWorker(info[5].As<Napi::Function>(), seal, key.data, input, output, tags, uint32_t(first)))->Queue();
  return env.Undefined();
}

// sealBlocks(key, data, out, tags, firstBlock, callback): seals each block of
// data into out (may be data itself) and its tag into tags; callback(err).
static Napi::Value SealBlocks(const Napi::CallbackInfo& info) { return Queue(info, true); }

// openBlocks(key, sealed, tags, out, firstBlock, callback): opens each block
// of sealed into out (may be sealed itself), checking its tag; callback(err,
// bad): bad is -1 when every block is authentic, else the index (in the
// range) of the first that is not, where it stopped (out holds what that
// block decrypted to, and nothing of the blocks after it).
static Napi::Value OpenBlocks(const Napi::CallbackInfo& info) { return Queue(info, false); }

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("sealBlocks", Napi::Function::New(env, SealBlocks));
  exports.Set("openBlocks", Napi::Function::New(env, OpenBlocks));
  return exports;
}

NODE_API_MODULE(aes_gcm, Init)
