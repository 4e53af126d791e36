"""SAE training as a job, text sources, and the evaluation numbers, on the tiny random GPT-2."""

from __future__ import annotations

import gzip
import random
from itertools import islice

import pytest
import torch

from engine.errors import InputError
from engine.jobs import Cancelled, Context
from engine.sae_io import load_sae
from engine.sae_train import TrainProgress, TrainRequest, run_train_sae
from engine.text_source import TextSource, token_rows
from tests.model_fixtures import CORPUS


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    rng = random.Random(0)
    words = " ".join(CORPUS).split()
    lines = [" ".join(rng.choice(words) for _ in range(rng.randint(5, 30))) for _ in range(3000)]
    path = tmp_path_factory.mktemp("text") / "corpus.txt"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def _message(fn) -> str:
    with pytest.raises(InputError) as info:
        fn()
    return (info.value.message + " " + info.value.hint).lower()


def test_text_sources_check_their_input(tmp_path, tiny_host, text_file):
    def rows(source, ctx=16):
        return list(token_rows(tiny_host, source, ctx, 10_000, 8))

    empty = tmp_path / "empty.txt"
    empty.write_text("  \n\n ")
    assert "empty" in _message(lambda: rows(TextSource("file", str(empty))))
    binary = tmp_path / "image.png"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 8)
    assert "not a text file" in _message(lambda: rows(TextSource("file", str(binary))))
    latin = tmp_path / "latin.txt"
    latin.write_bytes("caf\xe9 cr\xe8me ".encode("latin-1") * 50)
    assert "utf-8" in _message(lambda: rows(TextSource("file", str(latin))))
    assert "does not exist" in _message(lambda: rows(TextSource("file", str(tmp_path / "no"))))
    short = tmp_path / "short.txt"
    short.write_text("hello world")
    assert "fewer than" in _message(lambda: rows(TextSource("file", str(short)), 32))
    # packing: rows of context_size, each starting with BOS; documents separated by EOS
    got = rows(TextSource("file", str(text_file)))
    assert sum(b.shape[0] for b in got) * 16 == 10_000 // 16 * 16
    assert all(b.shape[1] == 16 and bool((b[:, 0] == 0).all()) for b in got)
    gz = tmp_path / "corpus.txt.gz"
    gz.write_bytes(gzip.compress(text_file.read_bytes()))
    assert torch.equal(torch.cat(rows(TextSource("file", str(gz)))), torch.cat(got))


def test_hf_dataset_source_reads_only_the_local_cache(tmp_path, tiny_host, monkeypatch):
    import glob
    import os
    import shutil

    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    cache = tmp_path / "hf_datasets"
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    msg = _message(lambda: list(token_rows(tiny_host, TextSource("hf", "nobody/missing"), 16,
                                           1000, 4)))
    assert "not in the local hugging face cache" in msg and "never downloads" in msg
    # lay out what datasets leaves in its cache after a download, then read it offline
    pq.write_table(pa.table({"text": list(CORPUS) * 40, "n": list(range(200))}),
                   str(tmp_path / "t.parquet"))
    datasets.load_dataset("parquet", data_files={"train": str(tmp_path / "t.parquet")},
                          split="train", cache_dir=str(tmp_path / "build"))
    built = next(p for p in glob.glob(str(tmp_path / "build" / "parquet" / "*" / "0.0.0" / "*"))
                 if os.path.isdir(p))
    dst = cache / "tiny___corpus" / "default" / "0.0.0" / "abc"
    shutil.copytree(built, dst)
    os.rename(dst / "parquet-train.arrow", dst / "corpus-train.arrow")
    got = list(token_rows(tiny_host, TextSource("hf", "tiny/corpus"), 16, 2000, 4))
    assert sum(b.numel() for b in got) == 2000 // 16 * 16
    assert "no column" in _message(lambda: list(token_rows(
        tiny_host, TextSource("hf", "tiny/corpus", column="body"), 16, 1000, 4)))


def _request(tmp_path, text_file, **kw):
    base = dict(hook_name="blocks.1.hook_resid_pre", out_folder=str(tmp_path / "sae"),
                source=TextSource("file", str(text_file)), expansion=4, n_tokens=24_000,
                batch_size=256, lr=3e-3, context_size=32, buffer_batches=8, eval_tokens=2048,
                l1_coefficient=1.0, dead_window=4000)
    base.update(kw)
    return TrainRequest(**base)


def test_training_reduces_the_loss_saves_and_evaluates_exactly(tmp_path, tiny_host, text_file):
    ctx = Context()
    req = _request(tmp_path, text_file)
    result = run_train_sae(tiny_host, req, ctx)
    partials = [p for p in ctx.partials if isinstance(p, TrainProgress)]
    assert partials and partials[-1].step == result.progress.step == 24_000 // 256
    curve = result.progress
    assert curve.mse[-5:].mean() < 0.5 * curve.mse[:3].mean()
    assert (curve.tokens[1:] > curve.tokens[:-1]).all()
    sae = load_sae(result.folder)
    assert sae.cfg.d_sae == 256 and sae.cfg.hook_name == req.hook_name
    assert torch.allclose(sae.W_dec.norm(dim=-1), torch.ones(256), atol=1e-4)
    # the evaluation, recomputed here from the saved SAE on the same held-out rows
    model = tiny_host.model
    rows = torch.cat(list(islice(token_rows(tiny_host, req.source, 32, 10**9, 8), 8)))  # held out
    hook = req.hook_name
    with torch.inference_mode():
        _, cache = model.run_with_cache(rows, names_filter=hook)
        x = cache[hook].reshape(-1, 64)
        f = sae.encode(x)
        x_hat = sae.decode(f)
        ev = 1 - (x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum()

        def ce(logits):
            lp = torch.log_softmax(logits[:, :-1], -1)
            return float(-lp.gather(-1, rows[:, 1:, None]).mean())

        ce_clean = ce(model(rows))
        ce_sae = ce(model.run_with_hooks(rows, fwd_hooks=[(hook, lambda a, hook: sae(a))]))
        ce_zero = ce(model.run_with_hooks(rows, fwd_hooks=[(hook, lambda a, hook: a * 0)]))
    e = result.evaluation
    assert e.n_tokens == rows.numel()
    assert e.explained_variance == pytest.approx(float(ev), abs=1e-4)
    assert e.l0 == pytest.approx(float((f > 0).float().sum(-1).mean()), abs=1e-4)
    assert e.dead_fraction == pytest.approx(float(((f > 0).sum(0) == 0).float().mean()))
    assert (e.ce_clean, e.ce_sae, e.ce_zero) == pytest.approx((ce_clean, ce_sae, ce_zero),
                                                             abs=1e-4)
    assert e.ce_recovered == pytest.approx((ce_zero - ce_sae) / (ce_zero - ce_clean), abs=1e-4)
    assert e.explained_variance > 0.5 and 0 < e.l0 < 256
    assert result.cfg["metadata"]["lensbench_training"]["evaluation"]["l0"] == e.l0


def test_topk_training_keeps_k_features(tmp_path, tiny_host, text_file):
    result = run_train_sae(tiny_host, _request(tmp_path, text_file, architecture="topk", k=6,
                                               n_tokens=8_000), Context())
    assert result.progress.l0.max() <= 6
    assert result.evaluation.l0 <= 6
    assert load_sae(result.folder).cfg.k == 6


def test_training_cancels_between_steps_and_writes_nothing(tmp_path, tiny_host, text_file):
    ctx = Context()
    ctx._on_partial = lambda p: ctx.cancel()
    with pytest.raises(Cancelled):
        run_train_sae(tiny_host, _request(tmp_path, text_file), ctx)
    assert not (tmp_path / "sae").exists()


def test_training_input_errors(tmp_path, tiny_host, text_file):
    def train(**kw):
        return run_train_sae(tiny_host, _request(tmp_path, text_file, **kw), Context())

    msg = _message(lambda: train(lr=500.0, n_tokens=12_000))
    assert "diverged" in msg and "lower the learning rate" in msg
    assert not (tmp_path / "sae").exists()
    assert "supported hooks" in _message(lambda: train(hook_name="blocks.1.ln2.hook_scale"))
    assert "learning rate" in _message(lambda: train(lr=float("nan")))
    assert "k=999" in _message(lambda: train(architecture="topk", k=999))
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    assert "empty" in _message(lambda: train(source=TextSource("file", str(empty))))


def test_training_in_slices_gives_the_same_sae(tmp_path, tiny_host, text_file):
    """The app trains in ~1 s slices so other jobs can run in between; the result must be the
    same as one uninterrupted run."""
    from engine.sae_train import TrainResult, TrainSliceRequest, run_train_slice

    whole = run_train_sae(tiny_host, _request(tmp_path, text_file, n_tokens=8_000), Context())
    req = _request(tmp_path, text_file, n_tokens=8_000, out_folder=str(tmp_path / "sliced"))
    n_slices, out = 0, None
    while not isinstance(out, TrainResult):
        out = run_train_slice(tiny_host, TrainSliceRequest(req, run_id=7, seconds=0.05), Context())
        n_slices += 1
    assert n_slices > 2
    a, b = load_sae(whole.folder), load_sae(out.folder)
    for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
        assert torch.allclose(getattr(a, name), getattr(b, name), atol=1e-6)
    assert out.evaluation.explained_variance == pytest.approx(
        whole.evaluation.explained_variance, abs=1e-6)
    assert "_sae_training" not in tiny_host.__dict__ or not tiny_host.__dict__["_sae_training"]


def _trainer(arch="standard", aux=1 / 32, k=2):
    from engine.sae import SAEConfig, SparseAutoencoder
    from engine.sae_train import _init, _Trainer

    gen = torch.Generator().manual_seed(0)
    cfg = SAEConfig(8, 16, "blocks.0.hook_resid_pre", arch, k if arch == "topk" else 0)
    sae = SparseAutoencoder(cfg, _init(8, 16, gen))
    req = TrainRequest("blocks.0.hook_resid_pre", "unused", architecture=arch, k=k,
                       dead_window=100, aux_coefficient=aux)
    return _Trainer(req, sae, n_steps=10), torch.randn(64, 8, generator=gen)


def test_resampling_reinitialises_dead_features_towards_badly_reconstructed_inputs():
    tr, x = _trainer()
    sae = tr.sae
    tr.step(0, x)  # creates Adam's state
    tr.tokens = 1000
    tr.last_fired[:] = 1000
    tr.last_fired[[3, 7]] = 0  # dead: no activation in the last 1000 >= 100 tokens
    assert tr.dead_mask().nonzero().flatten().tolist() == [3, 7]
    alive_norm = sae.W_enc[:, tr.dead_mask().logical_not()].norm(dim=0).mean()
    assert tr.resample(x) == 2 and tr.resampled == 2
    with torch.no_grad():
        dirs = x - sae.b_dec
        dirs = dirs / dirs.norm(dim=-1, keepdim=True)
        for j in (3, 7):
            assert float((dirs @ sae.W_dec[j]).max()) == pytest.approx(1.0, abs=1e-5)
            assert torch.allclose(sae.W_enc[:, j], sae.W_dec[j] * 0.2 * alive_norm, atol=1e-6)
            assert float(sae.b_enc[j]) == 0.0
            assert float(tr.opt.state[sae.W_dec]["exp_avg"][j].abs().sum()) == 0.0
    assert not tr.dead_mask().any()  # a full window to come alive


def test_topk_auxiliary_loss_trains_dead_features():
    moved = {}
    for aux in (0.0, 1 / 32):
        tr, x = _trainer("topk", aux)
        with torch.no_grad():
            tr.sae.b_enc[8:] = -5.0  # features 8-15 never make the top k ...
        tr.tokens = 1000
        tr.last_fired[:] = 1000
        tr.last_fired[8:] = 0  # ... and count as dead
        with torch.no_grad():
            assert not bool((tr.sae._activate(tr.sae.hidden_pre(x))[:, 8:] > 0).any())
        before = tr.sae.W_enc.detach().clone()
        tr.step(0, x)
        moved[aux] = float((tr.sae.W_enc.detach()[:, 8:] - before[:, 8:]).abs().sum())
    assert moved[0.0] == 0.0  # nothing else trains a feature that never fires
    assert moved[1 / 32] > 0  # the auxiliary loss does
