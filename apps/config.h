// Run configs: a TOML file (toml11) with the sections [data], [model] or [[models]], [optim],
// [train] and [output], read into plain structs with every key defaulted and checked. Errors are
// seqlab::Error naming the file, the section and key and what was expected, e.g.
//   configs/x.toml: [train] batch_size: expected an integer >= 1, got -3
// docs/CONFIG.md documents every key; to_toml() writes the resolved config back (config.resolved.toml).
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "layers/model.h"
#include "layers/option_table.h"
#include "layers/options.h"

namespace seqlab::app {

struct DataConfig {
  std::string task = "forecast";  // forecast | selective-copying | induction-heads | sine
  // forecast
  std::string path = "data/ETTh1.csv";  // resolved to an absolute path when loaded
  std::string dataset = "data";         // HDF5 sources: the 2-D dataset to read
  std::string split = "ett-hour";       // ett-hour | ett-minute | ratio
  std::vector<double> ratios = {0.7, 0.1, 0.2};  // ratio split: train, val, test
  std::string features = "M";           // M | S | MS
  std::string target = "OT";
  int64_t seq_len = 96;  // T; token tasks: the sequence length
  int64_t pred_len = 96;  // P; sine: the forecast horizon
  bool scale = true;
  // token tasks (selective-copying, induction-heads; vocabulary 16, fixed by data/synthetic.h)
  int64_t n_train_batches = 200;  // training batches per epoch (a fresh stream, never repeated)
  int64_t n_eval_batches = 8;     // validation and test batches each (fixed sets)
  int64_t key_distance = 0;       // induction-heads: the query this many positions after the first trigger (0: random)
  // sine (a synthetic series through the forecasting path, ratio split)
  int64_t rows = 2000;
  int64_t channels = 3;
  double noise = 0.1;        // std of the AR(1) noise innovations
  double ar = 0.5;           // AR(1) coefficient of the noise
  uint64_t data_seed = 1234; // generates synthetic data (independent of [train] seed)

  bool is_token_task() const { return task == "selective-copying" || task == "induction-heads"; }
};

struct ModelConfig {
  std::string name;               // [[models]] name (defaults to type), the run subdirectory
  std::string type = "lstm";      // registry name
  int64_t d_model = 64;
  int64_t n_layers = 2;
  bool revin = false;
  std::string head = "auto";      // auto (token for token tasks and variate tokens, else last) | last | flatten | token
  std::string norm = "layernorm"; // layernorm | rmsnorm
  double dropout = 0.0;
  std::string embed = "time";     // time (a token per step or patch) | variate (a token per channel)
  int64_t patch_len = 1;          // time tokens: steps per patch
  int64_t patch_stride = 0;       // 0: patch_len
  bool channel_independent = false;
  bool bidir = false;             // a second mixer per block over the reversed tokens
  double embed_init_std = 1.0;    // token tasks: std of the embedding table's normal init
  bool tie_embeddings = false;    // token tasks: the head is the embedding table (transposed), no bias
  double mixer_dropout = -1.0;    // the layer's own `dropout` option; < 0: unset (the layer's default)
  nn::LayerArgs args;             // every other key; where() = "<file> [model]" or "... [[models]] #i"
  std::vector<nn::OptionValue> layer_options;  // every option of the layer with the value used (resolved TOML)

  /// The layer's options: args, plus `dropout` = mixer_dropout when that is set (>= 0).
  nn::LayerArgs layer_args() const;
  /// d_model = width, and layer_options resolved again (defaults such as d_ff follow the width).
  void set_width(int64_t width);

  /// ModelOptions for a series with `in_channels` inputs (vocab 0) or a token task (vocab > 0).
  nn::ModelOptions options(const DataConfig& data, int64_t in_channels, int64_t out_channels,
                           int64_t vocab) const;
};

struct OptimConfig {
  std::string name = "adamw";  // sgd | adam | adamw
  double lr = 1e-3;
  double weight_decay = 0.01;
  double momentum = 0.9;       // sgd
  bool nesterov = false;       // sgd
  std::vector<double> betas = {0.9, 0.999};  // adam, adamw
  double eps = 1e-8;
  std::string schedule = "constant";  // constant | step | cosine
  int64_t warmup_steps = 0;    // cosine
  double min_lr_ratio = 0.0;   // cosine
  int64_t step_size = 1000;    // step
  double gamma = 0.1;          // step
  double grad_clip = 1.0;      // max global gradient norm; 0 = off
};

struct TrainConfig {
  int64_t epochs = 10;
  int64_t batch_size = 32;
  int64_t eval_batch_size = 256;
  uint64_t seed = 0;
  int64_t patience = 3;         // early stopping on val loss; 0 = off
  int64_t threads = 0;          // 0: all cores (or --threads)
  std::string device = "cpu";   // where the model trains: cpu | cuda (docs/GPU.md)
  std::string matmul_precision = "highest";  // cuda: highest (strict fp32 GEMMs) | high (TF32) | medium (bf16 tensor cores)
  bool cuda_graph = false;      // cuda: each training step replayed as one CUDA graph (apps/graph_step.h)
  int64_t max_steps = 0;        // per-epoch step cap; 0 = the whole training set
  int64_t steps = 0;            // budget: the run ends after this many optimizer steps (epochs no limit); 0 = off
  double time_budget = 0;       // budget: the run ends once its training time reaches this many seconds; 0 = off
  int64_t checkpoint_every = 0; // also write checkpoint-last.h5 every N steps; 0 = epoch ends only
  int64_t prefetch = 2;         // batches the loader prepares ahead
  std::string on_nonfinite = "stop";  // a NaN/Inf loss or gradient: stop (error) | skip the step
  std::string init_from;        // warm start: a checkpoint file or run directory ("" = random init)
  std::string init_checkpoint = "best";  // init_from a run directory: its checkpoint-best.h5 or -last.h5

  /// A step or time budget is set: the budget ends the run, not `epochs`, and early stopping is off.
  bool budgeted() const { return steps > 0 || time_budget > 0; }
};

struct OutputConfig {
  std::string dir;  // run directory; default runs/<config file stem>; resolved to an absolute path
};

/// One axis of a [sweep]: a config key and the values it takes, each as TOML text applied like
/// `--set key=value` (docs/CONFIG.md, "[sweep]").
struct SweepAxis {
  std::string key;                  // "section.key", section data, model, optim or train
  std::vector<std::string> values;  // non-empty
};

struct Config {
  std::string file;                 // the config file as named on the command line
  DataConfig data;
  std::vector<ModelConfig> models;  // [model]: one; [[models]]: every entry
  bool multi = false;               // true when the file lists [[models]]
  OptimConfig optim;
  TrainConfig train;
  OutputConfig output;
  std::vector<SweepAxis> sweep;     // [sweep], in key order: compare runs every model at every point of the product
  int64_t match_params = 0;         // [sweep] match_params: each model's d_model chosen for this many parameters (0: off)
  std::string text;                 // the TOML text it was read from, and the --set overrides applied,
  std::vector<std::string> overrides;  // so that each sweep cell is read again with its own values
};

/// Reads and checks `path`, applying `overrides` ("section.key=value", value parsed as TOML, or
/// taken as a string when it does not parse) in order. Relative paths resolve against the current
/// directory. Throws seqlab::Error naming the file and key.
Config load_config(const std::string& path, const std::vector<std::string>& overrides = {});
/// Same, from TOML text; `name` stands for the file in messages and the default output dir.
Config parse_config(const std::string& text, const std::string& name,
                    const std::vector<std::string>& overrides = {});

/// Offset of the first byte of `text` that is not valid UTF-8 (npos when it all is); such text is
/// rejected before toml11 parses it (toml11 3.7 overruns its buffer on bad UTF-8 in a string).
size_t invalid_utf8_offset(std::string_view text);

/// The resolved config as TOML: every key with its value ([[models]] when multi).
std::string to_toml(const Config& config);
/// The resolved config of model `index` alone, as a [model] config writing to `dir`.
std::string to_toml_single(const Config& config, size_t index, const std::string& dir);

/// docs/CONFIG.md's per-layer option tables, generated from the registry's declared options (at
/// d_model = 64): one Markdown table per type, option, default and meaning; the layer's own
/// `dropout` appears as `mixer_dropout`, its config key. `seqlab info --options` prints it.
std::string layer_option_tables();

/// The accepted values of [data] task, [data] split, [optim] name, [optim] schedule.
const std::vector<std::string>& task_names();

}  // namespace seqlab::app
