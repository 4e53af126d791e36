"""Byte-level BPE tokenizer for the organism, trained on its own corpus (GPT-2 style).

Leading spaces are part of tokens (" Paris" is one token). The only special token is
``<|endoftext|>`` (id 0), used as BOS, EOS and UNK exactly like GPT-2, so TransformerLens prepends
it as BOS. Training is deterministic for a given corpus (tests/organism checks the saved JSON).
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

EOT = "<|endoftext|>"
DEFAULT_VOCAB = 4096


def train_tokenizer(docs: Iterable[str], vocab_size: int = DEFAULT_VOCAB) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(docs, trainer)
    return tok


def save_hf_tokenizer(tok: Tokenizer, folder: Path, model_max_length: int = 256):
    """Save as a GPT2TokenizerFast folder that ``AutoTokenizer.from_pretrained`` loads offline."""
    from transformers import GPT2TokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    hf = GPT2TokenizerFast(
        tokenizer_object=tok,
        bos_token=EOT,
        eos_token=EOT,
        unk_token=EOT,
        model_max_length=model_max_length,
        add_prefix_space=False,
    )
    hf.save_pretrained(str(folder))
    return hf


def main() -> None:
    from tools.organism.corpus import generate_documents

    ap = argparse.ArgumentParser(description="Train the organism tokenizer on the seeded corpus.")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-docs", type=int, default=60000)
    ap.add_argument("--vocab-size", type=int, default=DEFAULT_VOCAB)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    tok = train_tokenizer(generate_documents(args.seed, args.n_docs), args.vocab_size)
    save_hf_tokenizer(tok, args.out)
    print(f"saved tokenizer with {tok.get_vocab_size()} tokens to {args.out}")


if __name__ == "__main__":
    main()
