// A small JSON parser for plan headers, which may come from hostile files.
// Everything it reads is bounded: input size, nesting depth (the parser
// recurses, so depth is what keeps the stack safe), value count and string
// length. Invalid UTF-8, lone surrogates, duplicate keys and numbers outside
// the double range are errors, never undefined behaviour.
#pragma once

#include <cstddef>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace fusedrt::json {

enum class Type { kNull, kBool, kNumber, kString, kArray, kObject };

class Value {
 public:
  Type type() const { return type_; }
  bool is_null() const { return type_ == Type::kNull; }
  bool is_bool() const { return type_ == Type::kBool; }
  bool is_number() const { return type_ == Type::kNumber; }
  bool is_string() const { return type_ == Type::kString; }
  bool is_array() const { return type_ == Type::kArray; }
  bool is_object() const { return type_ == Type::kObject; }

  bool boolean() const { return boolean_; }
  double number() const { return number_; }
  const std::string& string() const { return string_; }
  const std::vector<Value>& items() const { return items_; }
  const std::vector<std::pair<std::string, Value>>& members() const { return members_; }

  // The member named key of an object; nullptr when absent or not an object.
  const Value* find(std::string_view key) const;

 private:
  friend class Parser;
  Type type_ = Type::kNull;
  bool boolean_ = false;
  double number_ = 0;
  std::string string_;
  std::vector<Value> items_;
  std::vector<std::pair<std::string, Value>> members_;
};

struct Limits {
  size_t max_bytes = 16u << 20;
  int max_depth = 64;
  size_t max_values = 1u << 18;
  size_t max_string_bytes = 1u << 20;
};

class ParseError : public std::runtime_error {
 public:
  ParseError(size_t offset, const std::string& message)
      : std::runtime_error(message + " at byte " + std::to_string(offset)), offset_(offset) {}
  size_t offset() const { return offset_; }

 private:
  size_t offset_;
};

// Parses one JSON document (surrounding whitespace allowed); throws ParseError.
Value parse(std::string_view text, const Limits& limits = Limits());

// Names a type for error messages ("a string", "an object").
const char* type_name(Type type);

}  // namespace fusedrt::json
