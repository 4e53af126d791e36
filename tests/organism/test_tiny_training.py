"""A tiny end-to-end training run produces a folder that loads through TransformerLens."""

from __future__ import annotations

import json
import warnings

import torch

from tools.organism import train

TINY = [
    "--n-docs",
    "400",
    "--vocab-size",
    "600",
    "--n-layer",
    "2",
    "--d-model",
    "32",
    "--n-head",
    "2",
    "--n-positions",
    "64",
    "--batch",
    "2",
    "--log-every",
    "1",
    "--no-eval",
]


def _train(argv: list[str]) -> None:
    threads, det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    try:
        train.main(argv + TINY)
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(det)


def test_tiny_training_run_end_to_end(tmp_path):
    out = tmp_path / "tiny"
    _train(["--out", str(out), "--steps", "4", "--warmup", "2", "--ckpt-every", "2"])
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= names
    state = json.loads((out / "training_state.json").read_text())
    assert state["step"] == 4 and state["final"] is True
    assert not (tmp_path / "tiny.tmp").exists() and not (tmp_path / "tiny.tokenizer").exists()

    from transformer_lens.model_bridge import TransformerBridge

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        b = TransformerBridge.boot_transformers(str(out), device="cpu")
        b.enable_compatibility_mode(disable_warnings=True)
    assert b.cfg.n_layers == 2 and b.cfg.d_model == 32 and b.cfg.n_ctx == 64
    toks = b.to_tokens("The cat sat on the mat.")
    assert toks[0, 0].item() == 0
    with torch.no_grad():
        logits = b(toks)
    assert logits.shape == (1, toks.shape[1], b.cfg.d_vocab)
    assert torch.isfinite(logits).all()


def test_second_stage_starts_from_first_stage_weights(tmp_path):
    from safetensors.torch import load_file

    one, two = tmp_path / "one", tmp_path / "two"
    _train(["--out", str(one), "--steps", "6", "--stop-after", "2", "--warmup", "1"])
    assert json.loads((one / "training_state.json").read_text())["step"] == 2
    _train(
        [
            "--out",
            str(two),
            "--init-from",
            str(one),
            "--steps",
            "1",
            "--warmup",
            "1",
            "--lr",
            "1e-9",
            "--random-frac",
            "1.0",
            "--cycle-frac",
            "0.5",
            "--batch-seed",
            "7",
        ]
    )
    a, b = load_file(one / "model.safetensors"), load_file(two / "model.safetensors")
    assert a.keys() == b.keys()
    # one step at lr 1e-9 barely moves the stage-one weights (a fresh init would differ by ~0.02)
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


def test_cycle_rows_repeat_a_random_pair():
    b = train.Batches([[5, 6]], 1000, 33, 8, 1.0, seed=0, cycle_frac=1.0)
    x = b.next()
    body = x[:, 1:]
    assert (body[:, 2:8] == body[:, :6]).all()  # period 2 at the start of every row
    assert (body[:, 0] != body[:, 1]).any()


def test_batches_are_deterministic_and_start_with_bos():
    docs = [[5, 6, 7, 8]] * 50
    a = train.Batches(docs, 100, 32, 4, 0.5, seed=3)
    b = train.Batches(docs, 100, 32, 4, 0.5, seed=3)
    xa, xb = a.next(), b.next()
    assert torch.equal(xa, xb)
    assert xa.shape == (4, 32) and (xa[:, 0] == 0).all()


def test_induction_hint_loss_is_smallest_at_the_induction_pattern():
    """The hint's target: from each token, the positions right after its earlier occurrences."""
    seg = torch.tensor([5, 9, 7, 3])
    x = torch.cat([torch.tensor([0]), seg, seg])[None]  # BOS a b c d a b c d
    n = x.shape[1]
    target = torch.zeros(1, n, n)
    for t in range(5, n):  # second copy: token at t first occurred at t - 4; attend to t - 3
        target[0, t, t - 3] = 1.0
    uniform = torch.ones(1, n, n).tril()
    uniform = uniform / uniform.sum(-1, keepdim=True)
    at_target = train.induction_hint_loss(x, target * 0.999 + uniform * 0.001)
    assert float(at_target) < 0.01
    assert float(train.induction_hint_loss(x, uniform)) > 1.0
    # No earlier occurrence anywhere: nothing to learn, zero loss (and a gradient of zero).
    fresh = torch.arange(1, 9)[None]
    assert float(train.induction_hint_loss(fresh, uniform[:, :8, :8])) == 0.0


def test_prev_token_hint_loss_is_smallest_at_the_previous_token():
    n = 6
    prev = torch.zeros(1, 1, n, n)
    prev[0, 0, 0, 0] = 1.0
    for t in range(1, n):
        prev[0, 0, t, t - 1] = 1.0
    uniform = torch.ones(n, n).tril()
    uniform = (uniform / uniform.sum(-1, keepdim=True))[None, None]
    assert float(train.prev_token_hint_loss((prev * 0.999 + uniform * 0.001)[:, 0])) < 0.01
    assert float(train.prev_token_hint_loss(uniform[:, 0])) > 0.5
    # The diagonal (attending to itself) is as wrong as anything else.
    assert float(train.prev_token_hint_loss(torch.eye(n)[None] * 0.99 + 0.01 / n)) > 3.0


def test_tiny_run_with_the_induction_hint(tmp_path, capsys):
    out = tmp_path / "hinted"
    _train(["--out", str(out), "--steps", "3", "--warmup", "1", "--random-frac", "1.0",
            "--seg", "4", "8", "--repeats", "2", "4", "--hint-weight", "0.3", "--hint-steps", "2",
            "--hint-head", "1", "0", "--prev-hint-head", "0", "1"])
    assert json.loads((out / "training_state.json").read_text())["step"] == 3
    steps = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("step ")]
    assert len(steps) == 3
    assert all(" hint " in ln for ln in steps[:2]) and " hint " not in steps[2]


def test_name_swap_ioi_never_uses_held_out_names():
    """IOI rows with random whole words as names: the structure of an IOI sentence (each name
    twice), and no held-out name ever (the held-out IOI evaluation stays held out)."""
    from tokenizers import Tokenizer

    from engine.model_sources import BUNDLED_DIR
    from tools.organism import corpus as C

    tok = Tokenizer.from_file(str(BUNDLED_DIR / "tokenizer.json"))
    swap = train.NameSwapIOI(tok, seed=3, n_sentences=300)
    vocab = tok.get_vocab()
    _, held = C.split_names()
    held_ids = {vocab["\u0120" + n] for n in held if "\u0120" + n in vocab}
    assert len(held_ids) == len(held) and not held_ids & set(swap.pool)
    assert len(swap.pool) > 500 and swap.sentences
    ids = swap.tokens(5000)
    assert not held_ids & set(ids)
    # One sentence: the template's tokens, with both slots of each name filled by one new word.
    import random

    swap.rng = random.Random(0)
    pick = random.Random(0)
    a, b = pick.sample(swap.pool, 2)
    sentence = pick.choice(swap.sentences)
    got = swap.tokens(len(sentence))
    assert a != b
    assert got == [a if t == swap.io else b if t == swap.s else t for t in sentence]
    assert got.count(a) == 2 and got.count(b) == 2
    text = tok.decode(swap.tokens(40))
    assert " gave " in text or " to " in text
