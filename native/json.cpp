#include "json.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>

namespace fusedrt::json {

const Value* Value::find(std::string_view key) const {
  if (type_ != Type::kObject) return nullptr;
  for (const auto& member : members_) {
    if (member.first == key) return &member.second;
  }
  return nullptr;
}

const char* type_name(Type type) {
  switch (type) {
    case Type::kNull: return "null";
    case Type::kBool: return "a boolean";
    case Type::kNumber: return "a number";
    case Type::kString: return "a string";
    case Type::kArray: return "an array";
    case Type::kObject: return "an object";
  }
  return "a value";
}

class Parser {
 public:
  Parser(std::string_view text, const Limits& limits) : text_(text), limits_(limits) {}

  Value parse_document() {
    if (text_.size() > limits_.max_bytes) {
      throw ParseError(0, "document of " + std::to_string(text_.size()) + " bytes exceeds the limit of " +
                              std::to_string(limits_.max_bytes));
    }
    Value root;
    skip_whitespace();
    parse_value(root, 0);
    skip_whitespace();
    if (pos_ != text_.size()) error("unexpected data after the document");
    return root;
  }

 private:
  [[noreturn]] void error(const std::string& message) const { throw ParseError(pos_, message); }

  bool at_end() const { return pos_ >= text_.size(); }
  char peek() const { return at_end() ? '\0' : text_[pos_]; }

  void skip_whitespace() {
    while (!at_end()) {
      char c = text_[pos_];
      if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
      ++pos_;
    }
  }

  void expect_literal(std::string_view literal) {
    if (text_.substr(pos_, literal.size()) != literal) error("invalid literal");
    pos_ += literal.size();
  }

  void count_value() {
    if (++values_ > limits_.max_values) error("more than " + std::to_string(limits_.max_values) + " values");
  }

  void parse_value(Value& out, int depth) {
    count_value();
    if (at_end()) error("unexpected end of document");
    switch (peek()) {
      case '{': parse_object(out, depth + 1); return;
      case '[': parse_array(out, depth + 1); return;
      case '"':
        out.type_ = Type::kString;
        parse_string(out.string_);
        return;
      case 't':
        expect_literal("true");
        out.type_ = Type::kBool;
        out.boolean_ = true;
        return;
      case 'f':
        expect_literal("false");
        out.type_ = Type::kBool;
        out.boolean_ = false;
        return;
      case 'n':
        expect_literal("null");
        out.type_ = Type::kNull;
        return;
      default:
        out.type_ = Type::kNumber;
        out.number_ = parse_number();
        return;
    }
  }

  void check_depth(int depth) const {
    if (depth > limits_.max_depth) error("nesting deeper than " + std::to_string(limits_.max_depth));
  }

  void parse_array(Value& out, int depth) {
    check_depth(depth);
    out.type_ = Type::kArray;
    ++pos_;
    skip_whitespace();
    if (peek() == ']') {
      ++pos_;
      return;
    }
    for (;;) {
      skip_whitespace();
      out.items_.emplace_back();
      parse_value(out.items_.back(), depth);
      skip_whitespace();
      char c = peek();
      ++pos_;
      if (c == ']') return;
      if (c != ',') {
        --pos_;
        error("expected ',' or ']' in array");
      }
    }
  }

  void parse_object(Value& out, int depth) {
    check_depth(depth);
    out.type_ = Type::kObject;
    ++pos_;
    skip_whitespace();
    if (peek() == '}') {
      ++pos_;
      return;
    }
    for (;;) {
      skip_whitespace();
      if (peek() != '"') error("expected a string key in object");
      std::string key;
      parse_string(key);
      skip_whitespace();
      if (peek() != ':') error("expected ':' after object key");
      ++pos_;
      skip_whitespace();
      out.members_.emplace_back(std::move(key), Value());
      parse_value(out.members_.back().second, depth);
      skip_whitespace();
      char c = peek();
      ++pos_;
      if (c == '}') break;
      if (c != ',') {
        --pos_;
        error("expected ',' or '}' in object");
      }
    }
    reject_duplicate_keys(out);
  }

  // Sorting pointers keeps this O(n log n) even for a hostile object with
  // many members; a later find() would silently pick the first duplicate.
  void reject_duplicate_keys(const Value& object) const {
    if (object.members_.size() < 2) return;
    std::vector<const std::string*> keys;
    keys.reserve(object.members_.size());
    for (const auto& member : object.members_) keys.push_back(&member.first);
    std::sort(keys.begin(), keys.end(), [](const std::string* a, const std::string* b) { return *a < *b; });
    for (size_t i = 1; i < keys.size(); ++i) {
      if (*keys[i] == *keys[i - 1]) error("duplicate key \"" + *keys[i] + "\"");
    }
  }

  unsigned hex_digit(char c) const {
    if (c >= '0' && c <= '9') return static_cast<unsigned>(c - '0');
    if (c >= 'a' && c <= 'f') return static_cast<unsigned>(c - 'a' + 10);
    if (c >= 'A' && c <= 'F') return static_cast<unsigned>(c - 'A' + 10);
    error("invalid \\u escape");
  }

  uint32_t parse_hex4() {
    if (text_.size() - pos_ < 4) error("truncated \\u escape");
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) v = (v << 4) | hex_digit(text_[pos_++]);
    return v;
  }

  static void append_utf8(std::string& out, uint32_t cp) {
    if (cp < 0x80) {
      out.push_back(static_cast<char>(cp));
    } else if (cp < 0x800) {
      out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
      out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
      out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
      out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else {
      out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
      out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
  }

  uint32_t parse_escape() {
    char c = peek();
    ++pos_;
    switch (c) {
      case '"': return '"';
      case '\\': return '\\';
      case '/': return '/';
      case 'b': return '\b';
      case 'f': return '\f';
      case 'n': return '\n';
      case 'r': return '\r';
      case 't': return '\t';
      case 'u': {
        uint32_t cp = parse_hex4();
        if (cp >= 0xDC00 && cp <= 0xDFFF) error("lone low surrogate in \\u escape");
        if (cp >= 0xD800 && cp <= 0xDBFF) {
          if (text_.substr(pos_, 2) != "\\u") error("lone high surrogate in \\u escape");
          pos_ += 2;
          uint32_t low = parse_hex4();
          if (low < 0xDC00 || low > 0xDFFF) error("invalid surrogate pair in \\u escape");
          cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
        }
        return cp;
      }
      default:
        --pos_;
        error("invalid escape in string");
    }
  }

  // Copies one UTF-8 sequence starting at pos_, rejecting overlong forms,
  // surrogates and code points above U+10FFFF.
  void copy_utf8_sequence(std::string& out) {
    auto byte = [&](size_t i) { return static_cast<unsigned char>(text_[i]); };
    unsigned char lead = byte(pos_);
    size_t length;
    uint32_t cp;
    if (lead >= 0xC2 && lead <= 0xDF) {
      length = 2;
      cp = lead & 0x1F;
    } else if (lead >= 0xE0 && lead <= 0xEF) {
      length = 3;
      cp = lead & 0x0F;
    } else if (lead >= 0xF0 && lead <= 0xF4) {
      length = 4;
      cp = lead & 0x07;
    } else {
      error("invalid UTF-8");
    }
    if (text_.size() - pos_ < length) error("truncated UTF-8 sequence");
    for (size_t i = 1; i < length; ++i) {
      unsigned char continuation = byte(pos_ + i);
      if ((continuation & 0xC0) != 0x80) error("invalid UTF-8");
      cp = (cp << 6) | (continuation & 0x3F);
    }
    if ((length == 3 && cp < 0x800) || (length == 4 && cp < 0x10000) || cp > 0x10FFFF ||
        (cp >= 0xD800 && cp <= 0xDFFF)) {
      error("invalid UTF-8");
    }
    out.append(text_.substr(pos_, length));
    pos_ += length;
  }

  void parse_string(std::string& out) {
    ++pos_;  // opening quote
    for (;;) {
      if (at_end()) error("unterminated string");
      if (out.size() > limits_.max_string_bytes) {
        error("string longer than " + std::to_string(limits_.max_string_bytes) + " bytes");
      }
      unsigned char c = static_cast<unsigned char>(text_[pos_]);
      if (c == '"') {
        ++pos_;
        return;
      }
      if (c == '\\') {
        ++pos_;
        append_utf8(out, parse_escape());
      } else if (c < 0x20) {
        error("control character in string");
      } else if (c < 0x80) {
        out.push_back(static_cast<char>(c));
        ++pos_;
      } else {
        copy_utf8_sequence(out);
      }
    }
  }

  static bool is_digit(char c) { return c >= '0' && c <= '9'; }

  double parse_number() {
    size_t start = pos_;
    if (peek() == '-') ++pos_;
    if (peek() == '0') {
      ++pos_;
    } else if (is_digit(peek())) {
      while (is_digit(peek())) ++pos_;
    } else {
      error("invalid value");
    }
    if (peek() == '.') {
      ++pos_;
      if (!is_digit(peek())) error("invalid number");
      while (is_digit(peek())) ++pos_;
    }
    if (peek() == 'e' || peek() == 'E') {
      ++pos_;
      if (peek() == '+' || peek() == '-') ++pos_;
      if (!is_digit(peek())) error("invalid number");
      while (is_digit(peek())) ++pos_;
    }
    double value = 0;
    const char* first = text_.data() + start;
    const char* last = text_.data() + pos_;
    auto result = std::from_chars(first, last, value);
    if (result.ec == std::errc::result_out_of_range) {
      // Underflow to zero is harmless; overflow would become infinity.
      bool tiny = false;
      for (const char* p = first; p < last; ++p) {
        if (*p == 'e' || *p == 'E') tiny = p[1] == '-';
      }
      if (!tiny) {
        pos_ = start;
        error("number out of range");
      }
      value = 0;
    } else if (result.ec != std::errc() || result.ptr != last || !std::isfinite(value)) {
      pos_ = start;
      error("invalid number");
    }
    return value;
  }

  std::string_view text_;
  const Limits& limits_;
  size_t pos_ = 0;
  size_t values_ = 0;
};

Value parse(std::string_view text, const Limits& limits) { return Parser(text, limits).parse_document(); }

}  // namespace fusedrt::json
