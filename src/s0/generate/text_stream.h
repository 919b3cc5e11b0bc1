#pragma once
// Streaming text of a generation and its stop strings, in one place for every way of
// generating (CLI, collect, eval, server). Torch-free.
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace s0::text {
class Tokenizer;
}

namespace s0::generate {

// Turns generated ids into text incrementally: push returns the text the id completes.
class Detokenizer {
 public:
  virtual ~Detokenizer() = default;
  virtual std::string push(int64_t id) = 0;
  virtual std::string flush() = 0;  // whatever is still held (the sequence ended)
};

// Makes one Detokenizer per sequence.
using DetokenizerFactory = std::function<std::unique_ptr<Detokenizer>()>;

// From a tokenizer: complete UTF-8 only (text::StreamDecoder), special tokens skipped.
DetokenizerFactory detokenizer_for(const text::Tokenizer& tok);
// From a whole-sequence decode function (ids -> text): each push decodes every id so far
// and releases the text beyond what was released already (quadratic: for tests and tools
// without a tokenizer object).
DetokenizerFactory detokenizer_for(std::function<std::string(const std::vector<int64_t>&)> decode);

// Text assembled from generated ids: cut before the first stop string, holding back any
// tail that may still become a stop string, so the pieces push() returns concatenate to
// exactly text() whether or not anyone streams them.
class TextStream {
 public:
  TextStream(std::unique_ptr<Detokenizer> dec, std::vector<std::string> stops);
  std::string push(int64_t id);  // newly released text (maybe empty)
  std::string finish();          // the rest, once the sequence has ended
  bool stopped() const { return stopped_; }
  const std::string& text() const { return text_; }

 private:
  std::string release(bool final);

  std::unique_ptr<Detokenizer> dec_;
  std::vector<std::string> stops_;
  std::string text_;
  size_t emitted_ = 0;
  bool stopped_ = false;
};

}  // namespace s0::generate
