// The config reader's shared pieces (apps/config_toml.h).
#include "apps/config_toml.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <sstream>


namespace seqlab::app::cfg {

std::string join(const std::vector<std::string>& v, const char* sep) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : sep) + x;
  return s;
}

std::string format_double(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof buf, d);
  std::string s(buf, r.ptr);
  if (s.find_first_of(".eE") == std::string::npos) s += ".0";
  return s;
}

std::string quote(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    if (c == '\n') { out += "\\n"; continue; }
    out += c;
  }
  return out + "\"";
}

std::string describe(const toml::value& v) {
  switch (v.type()) {
    case toml::value_t::integer: return std::to_string(v.as_integer());
    case toml::value_t::floating: return format_double(v.as_floating());
    case toml::value_t::boolean: return v.as_boolean() ? "true" : "false";
    case toml::value_t::string: return quote(v.as_string().str);
    case toml::value_t::array: {
      std::string s = "[";
      for (const auto& e : v.as_array()) s += (s.size() > 1 ? ", " : "") + describe(e);
      return s.size() > 200 ? std::string("an array") : s + "]";
    }
    case toml::value_t::table: return "a table";
    default: return "a date/time";
  }
}

const toml::table* table_of(const std::string& file, const toml::table& root, const std::string& section) {
  auto it = root.find(section);
  if (it == root.end()) return nullptr;
  SEQLAB_CHECK(it->second.is_table(), file, ": [", section, "] must be a table, got ", describe(it->second));
  return &it->second.as_table();
}

// Parses an override's value as TOML; a value that is not TOML (a bare word such as lstm, the
// shell having eaten the quotes) is taken as a string.
namespace {
toml::value parse_value(const std::string& text) {
  if (invalid_utf8_offset(text) != std::string_view::npos) return toml::value(text);  // toml11 would overrun
  try {
    std::istringstream in("v = " + text);
    toml::value t = toml::parse(in, "--set");
    return t.as_table().at("v");
  } catch (const std::exception&) {
    return toml::value(text);
  }
}

}  // namespace

void apply_override(const std::string& file, toml::value& root, const std::string& spec, Overridden& overridden) {
  auto eq = spec.find('=');
  SEQLAB_CHECK(eq != std::string::npos && eq > 0, "--set ", spec, ": expected section.key=value");
  std::string path = spec.substr(0, eq), text = spec.substr(eq + 1);
  std::vector<std::string> parts;
  for (size_t b = 0;;) {
    size_t d = path.find('.', b);
    parts.push_back(path.substr(b, d == std::string::npos ? std::string::npos : d - b));
    if (d == std::string::npos) break;
    b = d + 1;
  }
  toml::value v = parse_value(text);
  auto& top = root.as_table();
  auto section_table = [&](const std::string& s) -> toml::table& {
    SEQLAB_CHECK(std::find(kSections.begin(), kSections.end(), s) != kSections.end() && s != "models",
                 "--set ", spec, ": unknown section '", s, "' (valid: data, model, optim, train, output, models.<n>)");
    if (!top.count(s)) top[s] = toml::table{};
    SEQLAB_CHECK(top[s].is_table(), file, ": [", s, "] must be a table");
    return top[s].as_table();
  };
  if (parts.size() == 2) {
    section_table(parts[0])[parts[1]] = v;
    overridden["[" + parts[0] + "]"].insert(parts[1]);
    if (parts[0] == "model" && top.count("models") && top["models"].is_array()) {
      // model.key sets the key for every entry of a comparison.
      auto& arr = top["models"].as_array();
      for (size_t i = 0; i < arr.size(); ++i)
        if (arr[i].is_table()) {
          arr[i].as_table()[parts[1]] = v;
          overridden[str("[[models]] #", i + 1)].insert(parts[1]);
        }
    }
    return;
  }
  SEQLAB_CHECK(parts.size() == 3 && parts[0] == "models", "--set ", spec,
               ": expected section.key=value or models.<n or name>.key=value");
  SEQLAB_CHECK(top.count("models") && top["models"].is_array(), "--set ", spec, ": ", file, " has no [[models]]");
  auto& arr = top["models"].as_array();
  for (size_t i = 0; i < arr.size(); ++i) {
    if (!arr[i].is_table()) continue;
    auto& t = arr[i].as_table();
    auto nm = t.find("name");
    bool by_name = nm != t.end() && nm->second.is_string() && nm->second.as_string().str == parts[1];
    if (by_name || parts[1] == std::to_string(i + 1)) {
      t[parts[2]] = v;
      overridden[str("[[models]] #", i + 1)].insert(parts[2]);
      return;
    }
  }
  throw Error(str("--set ", spec, ": no [[models]] entry named or numbered '", parts[1], "' (entries count from 1)"));
}

// toml11's message spans several lines ("[error] toml::parse_xxx: what\n --> file\n 2 | text\n
//   |   ^ hint"); one line keeps the error a single log line:
//   configs/x.toml: TOML syntax error at line 2, column 7: missing key-value separator `=` (hint)
std::string syntax_error_message(const std::string& name, const std::string& what, size_t line, size_t column) {
  std::vector<std::string> lines;
  std::stringstream ss(what);
  for (std::string l; std::getline(ss, l);) lines.push_back(l);
  std::string head = lines.empty() ? what : lines[0];
  if (head.starts_with("[error] ")) head.erase(0, 8);
  if (head.starts_with("toml::")) {  // drop the parser function's name
    auto colon = head.find(": ");
    if (colon != std::string::npos) head.erase(0, colon + 2);
  }
  std::string hint, source;
  for (size_t i = 1; i < lines.size(); ++i) {
    const std::string& l = lines[i];
    auto bar = l.find('|');
    if (line == 0 && l.find(" --> ") == std::string::npos && bar != std::string::npos) {
      // " 2 | text": the first numbered source line gives the line when the location does not.
      size_t n = 0;
      bool num = false;
      for (size_t j = 0; j < bar; ++j)
        if (std::isdigit(static_cast<unsigned char>(l[j]))) n = n * 10 + static_cast<size_t>(l[j] - '0'), num = true;
      if (num) line = n;
    }
    if (source.empty() && bar != std::string::npos && l.find(" --> ") == std::string::npos &&
        std::any_of(l.begin(), l.begin() + static_cast<std::ptrdiff_t>(bar),
                    [](char ch) { return std::isdigit(static_cast<unsigned char>(ch)); }))
      source = l.substr(std::min(l.size(), bar + 2), 80);
    if (bar != std::string::npos && l.find('^') != std::string::npos) {
      auto caret = l.find_last_of('^');
      std::string h = l.substr(caret + 1);
      while (!h.empty() && (h.front() == ' ' || h.front() == '-' || h.front() == '~')) h.erase(0, 1);
      if (!h.empty() && hint.empty()) hint = h;
    }
  }
  std::string where = line > 0 ? str(" at line ", line, column > 0 ? str(", column ", column) : std::string()) : "";
  std::string msg = str(name, ": TOML syntax error", where, ": ", head);
  if (!hint.empty() && head.find(hint) == std::string::npos) msg += " (" + hint + ")";
  if (!source.empty()) msg += " in: " + source;
  for (auto& ch : msg)
    if (ch == '\n' || ch == '\r') ch = ' ';
  return msg;
}

}  // namespace seqlab::app::cfg

namespace seqlab::app {

size_t invalid_utf8_offset(std::string_view t) {
  const auto* b = reinterpret_cast<const unsigned char*>(t.data());
  const size_t n = t.size();
  for (size_t i = 0; i < n;) {
    const unsigned char c = b[i];
    size_t len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
    if (len == 0 || i + len > n) return i;
    for (size_t k = 1; k < len; ++k)
      if ((b[i + k] & 0xC0) != 0x80) return i;
    if (len == 2 && c < 0xC2) return i;                                         // overlong
    if (len == 3) {
      const unsigned cp = (c & 0x0Fu) << 12 | (b[i + 1] & 0x3Fu) << 6 | (b[i + 2] & 0x3Fu);
      if (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF)) return i;               // overlong, surrogate
    }
    if (len == 4) {
      const unsigned cp = (c & 0x07u) << 18 | (b[i + 1] & 0x3Fu) << 12 | (b[i + 2] & 0x3Fu) << 6 | (b[i + 3] & 0x3Fu);
      if (cp < 0x10000 || cp > 0x10FFFF) return i;
    }
    i += len;
  }
  return std::string_view::npos;
}

void reject_invalid_utf8(const std::string& text, const std::string& name) {
  // TOML is UTF-8, and toml11 3.7 reads out of bounds reporting bad UTF-8 inside a string
  // (found by fuzz/fuzz_config.cpp): reject it before the parser sees it.
  if (size_t bad = invalid_utf8_offset(text); bad != std::string_view::npos) {
    const size_t line = 1 + static_cast<size_t>(std::count(text.begin(), text.begin() + static_cast<std::ptrdiff_t>(bad), '\n'));
    const size_t line_start = text.rfind('\n', bad == 0 ? 0 : bad - 1);
    const size_t column = line_start == std::string::npos || bad == 0 ? bad + 1 : bad - line_start;
    char hex[8];
    std::snprintf(hex, sizeof hex, "0x%02x", static_cast<unsigned char>(text[bad]));
    throw Error(str(name, ": TOML syntax error at line ", line, ", column ", column, ": invalid UTF-8 (byte ", hex,
                    "); a TOML file is UTF-8 text"));
  }
}

}  // namespace seqlab::app
