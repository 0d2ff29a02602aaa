// `seqlab bench` (bench/step_bench.cpp) run as a user runs it: every model family at two lengths in
// child processes, the table on stdout and the CSV it writes; the figures agree with each other
// (samples/s and GFLOP/s from step_ms, params fixed by the model, work growing with T); bad input
// exits 1 with one line and writes nothing.
#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "run_testing.h"
#include "testing.h"

#ifdef SEQLAB_BINARY
namespace fs = std::filesystem;
using seqlab::str;

namespace {

int run_bench(const std::string& args, const fs::path& out) {
  const std::string cmd = str(SEQLAB_BINARY, " --log-level warn bench ", args, " > ", out.string(), " 2>&1");
  const int rc = std::system(cmd.c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

std::vector<std::string> split(const std::string& line, char sep) {
  std::vector<std::string> f;
  std::stringstream ss(line);
  for (std::string x; std::getline(ss, x, sep);) f.push_back(x);
  return f;
}

}  // namespace

TEST_CASE("bench: seqlab bench times every family at two lengths, and its figures agree with each other") {
  seqlab::testing::RunScope scope(spdlog::level::warn);
  const fs::path dir = seqlab::testing::scratch("bench");
  const fs::path csv = dir / "bench.csv", out = dir / "out.txt";
  const std::vector<std::string> models = {"lstm", "transformer", "s4d", "s4", "lssl", "mamba"};
  const int B = 2;
  REQUIRE(run_bench(str("--models lstm,transformer,s4d,s4,lssl,mamba --seq-lens 8,32 --batch ", B,
                        " --steps 2 --warmup 1 --threads 1 --csv ", csv.string()), out) == 0);
  const std::string text = seqlab::testing::read_file(out);
  CAPTURE(text);
  CHECK(text.find("ISA path") != std::string::npos);
  CHECK(text.find("OpenBLAS core") != std::string::npos);

  const auto lines = split(seqlab::testing::read_file(csv), '\n');
  REQUIRE(lines.size() == 1 + models.size() * 2);
  CHECK(lines[0] == "model,seq_len,batch,params,step_ms,samples_per_s,peak_rss_mib,gflop_per_step,gflops,base_rss_mib");
  std::map<std::string, std::map<int, std::vector<double>>> by;  // model -> T -> the numeric fields
  for (size_t i = 1; i < lines.size(); ++i) {
    CAPTURE(lines[i]);
    auto f = split(lines[i], ',');
    REQUIRE(f.size() == 10);
    CHECK(f[0] == models[(i - 1) / 2]);  // in the order asked, each at both lengths
    const int T = std::stoi(f[1]);
    CHECK(T == ((i - 1) % 2 == 0 ? 8 : 32));
    CHECK(std::stoi(f[2]) == B);
    std::vector<double> v;
    for (size_t k = 3; k < f.size(); ++k) v.push_back(std::stod(f[k]));
    const double params = v[0], step_ms = v[1], sps = v[2], peak = v[3], gflop = v[4], gflops = v[5], base = v[6];
    CHECK(params > 1000);
    CHECK(step_ms > 0);
    CHECK(sps == doctest::Approx(B * 1000.0 / step_ms).epsilon(0.01));
    CHECK(gflops == doctest::Approx(gflop * 1000.0 / step_ms).epsilon(0.02));
    CHECK(base > 0);
    CHECK(peak >= base);
    CHECK(peak < 1024);  // MiB: a tiny model in its own process
    by[f[0]][T] = v;
  }
  for (const auto& m : models) {
    CAPTURE(m);
    CHECK(by[m][8][0] == by[m][32][0]);   // parameters do not depend on T (head "last")
    CHECK(by[m][32][4] > by[m][8][4]);    // more work per step at the longer length
  }
}

TEST_CASE("bench: bad input exits 1 with one line and writes no CSV") {
  seqlab::testing::RunScope scope(spdlog::level::warn);
  const fs::path dir = seqlab::testing::scratch("bench_bad");
  const fs::path csv = dir / "bad.csv", out = dir / "out.txt";
  for (const std::string& args : {std::string("--models gru2 --seq-lens 8"), std::string("--seq-lens 0 --models lstm"),
                                  std::string("--batch 0"), std::string("--steps 0"),
                                  std::string("--models lstm --seq-lens 8 --matmul-precision high"),
                                  std::string("--models lstm --seq-lens 8 --matmul-precision medium")}) {
    CAPTURE(args);
    CHECK(run_bench(args + " --csv " + csv.string(), out) != 0);
    CHECK(!fs::exists(csv));
    const std::string text = seqlab::testing::read_file(out);
    CHECK(!text.empty());
    CHECK(text.find("internal error") == std::string::npos);
    if (args.find("matmul") != std::string::npos)  // TF32 / bf16 on the CPU: refused, naming what is expected
      CHECK(text.find(args.substr(args.find("--matmul")) + ": expected --device cuda") != std::string::npos);
  }
}
#endif
