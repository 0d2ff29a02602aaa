// seqlab_bench_cli: the `bench` subcommand on its own CLI::App, for running the step benchmark
// before it is wired into `seqlab` (usage: seqlab_bench_cli bench [--models ...] [--csv FILE]).
#include <CLI/CLI.hpp>
#include <cstdio>
#include <exception>

#include "bench/step_bench.h"

int main(int argc, char** argv) {
  CLI::App app{"seqlab step benchmark"};
  app.require_subcommand(1);
  seqlab::bench::add_bench_subcommand(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
