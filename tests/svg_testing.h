// Reading back the SVG that apps/svg.cpp writes, for test_report and test_report_sweep: a strict
// little XML parser (balanced tags, quoted attributes, the five entities) and a parsed picture
// whose every coordinate is checked finite and inside it.
#pragma once
#include <doctest/doctest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "apps/report.h"
#include "core/error.h"
#include "testing.h"

namespace seqlab::testing {

// One element of a parsed SVG file: its name, attributes and the text directly inside it.
struct Element {
  std::string name;
  std::map<std::string, std::string> attrs;
  std::string text;
};

// A strict little XML reader, enough for what svg.cpp writes: a prolog, elements with quoted
// attributes, text and the five entities. Fails the test on anything malformed; returns every
// element in document order.
inline std::vector<Element> parse_xml(const std::string& s) {
  std::vector<Element> out;
  std::vector<size_t> open;  // indices into out
  auto check_entities = [](const std::string& t) {
    static const std::regex entity("&(amp|lt|gt|quot|apos);");
    std::string rest = std::regex_replace(t, entity, "");
    CHECK_MESSAGE(rest.find('&') == std::string::npos, "a bare '&' in: ", t);
    CHECK_MESSAGE(rest.find('<') == std::string::npos, "a bare '<' in: ", t);
  };
  REQUIRE(s.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"));
  size_t i = s.find("?>") + 2;
  int roots = 0;
  while (i < s.size()) {
    size_t lt = s.find('<', i);
    std::string text = s.substr(i, lt == std::string::npos ? std::string::npos : lt - i);
    check_entities(text);
    if (!open.empty())
      out[open.back()].text += text;
    else
      CHECK_MESSAGE(text.find_first_not_of(" \n") == std::string::npos, "text outside the root: ", text);
    if (lt == std::string::npos) break;
    size_t gt = s.find('>', lt);
    REQUIRE_MESSAGE(gt != std::string::npos, "an unclosed tag at ", lt);
    std::string tag = s.substr(lt + 1, gt - lt - 1);
    i = gt + 1;
    if (tag.starts_with("/")) {
      REQUIRE_MESSAGE(!open.empty(), "a closing tag without an open one: ", tag);
      CHECK_MESSAGE(out[open.back()].name == tag.substr(1), "<", out[open.back()].name, "> closed by <", tag, ">");
      open.pop_back();
      continue;
    }
    const bool self_closing = tag.ends_with("/");
    if (self_closing) tag.pop_back();
    static const std::regex name_re("^([A-Za-z][-A-Za-z0-9:]*)");
    std::smatch m;
    REQUIRE_MESSAGE(std::regex_search(tag, m, name_re), "a tag without a name: ", tag);
    Element e{m[1].str(), {}, ""};
    std::string rest = tag.substr(m[0].length());
    static const std::regex attr_re("^\\s+([A-Za-z_:][-A-Za-z0-9_:.]*)=\"([^\"<]*)\"");
    while (std::regex_search(rest, m, attr_re)) {
      check_entities(m[2].str());
      CHECK_MESSAGE(!e.attrs.count(m[1].str()), "a repeated attribute ", m[1].str(), " in <", e.name, ">");
      e.attrs[m[1].str()] = m[2].str();
      rest = rest.substr(m[0].length());
    }
    CHECK_MESSAGE(rest.find_first_not_of(" ") == std::string::npos, "junk in <", e.name, ">: '", rest, "'");
    if (open.empty()) ++roots;
    out.push_back(std::move(e));
    if (!self_closing) open.push_back(out.size() - 1);
  }
  CHECK_MESSAGE(open.empty(), open.size(), " unclosed element(s)");
  CHECK(roots == 1);
  REQUIRE(!out.empty());
  CHECK(out[0].name == "svg");
  return out;
}

inline std::vector<double> numbers(const std::string& s) {
  std::vector<double> v;
  std::string t = s;
  for (char& ch : t)
    if (ch == ',' || ch == 'M' || ch == 'L') ch = ' ';
  std::istringstream in(t);
  std::string tok;
  while (in >> tok) {
    char* end = nullptr;
    double x = std::strtod(tok.c_str(), &end);
    CHECK_MESSAGE(end == tok.c_str() + tok.size(), "not a number: '", tok, "' in '", s, "'");
    v.push_back(x);
  }
  return v;
}

// A parsed picture with every coordinate checked: finite and inside the picture.
struct Svg {
  std::vector<Element> el;
  double width = 0, height = 0;
  explicit Svg(const std::filesystem::path& p) : Svg(testing::read_file(p)) {}
  explicit Svg(const std::string& text) : el(parse_xml(text)) {
    width = std::stod(el[0].attrs.at("width"));
    height = std::stod(el[0].attrs.at("height"));
    for (const auto& e : el)
      for (const auto& [k, v] : e.attrs) {
        if (k == "points" || k == "d" || k == "x" || k == "y" || k == "x1" || k == "x2" || k == "y1" || k == "y2" ||
            k == "cx" || k == "cy") {
          auto xs = numbers(v);
          CHECK_MESSAGE(!xs.empty(), e.name, " ", k, " is empty");
          for (size_t i = 0; i < xs.size(); ++i) {
            CHECK_MESSAGE(std::isfinite(xs[i]), e.name, " ", k, "=", v);
            bool is_y = k.starts_with("y") || k == "cy" || ((k == "points" || k == "d") && i % 2 == 1);
            CHECK_MESSAGE((xs[i] >= -10 && xs[i] <= (is_y ? height : width) + 10), e.name, " ", k, "=", v, " outside ",
                          width, "x", height);
          }
        }
      }
  }
  std::vector<const Element*> all(const std::string& name, const std::string& cls = "") const {
    std::vector<const Element*> r;
    for (const auto& e : el)
      if (e.name == name && (cls.empty() || (e.attrs.count("class") && e.attrs.at("class") == cls))) r.push_back(&e);
    return r;
  }
  std::vector<std::string> polyline_labels() const {
    std::vector<std::string> r;
    for (const auto* e : all("polyline")) r.push_back(e->attrs.at("data-label"));
    return r;
  }
  size_t points_of(const std::string& label) const {
    for (const auto* e : all("polyline"))
      if (e->attrs.at("data-label") == label) return numbers(e->attrs.at("points")).size() / 2;
    return 0;
  }
  bool has_text(const std::string& t) const {
    for (const auto* e : all("text"))
      if (e->text.find(t) != std::string::npos) return true;
    return false;
  }
};

/// run_report's error message, or "(no error)".
inline std::string report_error_of(const std::vector<std::string>& dirs, const app::ReportOptions& opt) {
  try {
    app::run_report(dirs, opt);
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace seqlab::testing
