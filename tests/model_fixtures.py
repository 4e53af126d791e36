"""Small random-initialised HF GPT-2 folders for tests: no download, deterministic per seed."""

from __future__ import annotations

import json
from pathlib import Path

CORPUS = [
    "When John and Mary went to the store, John gave a drink to Mary.",
    "The Eiffel Tower is in Paris. The Colosseum is in Rome. The cat sat on the mat.",
    "Alice and Bob walked to the park, and Alice gave a ball to Bob.",
    "The war lasted from the year 1732 to the year 1756.",
    "hello world, the quick brown fox jumps over the lazy dog.",
]


def make_tokenizer(folder: Path, vocab_size: int = 400) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2TokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(CORPUS * 50, trainer)
    fast = GPT2TokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>",
                             eos_token="<|endoftext|>", unk_token="<|endoftext|>")
    fast.save_pretrained(str(folder))


def make_gpt2_folder(folder: Path, n_layer: int = 2, n_head: int = 4, n_embd: int = 64,
                     n_positions: int = 64, seed: int = 0, vocab_size: int = 400) -> Path:
    """Write a random GPT-2 (config.json + model.safetensors + tokenizer) into ``folder``."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    make_tokenizer(folder, vocab_size)
    n_vocab = len(json.loads((folder / "tokenizer.json").read_text())["model"]["vocab"])
    torch.manual_seed(seed)
    config = GPT2Config(n_layer=n_layer, n_head=n_head, n_embd=n_embd, n_positions=n_positions,
                        vocab_size=n_vocab, bos_token_id=0, eos_token_id=0)
    model = GPT2LMHeadModel(config)
    # Larger than default init so attention patterns and logits are far from uniform.
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.mul_(4.0)
    model.save_pretrained(str(folder), safe_serialization=True)
    return folder


def make_fake_hf_cache(cache: Path, repo: str, source: Path, revision: str = "0" * 40) -> Path:
    """Lay ``source`` out as the HF hub cache does: models--org--name/{refs,snapshots}."""
    import shutil

    root = cache / ("models--" + repo.replace("/", "--"))
    snap = root / "snapshots" / revision
    snap.mkdir(parents=True, exist_ok=True)
    for f in source.iterdir():
        if f.is_file():
            shutil.copy(f, snap / f.name)
    (root / "refs").mkdir(exist_ok=True)
    (root / "refs" / "main").write_text(revision)
    return snap
