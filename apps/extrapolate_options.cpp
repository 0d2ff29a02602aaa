// The command line and the files of a length extrapolation (`seqlab eval RUN_DIR --seq-lens ...`):
// parsing --seq-lens and its companions, the default sample size, extrapolation.csv and its table.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "apps/run.h"
#include "apps/trainer.h"
#include "core/error.h"

namespace seqlab::app {

namespace {

std::string csv_field(std::string s) {
  for (auto& ch : s)
    if (ch == ',' || ch == '\n' || ch == '\r') ch = ch == ',' ? ';' : ' ';
  return s;
}

int64_t parse_length_term(const std::string& t, const std::string& text) {
  auto bad = [&](const std::string& why) {
    return Error(str("eval --seq-lens: ", why, "; expected a comma-separated list of lengths such as "
                     "256,512,...,65536 or 2^8,2^16, got '", text, "'"));
  };
  const auto caret = t.find('^');
  auto integer = [&](const std::string& s) -> int64_t {
    if (s.empty() || s.size() > 12 || !std::all_of(s.begin(), s.end(), [](char ch) { return ch >= '0' && ch <= '9'; }))
      throw bad(str("'", t, "' is not a positive integer"));
    return std::stoll(s);
  };
  int64_t v;
  if (caret == std::string::npos) {
    v = integer(t);
  } else {
    const int64_t base = integer(t.substr(0, caret)), e = integer(t.substr(caret + 1));
    if (base < 2 || e > 40 || static_cast<double>(e) * std::log2(static_cast<double>(base)) > 40)
      throw bad(str("'", t, "' is out of range (at most 2^40)"));
    v = 1;
    for (int64_t i = 0; i < e; ++i) v *= base;
  }
  if (v < 1 || v > (int64_t{1} << 40)) throw bad(str("'", t, "' is out of range (1 to 2^40)"));
  return v;
}

}  // namespace

int64_t default_sequences(int64_t seq_len) {
  return std::clamp<int64_t>((int64_t{1} << 22) / std::max<int64_t>(seq_len, 1), 16, 64);
}

std::vector<int64_t> parse_seq_lens(const std::string& text) {
  std::vector<std::string> terms;
  std::stringstream ss(text);
  for (std::string t; std::getline(ss, t, ',');) {
    t.erase(0, t.find_first_not_of(" \t"));
    t.erase(t.find_last_not_of(" \t") + 1);
    terms.push_back(t);
  }
  if (!text.empty() && text.back() == ',') terms.push_back("");
  SEQLAB_CHECK(!terms.empty(), "eval --seq-lens: expected a comma-separated list of lengths such as 256,512,...,65536, "
               "got an empty list");
  std::vector<int64_t> lens;
  for (size_t i = 0; i < terms.size(); ++i) {
    if (terms[i] != "...") {
      lens.push_back(parse_length_term(terms[i], text));
      continue;
    }
    SEQLAB_CHECK(i >= 2 && i + 2 == terms.size(), "eval --seq-lens: '...' needs two terms before it and exactly one "
                 "after it (256,512,...,65536), got '", text, "'");
    const int64_t a = lens[lens.size() - 2], b = lens.back(), last = parse_length_term(terms[i + 1], text);
    SEQLAB_CHECK(b > a && b % a == 0, "eval --seq-lens: '...' continues a geometric series: the two terms before it "
                 "must have an integer ratio >= 2 (256,512,...), got ", a, " and ", b, " in '", text, "'");
    const int64_t ratio = b / a;
    int64_t v = b;
    while (v < last && v <= (int64_t{1} << 40) / ratio) lens.push_back(v *= ratio);
    SEQLAB_CHECK(v == last, "eval --seq-lens: ", last, " is not a term of the series ", a, ", ", b, ", ... (ratio ",
                 ratio, ") in '", text, "'");
    break;
  }
  SEQLAB_CHECK(lens.size() <= 64, "eval --seq-lens: expected at most 64 lengths, got ", lens.size(), " from '", text,
               "'");
  return lens;
}

std::string extrapolation_file(const ExtrapolateOptions& opt) {
  return opt.key_distance > 0 ? str("extrapolation-d", opt.key_distance, ".csv") : std::string("extrapolation.csv");
}

namespace {
// An integer >= lo spelled out in the whole of text; throws naming the option otherwise.
int64_t parse_int_at_least(const std::string& text, int64_t lo, const char* option) {
  size_t used = 0;
  long long v = 0;
  try {
    v = std::stoll(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  SEQLAB_CHECK(used > 0 && used == text.size() && v >= lo, "eval ", option, ": expected an integer >= ", lo, ", got '",
               text, "'");
  return v;
}
}  // namespace

ExtrapolateOptions parse_extrapolate_options(const std::string& seq_lens, const std::string& n_sequences,
                                             const std::string& max_seconds, const std::string& step,
                                             const std::string& key_distance) {
  ExtrapolateOptions o;
  o.seq_lens = parse_seq_lens(seq_lens);
  if (!n_sequences.empty()) o.n_sequences = parse_int_at_least(n_sequences, 1, "--n-sequences");
  if (!max_seconds.empty()) {
    size_t used = 0;
    double v = 0;
    try {
      v = std::stod(max_seconds, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    SEQLAB_CHECK(used > 0 && used == max_seconds.size() && std::isfinite(v) && v > 0,
                 "eval --max-seconds: expected a number > 0, got '", max_seconds, "'");
    o.max_seconds = v;
  }
  if (!step.empty()) o.step = step;
  SEQLAB_CHECK(o.step == "auto" || o.step == "always" || o.step == "never",
               "eval --step: expected auto, always or never, got '", o.step, "'");
  if (!key_distance.empty()) o.key_distance = parse_int_at_least(key_distance, 2, "--key-distance");
  return o;
}

std::string extrapolation_csv(const std::vector<ExtrapolationRow>& rows) {
  std::string s = "model,seq_len,n_sequences,accuracy,seconds,peak_rss_mib,mode,status,key_distance,checkpoint,step,device\n";
  for (const auto& r : rows)
    s += str(r.model, ",", r.seq_len, ",", r.n_sequences, ",", fmt("%.6f", r.accuracy), ",", fmt("%.3f", r.seconds),
             ",", fmt("%.1f", r.peak_rss_mib), ",", r.mode, ",", csv_field(r.status), ",", r.key_distance, ",", r.checkpoint,
             ",", r.step, ",", r.device, "\n");
  return s;
}

std::string extrapolation_md(const std::vector<ExtrapolationRow>& rows) {
  std::string s = "| model | seq_len | n_sequences | accuracy | seconds | peak_rss_mib | tensors_mib | mode | status | "
                  "key_distance | checkpoint | step |\n"
                  "|---|---:|---:|---:|---:|---:|---:|---|---|---:|---|---:|\n";
  for (const auto& r : rows)
    s += str("| ", r.model, " | ", r.seq_len, " | ", r.n_sequences, " | ",
             std::isnan(r.accuracy) ? std::string("-") : fmt("%.4f", r.accuracy), " | ",
             r.status == "ok" ? fmt("%.2f", r.seconds) : std::string("-"), " | ",
             std::isnan(r.peak_rss_mib) ? std::string("-") : fmt("%.0f", r.peak_rss_mib), " | ",
             std::isnan(r.alloc_peak_mib) ? std::string("-") : fmt("%.0f", r.alloc_peak_mib), " | ", r.mode, " | ",
             r.status, " | ", r.key_distance > 0 ? std::to_string(r.key_distance) : std::string("random"), " | ",
             r.checkpoint, " | ", r.step, " |\n");
  return s;
}

}  // namespace seqlab::app
