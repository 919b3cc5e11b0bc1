#include "s0/generate/text_stream.h"

#include <algorithm>

#include "s0/text/tokenizer.h"

namespace s0::generate {

namespace {

class TokenizerDetokenizer : public Detokenizer {
 public:
  explicit TokenizerDetokenizer(const text::Tokenizer& t) : dec_(t, /*skip_special_tokens=*/true) {}
  std::string push(int64_t id) override { return dec_.push(id); }
  std::string flush() override { return dec_.flush(); }

 private:
  text::StreamDecoder dec_;
};

class FunctionDetokenizer : public Detokenizer {
 public:
  explicit FunctionDetokenizer(std::function<std::string(const std::vector<int64_t>&)> f) : f_(std::move(f)) {}
  std::string push(int64_t id) override {
    ids_.push_back(id);
    return next();
  }
  std::string flush() override { return next(); }

 private:
  std::string next() {
    const std::string all = f_(ids_);
    // Text already released stays released; an earlier piece that decodes differently now
    // (a multi-byte character completed) releases nothing until the prefix agrees again.
    if (all.size() < released_.size() || all.compare(0, released_.size(), released_) != 0) return "";
    std::string out = all.substr(released_.size());
    released_ = all;
    return out;
  }
  std::function<std::string(const std::vector<int64_t>&)> f_;
  std::vector<int64_t> ids_;
  std::string released_;
};

}  // namespace

DetokenizerFactory detokenizer_for(const text::Tokenizer& tok) {
  return [&tok] { return std::make_unique<TokenizerDetokenizer>(tok); };
}

DetokenizerFactory detokenizer_for(std::function<std::string(const std::vector<int64_t>&)> decode) {
  return [decode] { return std::make_unique<FunctionDetokenizer>(decode); };
}

TextStream::TextStream(std::unique_ptr<Detokenizer> dec, std::vector<std::string> stops)
    : dec_(std::move(dec)), stops_(std::move(stops)) {
  stops_.erase(std::remove(stops_.begin(), stops_.end(), std::string()), stops_.end());
}

std::string TextStream::push(int64_t id) {
  if (stopped_) return "";
  text_ += dec_->push(id);
  return release(false);
}

std::string TextStream::finish() {
  if (stopped_) return "";
  text_ += dec_->flush();
  return release(true);
}

std::string TextStream::release(bool final) {
  size_t cut = std::string::npos;
  for (const auto& s : stops_) {
    const size_t from = emitted_ >= s.size() ? emitted_ - s.size() + 1 : 0;
    const size_t p = text_.find(s, from);
    if (p != std::string::npos) cut = std::min(cut, p);
  }
  if (cut != std::string::npos) {
    stopped_ = true;
    text_.resize(std::max(cut, emitted_));
  }
  size_t upto = text_.size();
  if (!final && !stopped_) {
    // Hold back the longest tail that is a proper prefix of some stop string.
    size_t hold = 0;
    for (const auto& s : stops_)
      for (size_t k = std::min(s.size() - 1, text_.size()); k > hold; --k)
        if (text_.compare(text_.size() - k, k, s, 0, k) == 0) {
          hold = k;
          break;
        }
    upto = std::max(emitted_, text_.size() - hold);
  }
  std::string out = text_.substr(emitted_, upto - emitted_);
  emitted_ = upto;
  return out;
}

}  // namespace s0::generate
