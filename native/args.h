// Argument checks for the addon's JS methods. Wrong arguments are TypeError/RangeError,
// thrown synchronously before anything reaches a Xen library. lib/native/ validates
// first, with friendlier messages; these keep the raw addon safe on its own.
#ifndef XENODE_ARGS_H
#define XENODE_ARGS_H

#include <napi.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

namespace xenode {
namespace args {

inline Napi::Value At(const Napi::CallbackInfo& info, size_t i) {
  return i < info.Length() ? info[i] : info.Env().Undefined();
}

// A string handed to C as `const char*`: an embedded NUL would silently cut it short.
inline std::string CString(const Napi::CallbackInfo& info, size_t i, const char* what) {
  Napi::Value v = At(info, i);
  if (!v.IsString()) throw Napi::TypeError::New(info.Env(), std::string(what) + " must be a string");
  std::string s = v.As<Napi::String>().Utf8Value();
  if (s.find('\0') != std::string::npos) {
    throw Napi::TypeError::New(info.Env(), std::string(what) + " must not contain a NUL character");
  }
  return s;
}

inline uint32_t Uint32(const Napi::CallbackInfo& info, size_t i, const char* what) {
  Napi::Value v = At(info, i);
  if (!v.IsNumber()) throw Napi::TypeError::New(info.Env(), std::string(what) + " must be a number");
  double d = v.As<Napi::Number>().DoubleValue();
  if (!(d >= 0 && d <= 4294967295.0 && std::floor(d) == d)) {
    throw Napi::RangeError::New(info.Env(), std::string(what) + " must be an integer in 0..4294967295");
  }
  return static_cast<uint32_t>(d);
}

inline bool Bool(const Napi::CallbackInfo& info, size_t i, const char* what) {
  Napi::Value v = At(info, i);
  if (!v.IsBoolean()) throw Napi::TypeError::New(info.Env(), std::string(what) + " must be a boolean");
  return v.As<Napi::Boolean>().Value();
}

// The bytes of a Uint8Array (a Buffer is one), copied: the caller may change them meanwhile.
inline std::vector<uint8_t> Bytes(const Napi::CallbackInfo& info, size_t i, const char* what) {
  Napi::Value v = At(info, i);
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
    throw Napi::TypeError::New(info.Env(), std::string(what) + " must be a Uint8Array");
  }
  Napi::Uint8Array a = v.As<Napi::Uint8Array>();
  return std::vector<uint8_t>(a.Data(), a.Data() + a.ByteLength());
}

inline Napi::Function Function(const Napi::CallbackInfo& info, size_t i, const char* what) {
  Napi::Value v = At(info, i);
  if (!v.IsFunction()) throw Napi::TypeError::New(info.Env(), std::string(what) + " must be a function");
  return v.As<Napi::Function>();
}

}  // namespace args
}  // namespace xenode

#endif  // XENODE_ARGS_H
