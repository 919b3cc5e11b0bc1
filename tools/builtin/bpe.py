#!/usr/bin/env python3
"""Train a small byte-level BPE tokenizer on the rendered pretraining corpus; write a
Hugging Face tokenizer.json that s0's C++ tokenizer (src/s0/text/tokenizer.cpp) loads.

  python3 tools/builtin/bpe.py --corpus corpus.jsonl --vocab-size 1024 --out tokenizer.json

Texts trained on: every corpus line rendered as the ChatML conversation the pretraining sees,
  <|im_start|>user\\n{prompt}<|im_end|>\\n<|im_start|>assistant\\n{completion}<|im_end|>\\n
split on the special tokens first (they never take part in merges).

tokenizer.json layout mirrors what `s0 init-model` writes (src/s0/models/init_model.cpp,
byte_level_tokenizer_json): ids 0..255 are the 256 bytes (id = byte value, GPT-2
bytes_to_unicode spelling), then one id per merge, then <|endoftext|>, <|im_start|>,
<|im_end|> as the last three ids (special added tokens). NFC normalizer, ByteLevel
post-processor and decoder. The pre-tokenizer is the Qwen3.5 one:
Sequence[Split(Qwen3.5 regex, Isolated), ByteLevel(use_regex=false)] with the regex spelled
exactly as tokenizer.cpp's kQwen35Regex (the C++ side runs it with its exact matcher).
Python's `re` has no \\p{L}; the corpus is ASCII-only (checked), and on ASCII text the
pattern below (PY_SPLIT) is character-for-character the same language, so the merges are
trained on exactly the pieces the C++ tokenizer produces.

--check FILE: encode the corpus lines of FILE with the trained tokenizer (Python
reimplementation) and print tokens/example; --dump-ids N prints the ids of N samples (for a
comparison with `s0 tokenize`). Standard library only; deterministic (ties broken by the
lexicographically smallest pair).
"""
import argparse
import collections
import json
import os
import re
import sys

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
QWEN35_REGEX = ("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?[\\p{L}\\p{M}]+|\\p{N}| ?[^\\s\\p{L}\\p{M}\\p{N}]+[\\r\\n]*|"
                "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+")
_WS = "\\t\\n\\x0b\\x0c\\r "  # Oniguruma \s restricted to ASCII
PY_SPLIT = re.compile(
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\nA-Za-z0-9]?[A-Za-z]+|[0-9]| ?[^" + _WS + "A-Za-z0-9]+[\\r\\n]*|"
    "[" + _WS + "]*[\\r\\n]+|[" + _WS + "]+(?![^" + _WS + "])|[" + _WS + "]+")
SPECIAL_SPLIT = re.compile("(" + "|".join(re.escape(s) for s in SPECIALS) + ")")


def bytes_to_unicode():
    """GPT-2 mapping, byte value -> printable unicode char (as init_model.cpp writes it)."""
    out = {}
    extra = 0
    for b in range(256):
        printable = 33 <= b <= 126 or 161 <= b <= 172 or 174 <= b <= 255
        if printable:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + extra)
            extra += 1
    return out


B2U = bytes_to_unicode()


def render(rec):
    return ("<|im_start|>user\n" + rec["prompt"] + "<|im_end|>\n<|im_start|>assistant\n"
            + rec["completion"] + "<|im_end|>\n")


def pieces(text):
    """Added-token split, then the pre-tokenizer: list of (is_special, piece)."""
    out = []
    for seg in SPECIAL_SPLIT.split(text):
        if not seg:
            continue
        if seg in SPECIALS:
            out.append((True, seg))
            continue
        pos = 0
        for m in PY_SPLIT.finditer(seg):
            assert m.start() == pos, "gap in pre-tokenization"
            pos = m.end()
            out.append((False, m.group(0)))
        assert pos == len(seg)
    return out


def to_bl(piece):
    return "".join(B2U[b] for b in piece.encode("utf-8"))


def read_corpus(path):
    with open(path) as f:
        for line in f:
            if line.strip():
                rec = json.loads(line)
                text = render(rec)
                if not text.isascii():
                    raise SystemExit("bpe: non-ASCII text in the corpus; PY_SPLIT is exact on ASCII only")
                yield text


def train(words, n_merges):
    """words: Counter of byte-level strings. Returns the list of merges (a, b)."""
    syms = [list(w) for w in words]
    freq = [words[w] for w in words]
    pair_count = collections.Counter()
    where = collections.defaultdict(set)
    for i, s in enumerate(syms):
        for a, b in zip(s, s[1:]):
            pair_count[(a, b)] += freq[i]
            where[(a, b)].add(i)
    merges = []
    while len(merges) < n_merges and pair_count:
        top = max(pair_count.values())
        if top < 1:
            break
        best = min(p for p, c in pair_count.items() if c == top)
        merges.append(best)
        a, b = best
        ab = a + b
        for i in sorted(where.pop(best, ())):
            s = syms[i]
            f = freq[i]
            for x, y in zip(s, s[1:]):
                pair_count[(x, y)] -= f
                if pair_count[(x, y)] <= 0:
                    del pair_count[(x, y)]
            new = []
            j = 0
            while j < len(s):
                if j + 1 < len(s) and s[j] == a and s[j + 1] == b:
                    new.append(ab)
                    j += 2
                else:
                    new.append(s[j])
                    j += 1
            syms[i] = new
            for x, y in zip(new, new[1:]):
                pair_count[(x, y)] += f
                where[(x, y)].add(i)
        pair_count.pop(best, None)
    return merges


class Encoder:
    def __init__(self, tok):
        self.vocab = tok["model"]["vocab"]
        self.ranks = {tuple(m): i for i, m in enumerate(tok["model"]["merges"])}
        self.special = {t["content"]: t["id"] for t in tok["added_tokens"]}
        self.cache = {}

    def bpe(self, piece):
        r = self.cache.get(piece)
        if r is not None:
            return r
        s = list(to_bl(piece))
        while len(s) > 1:
            best = None
            for k in range(len(s) - 1):
                rk = self.ranks.get((s[k], s[k + 1]))
                if rk is not None and (best is None or rk < best[0]):
                    best = (rk, k)
            if best is None:
                break
            a, b = s[best[1]], s[best[1] + 1]
            new, j = [], 0
            while j < len(s):
                if j + 1 < len(s) and s[j] == a and s[j + 1] == b:
                    new.append(a + b)
                    j += 2
                else:
                    new.append(s[j])
                    j += 1
            s = new
        r = [self.vocab[x] for x in s]
        self.cache[piece] = r
        return r

    def encode(self, text):
        ids = []
        for sp, p in pieces(text):
            ids.extend([self.special[p]] if sp else self.bpe(p))
        return ids


def build_json(merges, vocab_size):
    vocab = {B2U[b]: b for b in range(256)}
    for a, b in merges:
        vocab[a + b] = len(vocab)
    assert len(vocab) == vocab_size - len(SPECIALS), (len(vocab), vocab_size)
    first_special = len(vocab)
    added = [{"id": first_special + i, "content": s, "single_word": False, "lstrip": False,
              "rstrip": False, "normalized": False, "special": True} for i, s in enumerate(SPECIALS)]
    bl = lambda use_regex: {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False,
                            "use_regex": use_regex}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": QWEN35_REGEX}, "behavior": "Isolated", "invert": False},
            bl(False)]},
        "post_processor": bl(False),
        "decoder": bl(False),
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
                  "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False,
                  "ignore_merges": False, "vocab": vocab, "merges": [[a, b] for a, b in merges]},
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", required=True, help="corpus JSONL (prompt/completion per line)")
    ap.add_argument("--vocab-size", type=int, default=1024, help="total, including the 3 special tokens")
    ap.add_argument("--out", help="tokenizer.json to write (omit with --check-only)")
    ap.add_argument("--max-lines", type=int, default=0, help="train on the first N lines only (0 = all)")
    ap.add_argument("--check", help="tokenizer.json to load instead of training (then report tokens/example)")
    ap.add_argument("--dump-ids", type=int, default=0, help="print text and ids of the first N examples")
    a = ap.parse_args()

    if a.check:
        with open(a.check) as f:
            tok = json.load(f)
    else:
        words = collections.Counter()
        n = 0
        for text in read_corpus(a.corpus):
            for sp, p in pieces(text):
                if not sp:
                    words[to_bl(p)] += 1
            n += 1
            if a.max_lines and n >= a.max_lines:
                break
        n_merges = a.vocab_size - 256 - len(SPECIALS)
        merges = train(words, n_merges)
        if len(merges) < n_merges:
            raise SystemExit("bpe: only %d merges possible (< %d)" % (len(merges), n_merges))
        tok = build_json(merges, a.vocab_size)
        with open(a.out + ".tmp", "w") as f:
            json.dump(tok, f, ensure_ascii=False, indent=1)
        os.replace(a.out + ".tmp", a.out)
        print("bpe: trained on %d examples (%d distinct pieces); %d merges; wrote %s" % (
            n, len(words), len(merges), a.out))

    enc = Encoder(tok)
    tot = cnt = comp = 0
    for i, text in enumerate(read_corpus(a.corpus)):
        ids = enc.encode(text)
        tot += len(ids)
        cnt += 1
        if i < a.dump_ids:
            print(json.dumps({"text": text, "ids": ids}))
    print("bpe: %d examples, %.1f tokens/example (rendered ChatML text), %.2f bytes/token" % (
        cnt, tot / max(1, cnt), 0 if not tot else sum(len(t) for t in read_corpus(a.corpus)) / tot))


if __name__ == "__main__":
    main()
