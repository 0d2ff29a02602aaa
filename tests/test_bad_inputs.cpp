// Every case of tests/bad_inputs (a bad config, data file or checkpoint; README.md there) runs the
// real `seqlab` binary and must fail cleanly: exit code 1, exactly one error line naming the file
// and the key, line or column, no crash, and no run-directory file created or changed.
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "data/series.h"
#include "testing.h"

using namespace seqlab;
namespace fs = std::filesystem;

#ifdef SEQLAB_BINARY
namespace {

const fs::path kCases = fs::path(SEQLAB_SOURCE_DIR) / "tests" / "bad_inputs";

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::stringstream ss(text);
  for (std::string l; std::getline(ss, l);)
    if (!l.empty()) out.push_back(l);
  return out;
}

struct Outcome {
  int status = 0;
  std::string out, err;
};

// Runs `seqlab args...` in `cwd` (fork + chdir + exec), stdout and stderr captured to files.
Outcome run_seqlab(const fs::path& cwd, const std::vector<std::string>& args) {
  const fs::path out = cwd / ".stdout", err = cwd / ".stderr";
  std::vector<std::string> all = {SEQLAB_BINARY};
  all.insert(all.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : all) argv.push_back(a.data());
  argv.push_back(nullptr);
  // No GPU for the child even on a machine with one: the *_device_cuda_no_gpu cases need its absence
  // (this CPU suite itself never touches CUDA).
  ::setenv("CUDA_VISIBLE_DEVICES", "", 1);
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {  // only async-signal-safe calls until exec
    if (::chdir(cwd.c_str()) != 0) _exit(126);
    int o = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int e = ::open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (o < 0 || e < 0) _exit(126);
    ::dup2(o, 1);
    ::dup2(e, 2);
    ::execv(argv[0], argv.data());
    _exit(127);
  }
  Outcome r;
  while (::waitpid(pid, &r.status, 0) < 0 && errno == EINTR) {
  }
  r.out = testing::read_file(out);
  r.err = testing::read_file(err);
  fs::remove(out);
  fs::remove(err);
  return r;
}

// Writes a good 40x3 series (columns a, b, OT) as HDF5 dataset `dataset`.
void write_series_h5(const fs::path& p, const std::string& dataset) {
  data::Series s;
  s.columns = {"a", "b", "OT"};
  s.values = Tensor::empty({40, 3}, DType::f64);
  double* v = s.values.data<double>();
  for (int i = 0; i < 120; ++i) v[i] = 0.1 * i;
  data::write_hdf5(s, p.string(), dataset);
}

void run_setup(const fs::path& dir) {
  if (!fs::exists(dir / "setup")) return;
  for (const auto& line : lines_of(testing::read_file(dir / "setup"))) {
    std::stringstream ss(line);
    std::string op, a, b, c;
    ss >> op >> a >> b >> c;
    CAPTURE(line);
    if (op == "series_h5") {
      write_series_h5(dir / a, b);
    } else if (op == "truncate") {
      std::string bytes = testing::read_file(dir / a);
      REQUIRE(!bytes.empty());
      auto n = static_cast<size_t>(static_cast<double>(bytes.size()) * std::stod(c));
      std::ofstream(dir / b, std::ios::binary | std::ios::trunc) << bytes.substr(0, n);
    } else if (op == "train") {
      Outcome o = run_seqlab(dir, {"--log-level", "warn", "train", a});
      CAPTURE(o.err);
      REQUIRE(WIFEXITED(o.status));
      REQUIRE(WEXITSTATUS(o.status) == 0);
    } else if (op == "copy") {
      fs::copy_file(dir / a, dir / b, fs::copy_options::overwrite_existing);
    } else if (op == "remove") {
      REQUIRE(fs::remove(dir / a));
    } else {
      FAIL("unknown setup step");
    }
  }
}

bool is_run_file(const fs::path& p) {
  const std::string n = p.filename().string();
  return n == "config.resolved.toml" || n == "metrics.h5" || n == "results.csv" || n == "results.md" ||
         n == "forecast.csv" ||
         (n.starts_with("checkpoint-") && n.ends_with(".h5")) || n.ends_with(".tmp");
}

// Run-directory files under `dir` with their size and modification time.
std::map<std::string, std::pair<uintmax_t, fs::file_time_type>> run_files(const fs::path& dir) {
  std::map<std::string, std::pair<uintmax_t, fs::file_time_type>> m;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file() && is_run_file(e.path()))
      m[fs::relative(e.path(), dir).string()] = {e.file_size(), e.last_write_time()};
  return m;
}

}  // namespace

TEST_CASE("bad_inputs: every case fails with one clear error line and leaves no run behind") {
  const fs::path scratch = fs::temp_directory_path() / ("seqlab_bad_inputs_" + std::to_string(::getpid()));
  fs::remove_all(scratch);
  std::vector<fs::path> cases;
  for (const auto& e : fs::directory_iterator(kCases))
    if (e.is_directory()) cases.push_back(e.path());
  std::sort(cases.begin(), cases.end());
  REQUIRE(cases.size() >= 30);
  for (const auto& src : cases) {
    const std::string name = src.filename().string();
    CAPTURE(name);
    const fs::path dir = scratch / name;
    fs::create_directories(dir);
    fs::copy(src, dir, fs::copy_options::recursive);
    run_setup(dir);
    REQUIRE(fs::exists(dir / "expect"));
    std::vector<std::string> args = {"--log-level", "warn"};
    if (fs::exists(dir / "args")) {
      for (const auto& a : lines_of(testing::read_file(dir / "args"))) args.push_back(a);
    } else {
      args.insert(args.end(), {"train", "config.toml"});
    }
    const auto before = run_files(dir);
    Outcome o = run_seqlab(dir, args);
    CAPTURE(o.err);
    REQUIRE_MESSAGE(WIFEXITED(o.status), "killed by signal ", WTERMSIG(o.status));
    CHECK(WEXITSTATUS(o.status) == 1);
    CHECK(o.err.find("internal error") == std::string::npos);
    std::vector<std::string> errors;
    for (const auto& l : lines_of(o.err)) {
      CHECK_MESSAGE(l.starts_with("["), "not a log line (a multi-line message?): ", l);
      if (l.find("[error]") != std::string::npos || l.find("[critical]") != std::string::npos) errors.push_back(l);
    }
    REQUIRE(errors.size() == 1);
    CAPTURE(errors[0]);
    for (const auto& part : lines_of(testing::read_file(dir / "expect"))) {
      CAPTURE(part);
      CHECK(errors[0].find(part) != std::string::npos);
    }
    CHECK(run_files(dir) == before);
  }
  fs::remove_all(scratch);
}
#endif
