// The seqlab command: CLI11 subcommands, spdlog logging. Library code throws seqlab::Error; this
// is the one place that catches it, logs it and returns non-zero.
#include <cblas.h>

#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include <cstdio>
#include <thread>

#include "core/error.h"
#include "core/parallel.h"

namespace {

void print_info() {
  std::printf("seqlab %s\n", SEQLAB_VERSION);
  std::printf("build type:   %s\n", SEQLAB_BUILD_TYPE);
  std::printf("compiler:     %s\n", __VERSION__);
  std::printf("threads:      %d (TBB pool; %u hardware threads)\n", seqlab::num_threads(),
              std::thread::hardware_concurrency());
  std::printf("BLAS:         %s\n", openblas_get_config());
  std::printf("BLAS threads: %d (GEMMs are split over the TBB pool instead)\n", openblas_get_num_threads());
  std::printf("dtypes:       float32 (training), float64 (gradient checks)\n");
  std::printf("devices:      cpu\n");
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"seqlab: RNN, Transformer, S4 and Mamba sequence models trained side by side"};
  app.set_version_flag("--version", std::string("seqlab ") + SEQLAB_VERSION);
  std::string log_level = "info";
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error, critical or off")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "critical", "off"}));
  int threads = 0;
  app.add_option("--threads", threads, "worker threads (0: all cores)")->check(CLI::NonNegativeNumber);
  app.require_subcommand(1);

  auto* info = app.add_subcommand("info", "version, build type, threads and BLAS");

  CLI11_PARSE(app, argc, argv);
  spdlog::set_level(spdlog::level::from_str(log_level));
  try {
    seqlab::set_num_threads(threads);
    if (info->parsed()) print_info();
  } catch (const seqlab::Error& e) {
    spdlog::error("{}", e.what());
    return 1;
  } catch (const std::exception& e) {
    spdlog::error("internal error: {}", e.what());
    return 2;
  }
  return 0;
}
