// apps/config: defaults, the resolved round trip, --set overrides, and every kind of bad config
// giving one clear error that names the file, the table and the key.
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>

#include "apps/config.h"
#include "layers/registry.h"
#include "autograd/node.h"
#include "core/random.h"
#include "layers/model.h"
#include "core/error.h"
#include "testing.h"

using namespace seqlab;
using namespace seqlab::app;

namespace {

const char* kSine = R"(
[data]
task = "sine"
seq_len = 24
pred_len = 8

[model]
type = "gru"
d_model = 8
n_layers = 1
)";

// The message of the seqlab::Error that f throws ("" when it throws none).
std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

std::string error_of_text(const std::string& text, const std::vector<std::string>& overrides = {}) {
  return error_of([&] { parse_config(text, "configs/x.toml", overrides); });
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

#define CHECK_ERROR(msg, part)                                  \
  do {                                                          \
    std::string m_ = (msg);                                     \
    CAPTURE(m_);                                                \
    CHECK(contains(m_, part));                                  \
  } while (0)

}  // namespace

TEST_CASE("apps/config: every key has a default and the resolved TOML reads back the same") {
  Config c = parse_config(kSine, "configs/x.toml");
  CHECK(c.data.task == "sine");
  CHECK(c.data.seq_len == 24);
  CHECK(c.models.size() == 1);
  CHECK(!c.multi);
  CHECK(c.models[0].type == "gru");
  CHECK(c.models[0].name == "gru");
  CHECK(c.models[0].head == "last");  // "auto" resolves to last for series
  CHECK(c.optim.name == "adamw");
  CHECK(c.train.epochs == 10);
  CHECK(c.train.batch_size == 32);
  CHECK(std::filesystem::path(c.output.dir).is_absolute());
  CHECK(std::filesystem::path(c.output.dir).filename() == "x");  // runs/<config stem>
  std::string once = to_toml(c);
  Config again = parse_config(once, "configs/x.toml");
  CHECK(to_toml(again) == once);
  for (const char* key : {"task", "path", "split", "ratios", "features", "target", "seq_len", "pred_len", "scale",
                          "type", "d_model", "n_layers", "revin", "head", "norm", "dropout", "lr", "weight_decay",
                          "schedule", "warmup_steps", "grad_clip", "momentum", "betas", "epochs", "batch_size",
                          "seed", "patience", "threads", "max_steps", "eval_batch_size", "checkpoint_every", "dir"})
    CHECK_MESSAGE(contains(once, std::string("\n") + key + " = "), key);
}

TEST_CASE("apps/config: an unknown key names the file, the table and the key") {
  CHECK_ERROR(error_of_text(std::string(kSine) + "[train]\nbatchsize = 3\n"),
              "configs/x.toml: [train] batchsize: unknown key (valid: batch_size");
  CHECK_ERROR(error_of_text(std::string(kSine) + "[optim]\nlearning_rate = 3\n"),
              "configs/x.toml: [optim] learning_rate: unknown key");
  CHECK_ERROR(error_of_text(std::string(kSine) + "[trian]\nepochs = 3\n"), "configs/x.toml: unknown section [trian]");
}

TEST_CASE("apps/config: a wrong type names the key, what was expected and the value") {
  CHECK_ERROR(error_of_text(std::string(kSine) + "[train]\nepochs = \"3\"\n"),
              "configs/x.toml: [train] epochs: expected an integer >= 1, got \"3\"");
  CHECK_ERROR(error_of_text(std::string(kSine) + "[optim]\nlr = \"fast\"\n"), "configs/x.toml: [optim] lr: expected a number");
  CHECK_ERROR(error_of_text(std::string(kSine) + "[train]\nbatch_size = 3.5\n"),
              "[train] batch_size: expected an integer >= 1, got 3.5");
  CHECK_ERROR(error_of_text("[data]\ntask = \"sine\"\nscale = 1\n"), "[data] scale: expected true or false, got 1");
}

TEST_CASE("apps/config: an out-of-range value names the key and the range") {
  CHECK(error_of_text(std::string(kSine) + "[train]\nbatch_size = -3\n")
            .starts_with("configs/x.toml: [train] batch_size: expected an integer >= 1, got -3"));
  CHECK_ERROR(error_of_text(std::string(kSine) + "[optim]\nlr = 0\n"), "[optim] lr: expected a number > 0");
  CHECK_ERROR(error_of_text(std::string(kSine) + "[optim]\nname = \"rmsprop\"\n"),
              "[optim] name: expected one of sgd, adam, adamw, got \"rmsprop\"");
  CHECK_ERROR(error_of_text("[data]\ntask = \"sine\"\nsplit = \"ratio\"\nratios = [0.5, 0.2, 0.2]\n"),
              "[data] ratios: expected 3 fractions");
  CHECK_ERROR(error_of_text("[data]\ntask = \"sine\"\nfeatures = \"X\"\n"), "[data] features: expected one of M, S, MS");
}

TEST_CASE("apps/config: an unknown model type lists the registered ones") {
  std::string m = error_of_text("[data]\ntask = \"sine\"\n[model]\ntype = \"lstmm\"\n");
  CHECK_ERROR(m, "configs/x.toml: [model] type: expected one of rnn, lstm, gru");
  CHECK_ERROR(m, "got \"lstmm\"");
}

TEST_CASE("apps/config: an unknown model option is rejected by the layer, naming the file and table") {
  CHECK_ERROR(error_of_text("[data]\ntask = \"sine\"\n[model]\ntype = \"lstm\"\nn_heads = 4\n"),
              "configs/x.toml [model]: unknown option(s) n_heads");
  // In a comparison the entry is named by its position, and entries inherit [model].
  std::string text = "[data]\ntask = \"sine\"\n[model]\nd_model = 8\n[[models]]\ntype = \"gru\"\n"
                     "[[models]]\nname = \"m2\"\ntype = \"lstm\"\nd_state = 4\n";
  CHECK_ERROR(error_of_text(text), "configs/x.toml [[models]] #2: unknown option(s) d_state");
  // A layer's own validation error is prefixed with the file and table too.
  CHECK_ERROR(error_of_text("[data]\ntask = \"sine\"\n[model]\ntype = \"transformer\"\nd_model = 16\nn_heads = 3\n"),
              "configs/x.toml [model]: ");
}

TEST_CASE("apps/config: a TOML syntax error names the file and the line") {
  std::string m = error_of_text("[data]\ntask = \"sine\n");
  CHECK_ERROR(m, "configs/x.toml: TOML syntax error");
  CHECK_ERROR(m, "configs/x.toml: TOML syntax error at line 2, column 1: ");
  CHECK_ERROR(m, " in: task = \"sine");
  CHECK(m.find('\n') == std::string::npos);  // one log line
}

TEST_CASE("apps/config: a missing data file is reported with its absolute path") {
  std::string m = error_of_text("[data]\npath = \"no/such/file.csv\"\n");
  CHECK_ERROR(m, "configs/x.toml: [data] path: file not found: ");
  CHECK_ERROR(m, (std::filesystem::current_path() / "no/such/file.csv").string());
  CHECK_ERROR(error_of([] { load_config("configs/does_not_exist.toml"); }), "configs/does_not_exist.toml: cannot open");
}

TEST_CASE("apps/config: --set overrides any key, its value parsed as TOML") {
  Config c = parse_config(kSine, "configs/x.toml",
                          {"train.epochs=3", "model.type=\"lstm\"", "optim.betas=[0.8, 0.99]", "data.scale=false",
                           "output.dir=\"/tmp/elsewhere\""});
  CHECK(c.train.epochs == 3);
  CHECK(c.models[0].type == "lstm");
  CHECK(c.optim.betas == std::vector<double>{0.8, 0.99});
  CHECK(!c.data.scale);
  CHECK(c.output.dir == "/tmp/elsewhere");
  // A bare word (the shell ate the quotes) is a string.
  CHECK(parse_config(kSine, "configs/x.toml", {"model.type=mamba"}).models[0].type == "mamba");
  // Layer options can be added, and bad values say they came from --set.
  CHECK(parse_config(kSine, "configs/x.toml", {"model.type=lstm", "model.num_layers=2"}).models[0].args.has("num_layers"));
  CHECK_ERROR(error_of_text(kSine, {"train.batch_size=0"}),
              "configs/x.toml: [train] batch_size: expected an integer >= 1, got 0 (from --set)");
  CHECK_ERROR(error_of_text(kSine, {"train.bogus=1"}), "[train] bogus: unknown key");
  CHECK_ERROR(error_of_text(kSine, {"epochs=3"}), "--set epochs=3: expected section.key=value");
  CHECK_ERROR(error_of_text(kSine, {"nope.epochs=3"}), "unknown section 'nope'");
  // In a comparison: model.key sets every entry, models.<n|name>.key one of them.
  std::string multi = "[data]\ntask = \"sine\"\n[model]\nd_model = 8\n[[models]]\ntype = \"gru\"\n"
                      "[[models]]\nname = \"big\"\ntype = \"lstm\"\n";
  Config m = parse_config(multi, "configs/x.toml", {"model.n_layers=3", "models.big.d_model=16", "models.1.d_model=4"});
  REQUIRE(m.models.size() == 2);
  CHECK(m.multi);
  CHECK(m.models[0].n_layers == 3);
  CHECK(m.models[1].n_layers == 3);
  CHECK(m.models[0].d_model == 4);
  CHECK(m.models[1].d_model == 16);
  CHECK(m.models[1].name == "big");
  CHECK_ERROR(error_of_text(multi, {"models.7.d_model=4"}), "no [[models]] entry named or numbered '7'");
}

TEST_CASE("apps/config: [[models]] names are unique and token tasks get the token head") {
  CHECK_ERROR(error_of_text("[data]\ntask = \"sine\"\n[[models]]\ntype = \"gru\"\n[[models]]\ntype = \"gru\"\n"),
              "[[models]] #2 name: 'gru' is used by an earlier entry");
  Config t = parse_config("[data]\ntask = \"selective-copying\"\nseq_len = 40\n[model]\ntype = \"lstm\"\n", "t.toml");
  CHECK(t.models[0].head == "token");
  CHECK_ERROR(error_of_text("[data]\ntask = \"selective-copying\"\nseq_len = 20\n"),
              "[data] seq_len: expected an integer >= 32 for selective-copying");
  CHECK_ERROR(error_of_text("[data]\ntask = \"induction-heads\"\n[model]\nrevin = true\n"), "[model] revin: expected false");
}

TEST_CASE("apps/config: wrapper options embed, patch_len, patch_stride, channel_independent, bidir") {
  Config c = parse_config(std::string(kSine) +
                              "embed = \"variate\"\nbidir = true\n[[models]]\nname = \"patchtst\"\nembed = \"time\"\n"
                              "channel_independent = true\npatch_len = 8\npatch_stride = 4\nhead = \"flatten\"\n"
                              "[[models]]\nname = \"itr\"\ntype = \"transformer\"\n",
                          "configs/x.toml");
  REQUIRE(c.models.size() == 2);
  CHECK(c.models[0].head == "flatten");
  CHECK(c.models[0].channel_independent);
  CHECK(c.models[0].patch_len == 8);
  CHECK(c.models[0].patch_stride == 4);
  CHECK(c.models[0].bidir);
  CHECK(c.models[1].embed == "variate");
  CHECK(c.models[1].head == "token");  // "auto" with variate tokens: a Linear(D -> P) per variate
  nn::ModelOptions o = c.models[0].options(c.data, 3, 3, 0);
  CHECK(o.patch_len == 8);
  CHECK(o.channel_independent);
  std::string once = to_toml(c);
  for (const char* key : {"embed", "patch_len", "patch_stride", "channel_independent", "bidir"})
    CHECK_MESSAGE(contains(once, std::string("\n") + key + " = "), key);
  CHECK(to_toml(parse_config(once, "configs/x.toml")) == once);
  // Overrides reach the new keys like any other.
  Config s = parse_config(kSine, "configs/x.toml", {"model.embed=variate", "model.dropout=0.2"});
  CHECK(s.models[0].embed == "variate");
  CHECK(s.models[0].head == "token");
}

TEST_CASE("apps/config: mixer_dropout reaches the layer's own dropout, a layer without one is named") {
  Config c = parse_config("[data]\ntask = \"sine\"\n[model]\nd_model = 8\ndropout = 0.1\n[[models]]\n"
                          "type = \"transformer\"\nn_heads = 2\nmixer_dropout = 0.25\n[[models]]\ntype = \"gru\"\n",
                          "configs/x.toml");
  REQUIRE(c.models.size() == 2);
  CHECK(c.models[0].dropout == 0.1);  // the wrapper's residual dropout is unchanged
  CHECK(c.models[0].mixer_dropout == 0.25);
  nn::ModelOptions o = c.models[0].options(c.data, 3, 3, 0);
  REQUIRE(o.layer_args.values().count("dropout"));
  CHECK(std::get<double>(o.layer_args.values().at("dropout")) == 0.25);
  CHECK(c.models[1].options(c.data, 3, 3, 0).layer_args.values().count("dropout") == 0);  // unset: not passed
  // With the wrapper's dropout at 0, the layer's own dropout alone makes training forwards random.
  Config c0 = parse_config("[data]\ntask = \"sine\"\n[model]\nd_model = 8\ntype = \"transformer\"\nn_heads = 2\n"
                           "mixer_dropout = 0.25\n", "configs/x.toml");
  // Unset (-1): the transformer's own default, 0.1 as PyTorch's; an explicit 0 turns it off.
  for (double md : {0.25, 0.0, -1.0}) {
    CAPTURE(md);
    c0.models[0].mixer_dropout = md;
    nn::SequenceModel m(c0.models[0].options(c0.data, 3, 3, 0));
    Tensor x = randn({2, c0.data.seq_len, 3});
    m.train();
    NoGradGuard ng;
    const bool differ = m.forward(x).to_vector() != m.forward(x).to_vector();
    CHECK(differ == (md != 0.0));
  }
  // Unset: config.resolved.toml holds the value used, the layer's own default, and every other option
  // of the layer (declared once in its file), so reading it back builds the same layer.
  const std::string resolved = to_toml(parse_config("[data]\ntask = \"sine\"\n[model]\nd_model = 8\n"
                                                    "type = \"transformer\"\nn_heads = 2\n", "configs/x.toml"));
  for (const char* line : {"\nmixer_dropout = 0.1\n", "\nd_ff = 32\n", "\nn_heads = 2\n", "\ncausal = false\n",
                           "\npos_encoding = \"none\"\n", "\nmax_len = 1024\n", "\nnorm_eps = 1e-05\n"}) {
    CAPTURE(line);
    CHECK(contains(resolved, line));
  }
  CHECK(to_toml(parse_config(resolved, "configs/x.toml")) == resolved);
  std::string once = to_toml(c);
  CHECK(contains(once, "\nmixer_dropout = 0.25\n"));
  CHECK(to_toml(parse_config(once, "configs/x.toml")) == once);
  CHECK_ERROR(error_of_text("[data]\ntask = \"sine\"\n[model]\ntype = \"mamba\"\nmixer_dropout = 0.1\n"),
              "configs/x.toml: [model] mixer_dropout: the mamba layer has no dropout of its own");
  CHECK_ERROR(error_of_text("[data]\ntask = \"sine\"\n[model]\ntype = \"gru\"\nmixer_dropout = 1.5\n"),
              "mixer_dropout");
}

TEST_CASE("apps/config: wrapper option combinations that do not make sense name the key") {
  const std::string m = std::string(kSine);
  CHECK_ERROR(error_of_text(m + "embed = \"patch\"\n"), "configs/x.toml: [model] embed: expected one of time, variate");
  CHECK_ERROR(error_of_text(m + "patch_len = 0\n"), "[model] patch_len: expected an integer >= 1, got 0");
  CHECK_ERROR(error_of_text(m + "patch_len = 25\n"), "[model] patch_len: expected at most seq_len = 24");
  CHECK_ERROR(error_of_text(m + "patch_stride = 30\n"), "[model] patch_stride: expected at most seq_len = 24");
  CHECK_ERROR(error_of_text(m + "channel_independent = 1\n"), "[model] channel_independent: expected true or false");
  CHECK_ERROR(error_of_text(m + "embed = \"variate\"\nhead = \"last\"\n"), "[model] head: expected token or flatten with embed = \"variate\"");
  CHECK_ERROR(error_of_text(m + "embed = \"variate\"\npatch_len = 4\n"), "[model] patch_len: expected 1 with embed");
  CHECK_ERROR(error_of_text(m + "embed = \"variate\"\nchannel_independent = true\n"),
              "[model] channel_independent: expected false with embed");
  CHECK_ERROR(error_of_text(m + "head = \"token\"\n"), "[model] head: expected last or flatten");
  CHECK_ERROR(error_of_text("[data]\ntask = \"sine\"\nfeatures = \"MS\"\n[model]\nchannel_independent = true\n"),
              "[model] channel_independent: forecasts every input channel");
  CHECK_ERROR(error_of_text("[data]\ntask = \"sine\"\nfeatures = \"MS\"\n[model]\nembed = \"variate\"\n"),
              "[model] embed: \"variate\" forecasts every variate");
  CHECK_ERROR(error_of_text("[data]\ntask = \"induction-heads\"\n[model]\nbidir = true\n"), "[model] bidir: expected false");
  CHECK_ERROR(error_of_text("[data]\ntask = \"induction-heads\"\n[model]\npatch_len = 2\n"), "[model] patch_len: expected 1");
  CHECK_ERROR(error_of_text(m, {"model.patch_len=99"}), "[model] patch_len: expected at most");
}

TEST_CASE("apps/config: every committed config under configs/ loads (keys, types, option combinations)") {
  namespace fs = std::filesystem;
  // Data paths in the configs are relative to the project root, where the README runs them.
  struct Cwd {
    fs::path old = fs::current_path();
    Cwd() { fs::current_path(SEQLAB_SOURCE_DIR); }
    ~Cwd() { fs::current_path(old); }
  } cwd;
  int n = 0;
  for (const auto& e : fs::recursive_directory_iterator(fs::path(SEQLAB_SOURCE_DIR) / "configs")) {
    if (e.path().extension() != ".toml") continue;
    CAPTURE(e.path().string());
    CHECK_NOTHROW(load_config(e.path().string()));
    ++n;
  }
  CHECK(n >= 15);
}

TEST_CASE("apps/config: docs/CONFIG.md's layer option tables are the registry's declared options") {
  // Generated by `seqlab info --options`; a layer option added, removed or redocumented in its table
  // (layers/*.cpp) must be pasted into the docs between the markers.
  const std::string doc = seqlab::testing::read_file(std::string(SEQLAB_SOURCE_DIR) + "/docs/CONFIG.md");
  const std::string begin = "<!-- layer options: seqlab info --options -->\n", end = "<!-- end of layer options -->";
  const size_t a = doc.find(begin), b = doc.find(end);
  REQUIRE(a != std::string::npos);
  REQUIRE(b != std::string::npos);
  const std::string tables = layer_option_tables();
  CHECK(doc.substr(a + begin.size(), b - a - begin.size()) == tables);
  for (const auto& t : nn::layer_types()) CHECK(contains(tables, "`" + t.name + "`: "));
}

TEST_CASE("apps/config: embed_init_std and tie_embeddings (token tasks) and matmul_precision (cuda) are read, written and checked") {
  const std::string ih = "[data]\ntask = \"induction-heads\"\nseq_len = 16\n[model]\ntype = \"mamba\"\nd_model = 8\n";
  Config c = parse_config(ih + "embed_init_std = 0.02\n[train]\ndevice = \"cuda\"\nmatmul_precision = \"high\"\n",
                          "configs/x.toml");
  CHECK(c.models[0].embed_init_std == 0.02);
  CHECK(c.train.matmul_precision == "high");
  CHECK(c.models[0].options(c.data, 1, 1, 16).embed_init_std == 0.02);
  std::string once = to_toml(c);
  CHECK(contains(once, "\nembed_init_std = 0.02\n"));
  CHECK(contains(once, "\nmatmul_precision = \"high\"\n"));
  CHECK(to_toml(parse_config(once, "configs/x.toml")) == once);
  // Defaults: nn.Embedding's N(0, 1) and strict fp32.
  Config d = parse_config(ih, "configs/x.toml");
  CHECK(d.models[0].embed_init_std == 1.0);
  CHECK(d.train.matmul_precision == "highest");
  CHECK(!d.models[0].tie_embeddings);
  Config t = parse_config(ih + "tie_embeddings = true\n", "configs/x.toml");
  CHECK(t.models[0].options(t.data, 1, 1, 16).tie_embeddings);
  CHECK(contains(to_toml(t), "\ntie_embeddings = true\n"));
  CHECK(to_toml(parse_config(to_toml(t), "configs/x.toml")) == to_toml(t));
  CHECK_ERROR(error_of_text(std::string(kSine) + "tie_embeddings = true\n"),
              "[model] tie_embeddings: expected false on a series");
  CHECK_ERROR(error_of_text(ih + "embed_init_std = 0.0\n"), "[model] embed_init_std: expected a number > 0");
  CHECK_ERROR(error_of_text(std::string(kSine) + "embed_init_std = 0.02\n"),
              "[model] embed_init_std: expected the default 1 on a series");
  CHECK_ERROR(error_of_text(ih + "[train]\nmatmul_precision = \"high\"\n"),
              "[train] matmul_precision: expected \"highest\" with device = \"cpu\"");
  CHECK(parse_config(ih + "[train]\ndevice = \"cuda\"\nmatmul_precision = \"medium\"\n", "t.toml")
            .train.matmul_precision == "medium");
  CHECK_ERROR(error_of_text(ih + "[train]\nmatmul_precision = \"medium\"\n"),
              "[train] matmul_precision: expected \"highest\" with device = \"cpu\"");
  CHECK_ERROR(error_of_text(ih + "[train]\ndevice = \"cuda\"\nmatmul_precision = \"tf32\"\n"),
              "[train] matmul_precision: expected one of");
}

TEST_CASE("apps/config: cuda_graph is read, written and refused on the CPU") {
  const std::string ih = "[data]\ntask = \"induction-heads\"\nseq_len = 16\n[model]\ntype = \"mamba\"\nd_model = 8\n";
  Config c = parse_config(ih + "[train]\ndevice = \"cuda\"\ncuda_graph = true\n", "configs/x.toml");
  CHECK(c.train.cuda_graph);
  const std::string once = to_toml(c);
  CHECK(contains(once, "\ncuda_graph = true\n"));
  CHECK(to_toml(parse_config(once, "configs/x.toml")) == once);
  CHECK_FALSE(parse_config(ih, "configs/x.toml").train.cuda_graph);
  CHECK(contains(to_toml(parse_config(ih, "configs/x.toml")), "\ncuda_graph = false\n"));
  CHECK_ERROR(error_of_text(ih + "[train]\ncuda_graph = true\n"),
              "[train] cuda_graph: expected false with device = \"cpu\"");
  CHECK_ERROR(error_of_text(ih + "[train]\ndevice = \"cuda\"\ncuda_graph = 1\n"), "[train] cuda_graph: expected");
}

TEST_CASE("model: embed_init_std scales the token embedding's initial values") {
  nn::ModelOptions o;
  o.layer = "gru";
  o.vocab_size = 16;
  o.d_model = 64;
  o.n_layers = 1;
  o.head = "token";
  auto spread = [&](double std) {
    o.embed_init_std = std;
    manual_seed(7);
    nn::SequenceModel m(o);
    for (auto& np : m.named_parameters())
      if (np.name == "embedding") {
        double ss = 0;
        auto v = np.tensor.to_vector();
        for (double x : v) ss += x * x;
        return std::sqrt(ss / static_cast<double>(v.size()));
      }
    return -1.0;
  };
  CHECK(spread(1.0) == doctest::Approx(1.0).epsilon(0.1));
  CHECK(spread(0.02) == doctest::Approx(0.02).epsilon(0.1));
}
