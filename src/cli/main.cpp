// s0: S0 tuning for hybrid recurrent-attention language models.
#include <cstdio>
#include <map>

#include "commands.h"
#include "s0/util/error.h"

int main(int argc, char** argv) {
  CLI::App app{"s0: learn, apply and serve initial recurrent states (S0 tuning) for hybrid LLMs"};
  app.require_subcommand(1);
  std::map<CLI::App*, s0::cli::Action> actions;
  auto reg = [&](CLI::App* sub, s0::cli::Action a) { actions[sub] = std::move(a); };
  {
    auto* sub = app.add_subcommand("init-model", "Write a model directory with random weights");
    reg(sub, s0::cli::add_init_model(*sub));
  }
  {
    auto* sub = app.add_subcommand("generate", "Generate tokens from a model (optionally with a state set)");
    reg(sub, s0::cli::add_generate(*sub));
  }
  {
    auto* sub = app.add_subcommand("tokenize", "Text to token ids with the model's tokenizer.json");
    reg(sub, s0::cli::add_tokenize(*sub));
  }
  {
    auto* sub = app.add_subcommand("detokenize", "Token ids to text with the model's tokenizer.json");
    reg(sub, s0::cli::add_detokenize(*sub));
  }
  {
    auto* sub = app.add_subcommand("train", "Learn an S0 state set from JSONL examples (model frozen)");
    reg(sub, s0::cli::add_train(*sub));
  }
  {
    auto* sub = app.add_subcommand("states", "Inspect state-set directories");
    reg(sub, s0::cli::add_states(*sub));
  }
  {
    auto* sub = app.add_subcommand("demo", "The main job on the built-in default model");
    reg(sub, s0::cli::add_demo(*sub));
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);  // prints help, or the usage error
    return code == 0 ? 0 : 2;  // usage errors: exit status 2
  }
  try {
    for (auto* sub : app.get_subcommands())
      if (actions.count(sub)) return actions[sub]();
    return 1;
  } catch (const s0::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  }
}
