"""s0 from Python: S0 tuning (one learned initial recurrent state per layer, weights frozen) for
hybrid recurrent-attention language models, with s0's C++ engine underneath.

    import s0
    model = s0.Model.load("path/to/model", dtype="f32")
    trainer = s0.Trainer(model, n_steps=20)          # the reference's S0Trainer names and defaults
    result = trainer.train([{"prompt": "Say OK.", "completion": "OK"}])
    trainer.save("states/")                           # the reference layout
    trainer.activate()                                # later generate()/logits() start from the states
    print(model.generate("Say OK.", max_new_tokens=8)["text"])

Tensors cross as NumPy arrays (no torch needed on the Python side). Errors: FileNotFoundError
for a missing file or directory, ValueError for bad input (arguments, malformed files,
mismatches), RuntimeError for anything else. Long calls release the GIL; Ctrl-C interrupts
them. See the README's Python section.
"""

from ._s0 import (  # noqa: F401
    GenerationStream,
    Lora,
    Model,
    Server,
    StateOffset,
    StateSet,
    Trainer,
    collect,
    evaluate,
    experiment,
    init_model,
)



class S0Trainer(Trainer):
    """Trainer with the reference library's constructor, S0Trainer(model, tokenizer, config):
    s0's Model carries its own tokenizer, so `tokenizer` is accepted and ignored; `config` is a
    dict or an object with the settings as attributes (the reference's S0Config)."""

    def __init__(self, model, tokenizer=None, config=None, **kwargs):
        if config is None and isinstance(tokenizer, dict):
            tokenizer, config = None, tokenizer
        super().__init__(model, config, **kwargs)


__all__ = [
    "GenerationStream",
    "Lora",
    "Model",
    "S0Trainer",
    "Server",
    "StateOffset",
    "StateSet",
    "Trainer",
    "collect",
    "evaluate",
    "experiment",
    "init_model",
]
