// `s0 tokenize` (text -> ids) and `s0 detokenize` (ids -> text) with a model directory's
// tokenizer.json. Both print one JSON line.
#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>

#include <nlohmann/json.hpp>

#include "commands.h"
#include "s0/text/chat_template.h"
#include "s0/text/tokenizer.h"
#include "s0/util/error.h"

namespace s0::cli {


Action add_tokenize(CLI::App& app) {
  struct Opts {
    std::string model, text, file;
    bool no_special = false, chat = false, thinking = false;
  };
  auto o = std::make_shared<Opts>();
  app.add_option("--model", o->model, "Model directory (reads DIR/tokenizer.json)")->required();
  app.add_flag("--chat", o->chat, "Render the text as one user turn through the model's chat template first "
                                  "(generation prompt on, thinking off unless --thinking)");
  app.add_flag("--thinking", o->thinking, "With --chat: enable_thinking=true");
  auto* t = app.add_option("--text", o->text, "Text to tokenize");
  auto* f = app.add_option("--file", o->file, "File whose bytes are tokenized");
  t->excludes(f);
  app.add_flag("--no-special", o->no_special, "Do not add the post-processor's special tokens (e.g. BOS)");
  return [o, t, f]() {
    if (t->count() == 0 && f->count() == 0) throw Error("give --text or --file");
    std::string text = o->text;
    if (f->count()) {
      std::ifstream in(o->file, std::ios::binary);
      if (!in) throw Error("cannot open --file '" + o->file + "'");
      std::ostringstream ss;
      ss << in.rdbuf();
      text = ss.str();
    }
    auto tok = text::Tokenizer::from_model_dir(o->model);
    if (o->chat) text = text::ChatTemplate::from_model_dir(o->model).render({{"user", text}}, {true, o->thinking, std::nullopt});
    nlohmann::json j = {{"ids", tok.encode(text, !o->no_special)}};
    if (o->chat) j["text"] = text;
    std::printf("%s\n", j.dump().c_str());
    return 0;
  };
}

Action add_detokenize(CLI::App& app) {
  struct Opts {
    std::string model, ids;
    bool skip_special = false;
  };
  auto o = std::make_shared<Opts>();
  app.add_option("--model", o->model, "Model directory (reads DIR/tokenizer.json)")->required();
  app.add_option("--ids", o->ids, "Comma-separated token ids")->required();
  app.add_flag("--skip-special", o->skip_special, "Drop special tokens");
  return [o]() {
    auto ids = parse_id_list(o->ids, "--ids");
    auto tok = text::Tokenizer::from_model_dir(o->model);
    for (auto id : ids)
      if (id < 0 || id >= tok.vocab_size())
        throw Error("--ids: token id " + std::to_string(id) + " out of range [0, " +
                    std::to_string(tok.vocab_size()) + ")");
    nlohmann::json j = {{"text", tok.decode(ids, o->skip_special)}};
    std::printf("%s\n", j.dump().c_str());
    return 0;
  };
}

}  // namespace s0::cli
