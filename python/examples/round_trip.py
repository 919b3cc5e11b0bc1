#!/usr/bin/env python3
"""The CLI's round trip from Python: write a tiny model, train a state set, save it in the
reference layout, load it back, generate with and without it.

    PYTHONPATH=build/python /usr/bin/python3 python/examples/round_trip.py [WORK_DIR]

(after `cmake --install build --component python`, PYTHONPATH is not needed)."""
import os
import sys
import tempfile

import numpy as np

import s0


def main(work):
    model_dir = os.path.join(work, "model")
    states_dir = os.path.join(work, "states")

    # 1. A model directory with random weights (any Hugging Face checkpoint of a supported
    #    family works the same): `s0 init-model --preset tiny --dtype f32 --out DIR`.
    params = s0.init_model(model_dir, preset="tiny", dtype="f32", seed=0)
    model = s0.Model.load(model_dir, dtype="f32")
    print(f"model: {model.model_type}, {params:,} parameters, recurrent layers {model.recurrent_layers}")

    # 2. Train: the reference library's S0Trainer names and defaults; examples as
    #    {"prompt", "completion"} dicts or (text, prompt_len) pairs.
    trainer = s0.S0Trainer(model, {"n_steps": 20, "lr": 1e-3}, chat=True)
    result = trainer.train([{"prompt": "Say OK.", "completion": "OK"},
                            {"prompt": "Say OK!", "completion": "OK"}],
                           progress=lambda step: print(f"  step {step['step']:2d}  loss {step['loss']:.4f}"))
    print(f"final_loss {result['final_loss']:.4f}  avg_state_norm {result['avg_state_norm']:.4f}")

    # 3. Save (states.safetensors, config.json, meta.json: what the reference loads) and load.
    trainer.save(states_dir)
    states = s0.StateSet.load(states_dir, model)
    layer = states.layers[0]
    print(f"saved {len(states.layers)} states of shape {states.state_shape} to {states_dir}; "
          f"layer {layer} norm {np.linalg.norm(states[layer]):.4f}")

    # 4. Generate without and with the states (alpha 1 makes the tiny model's change visible).
    base = model.generate("Say OK.", chat=True, max_new_tokens=8)
    tuned = model.generate("Say OK.", chat=True, max_new_tokens=8, states=states, alpha=1.0)
    print(f"base:  {base['tokens']} {base['text']!r}")
    print(f"tuned: {tuned['tokens']} {tuned['text']!r}")
    # Streaming: the same tokens, one at a time.
    streamed = [p["token"] for p in model.generate("Say OK.", chat=True, max_new_tokens=8, states=states,
                                                   alpha=1.0, stream=True) if p["token"] is not None]
    assert streamed == tuned["tokens"]
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1:
        os.makedirs(sys.argv[1], exist_ok=True)
        sys.exit(main(sys.argv[1]))
    with tempfile.TemporaryDirectory() as d:
        sys.exit(main(d))
