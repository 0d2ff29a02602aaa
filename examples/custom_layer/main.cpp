// A program of the user's own, built against an installed seqlab (find_package(seqlab)): it
// registers ShortConv under the name "short_conv", then trains from a config that names it, through
// the same config loader and trainer as the seqlab command.
//   custom_layer CONFIG RUN_DIR
// Exit status 0 when training finished and the test MSE beats predicting zeros (MSE 1 on scaled data).
#include <cstdio>

#include "apps/config.h"
#include "apps/trainer.h"
#include "core/error.h"
#include "short_conv.h"

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s CONFIG RUN_DIR\n", argv[0]);
    return 2;
  }
  try {
    example::register_short_conv();
    seqlab::app::Config config = seqlab::app::load_config(argv[1], {std::string("output.dir=\"") + argv[2] + "\""});
    seqlab::app::RunOptions opt;
    opt.quiet = true;
    seqlab::app::RunResult r = seqlab::app::run_train(config, opt);
    std::printf("short_conv: %lld parameters, %lld epochs, test MSE %.4f\n", static_cast<long long>(r.params),
                static_cast<long long>(r.epochs), r.test_mse);
    return r.test_mse < 1.0 ? 0 : 1;
  } catch (const seqlab::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
