// Reading JS values passed to the addon: options and request fields, each
// checked, with an E_INPUT FusedError naming the field when it is wrong.
#pragma once

#include <napi.h>

#include <cstdint>
#include <string>
#include <vector>

namespace fusedrt {

// A whole number option in [min, max], or fallback when absent.
int64_t integer_option(const Napi::Object& options, const char* key, int64_t fallback, int64_t min, int64_t max);
// A boolean option, or fallback when absent.
bool boolean_option(const Napi::Object& options, const char* key, bool fallback);
// An Int32Array field copied out; *present says whether it was given (not
// undefined or null); absent and required is an error.
std::vector<int32_t> int32_array(const Napi::Object& request, const char* key, bool required, bool* present);
// An array of strings.
std::vector<std::string> string_list(const Napi::Object& request, const char* key);
// "cpu" -> -1, "cuda" -> 0, "cuda:N" -> N; anything else is rejected.
int device_ordinal(const std::string& name);

}  // namespace fusedrt
