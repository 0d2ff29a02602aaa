// The results table of train and compare: results.csv, results.md, and reading results.csv back.
#include "apps/run.h"
#include "apps/trainer.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string_view>

#include "autograd/ops.h"
#include "core/error.h"
#include "data/forecast.h"
#include "data/synthetic.h"
#include "layers/model.h"

namespace seqlab::app {

// First epoch with the lowest validation loss (-1 when none).
int64_t best_epoch(const Metrics& m) {
  auto it = m.find("val_loss");
  if (it == m.end() || it->second.empty()) return -1;
  int64_t best = 0;
  for (size_t i = 1; i < it->second.size(); ++i)
    if (it->second[i] < it->second[static_cast<size_t>(best)]) best = static_cast<int64_t>(i);
  return best;
}

double at(const Metrics& m, const char* key, int64_t i) {
  auto it = m.find(key);
  if (it == m.end() || i < 0 || i >= static_cast<int64_t>(it->second.size())) return kNaN;
  return it->second[static_cast<size_t>(i)];
}

RunResult result_from(const std::string& name, int64_t params, const Metrics& m, int64_t steps, bool token) {
  RunResult r;
  r.model = name;
  r.params = params;
  auto sec = m.find("seconds");
  r.epochs = sec == m.end() ? 0 : static_cast<int64_t>(sec->second.size());
  if (sec != m.end())
    for (double s : sec->second) r.train_seconds += s;
  r.step_ms = steps > 0 ? 1000.0 * r.train_seconds / static_cast<double>(steps) : 0;
  r.peak_rss_mib = peak_rss_mib();
  int64_t b = best_epoch(m);
  r.val_mse = at(m, "val_mse", b);
  r.test_mse = at(m, "test_mse", b);
  r.test_mae = token ? kNaN : at(m, "test_mae", b);
  r.test_acc = token ? at(m, "test_acc", b) : -1;
  return r;
}

std::string time_str(double s) {
  auto t = static_cast<int64_t>(s + 0.5);
  char buf[32];
  std::snprintf(buf, sizeof buf, "%lld:%02lld", static_cast<long long>(t / 60), static_cast<long long>(t % 60));
  return buf;
}

// ---------------------------------------------------------------------------------------------

namespace {

constexpr std::string_view kColumns = "model,params,epochs,train_seconds,step_ms,peak_rss_mib,val_mse,test_mse,test_mae";

bool widths_matched(const std::vector<RunResult>& rows) {
  return std::any_of(rows.begin(), rows.end(), [](const RunResult& r) { return r.d_model > 0; });
}

bool token_rows(const std::vector<RunResult>& rows) {
  return std::any_of(rows.begin(), rows.end(), [](const RunResult& r) { return r.test_acc >= 0; });
}

}  // namespace

std::string results_csv(const std::vector<RunResult>& rows) {
  const bool token = token_rows(rows), width = widths_matched(rows);
  std::string s(kColumns);
  s += str(token ? ",test_acc" : "", width ? ",d_model" : "", ",device\n");
  for (const auto& r : rows) {
    s += str(r.model, ",", r.params, ",", r.epochs, ",", fmt("%.3f", r.train_seconds), ",", fmt("%.3f", r.step_ms), ",",
             fmt("%.1f", r.peak_rss_mib), ",", fmt("%.9g", r.val_mse), ",", fmt("%.9g", r.test_mse), ",",
             fmt("%.9g", r.test_mae));
    if (token) s += str(",", fmt("%.9g", r.test_acc));
    if (width) s += str(",", r.d_model);
    s += str(",", r.device, "\n");
  }
  return s;
}

std::string results_md(const std::vector<RunResult>& rows) {
  const bool token = token_rows(rows), width = widths_matched(rows);
  const bool gpu = std::any_of(rows.begin(), rows.end(), [](const RunResult& r) { return r.device != "cpu"; });
  std::string s = "| model | params | epochs | train_seconds | step_ms | peak_rss_mib | val_mse | test_mse | test_mae |";
  s += str(token ? " test_acc |" : "", width ? " d_model |" : "", gpu ? " device |" : "", "\n");
  s += "|---|---:|---:|---:|---:|---:|---:|---:|---:|";
  s += str(token ? "---:|" : "", width ? "---:|" : "", gpu ? "---|" : "", "\n");
  for (const auto& r : rows) {
    s += str("| ", r.model, " | ", r.params, " | ", r.epochs, " | ", fmt("%.1f", r.train_seconds), " | ",
             fmt("%.2f", r.step_ms), " | ", fmt("%.1f", r.peak_rss_mib), " | ", fmt("%.4f", r.val_mse), " | ",
             fmt("%.4f", r.test_mse), " | ", fmt("%.4f", r.test_mae), " |");
    if (token) s += str(" ", fmt("%.4f", r.test_acc), " |");
    if (width) s += str(" ", r.d_model, " |");
    if (gpu) s += str(" ", r.device, " |");
    s += "\n";
  }
  if (token)
    s += "\nToken task: val_mse and test_mse hold the cross-entropy (nats per scored token), test_mae is not "
         "defined (nan), and test_acc is the fraction of scored tokens predicted exactly (argmax), all at the "
         "epoch with the best validation loss.\n";
  return s;
}

std::vector<RunResult> read_results_csv(const std::string& path) {
  std::ifstream in(path);
  SEQLAB_CHECK(in, path, ": cannot open");
  std::string line;
  std::getline(in, line);
  std::vector<std::string> header;
  std::stringstream hs(line);
  for (std::string x; std::getline(hs, x, ',');) header.push_back(x);
  SEQLAB_CHECK(line.starts_with(kColumns), path,
               ": expected the header of a results table (model,params,...,test_mae), got '", line, "'");
  auto column = [&](const char* name) -> int {
    auto it = std::find(header.begin(), header.end(), name);
    return it == header.end() ? -1 : static_cast<int>(it - header.begin());
  };
  const int acc = column("test_acc"), width = column("d_model"), device = column("device");
  std::vector<RunResult> rows;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    std::vector<std::string> f;
    std::stringstream ss(line);
    for (std::string x; std::getline(ss, x, ',');) f.push_back(x);
    SEQLAB_CHECK(f.size() == header.size(), path, ": expected ", header.size(), " columns, got ", f.size(), " in '",
                 line, "'");
    RunResult r;
    r.model = f[0];
    r.params = std::stoll(f[1]);
    r.epochs = std::stoll(f[2]);
    r.train_seconds = std::stod(f[3]);
    r.step_ms = std::stod(f[4]);
    r.peak_rss_mib = std::stod(f[5]);
    r.val_mse = std::stod(f[6]);
    r.test_mse = std::stod(f[7]);
    r.test_mae = std::stod(f[8]);
    if (acc >= 0) r.test_acc = std::stod(f[static_cast<size_t>(acc)]);
    if (width >= 0) r.d_model = std::stoll(f[static_cast<size_t>(width)]);
    if (device >= 0) r.device = f[static_cast<size_t>(device)];
    rows.push_back(r);
  }
  return rows;
}
}  // namespace seqlab::app
