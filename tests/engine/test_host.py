"""Loading models: local folders, the HF cache by name (offline), and hostile folders."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from engine.errors import ModelLoadError
from engine.host import load_host
from engine.jobs import Cancelled, Context
from engine.model_sources import ModelSpec
from tests.model_fixtures import make_fake_hf_cache


def test_folder_load_reports_shape_and_params(tiny_host, tiny_gpt2_dir):
    from transformers import GPT2LMHeadModel

    info = tiny_host.info
    assert (info.n_layers, info.n_heads, info.d_model, info.n_ctx) == (2, 4, 64, 64)
    # The checkpoint's count (tied W_U once, fused QKV once), not the bridge's processed copies.
    expected = GPT2LMHeadModel.from_pretrained(str(tiny_gpt2_dir)).num_parameters()
    assert info.n_params == expected > 0
    assert info.device == "cpu" and info.dtype == "float32"
    assert info.load_seconds > 0 and info.memory_bytes > 0
    assert not info.is_gqa


def test_logits_match_hf_eager(tiny_gpt2_dir, tiny_host):
    """Compatibility mode centres the unembedding, so compare log-probabilities."""
    from transformers import GPT2LMHeadModel

    hf = GPT2LMHeadModel.from_pretrained(str(tiny_gpt2_dir), attn_implementation="eager").eval()
    tokens = tiny_host.model.to_tokens("When John and Mary went to the store, John gave")
    with torch.no_grad():
        ours = torch.log_softmax(tiny_host.model(tokens), -1)
        theirs = torch.log_softmax(hf(tokens).logits, -1)
    assert ours.shape == theirs.shape
    assert torch.allclose(ours, theirs, atol=1e-4), (ours - theirs).abs().max()


def test_load_by_name_from_fake_hf_cache(tmp_path, monkeypatch, tiny_gpt2_dir):
    cache = tmp_path / "hub"
    make_fake_hf_cache(cache, "openai-community/gpt2", tiny_gpt2_dir)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr("engine.model_sources.hub_reachable",
                        lambda timeout=3.0: pytest.fail("must not touch the network"))
    ctx = Context()
    host = load_host(ModelSpec("hf", "gpt2-small", "cpu"), ctx)
    assert host.info.name == "gpt2-small"
    assert host.info.n_layers == 2
    assert ctx.last_progress[0] == 1.0


def test_uncached_name_offline_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.setattr("engine.model_sources.hub_reachable", lambda timeout=3.0: False)
    with pytest.raises(ModelLoadError) as err:
        load_host(ModelSpec("hf", "gpt2-small", "cpu"))
    assert "not in the Hugging Face cache" in err.value.message
    from engine.model_sources import download_command

    assert f"`{download_command('gpt2')}`" in err.value.hint  # `hf download gpt2` today


def test_unknown_name_is_a_clear_error():
    with pytest.raises(ModelLoadError, match="Unknown model name 'no-such-model'"):
        load_host(ModelSpec("hf", "no-such-model", "cpu"))


@pytest.mark.parametrize("damage, message", [
    ("no_config", "has no config.json"),
    ("bad_json", "is not valid JSON"),
    ("remote_code", "needs trust_remote_code"),
    ("no_weights", "has no model weights"),
    ("pickle_only", "only pickled weights"),
    ("truncated", "not a valid safetensors file"),
    ("no_tokenizer", "has no tokenizer files"),
])
def test_hostile_folders_are_refused_clearly(tmp_path, tiny_gpt2_dir, damage, message):
    folder = tmp_path / "m"
    shutil.copytree(tiny_gpt2_dir, folder)
    weights = folder / "model.safetensors"
    if damage == "no_config":
        (folder / "config.json").unlink()
    elif damage == "bad_json":
        (folder / "config.json").write_text("{not json")
    elif damage == "remote_code":
        cfg = json.loads((folder / "config.json").read_text())
        cfg["auto_map"] = {"AutoModelForCausalLM": "evil.Model"}
        (folder / "config.json").write_text(json.dumps(cfg))
    elif damage == "no_weights":
        weights.unlink()
    elif damage == "pickle_only":
        weights.rename(folder / "pytorch_model.bin")
    elif damage == "truncated":
        weights.write_bytes(weights.read_bytes()[:100])
    elif damage == "no_tokenizer":
        for f in folder.glob("*token*"):
            f.unlink()
        for f in ("vocab.json", "merges.txt"):
            (folder / f).unlink(missing_ok=True)
    with pytest.raises(ModelLoadError, match=message):
        load_host(ModelSpec("folder", str(folder), "cpu"))


def test_cancel_during_load_raises_cancelled(tiny_gpt2_dir):
    ctx = Context()
    ctx.cancel()
    with pytest.raises(Cancelled):
        load_host(ModelSpec("folder", str(tiny_gpt2_dir), "cpu"), ctx)


def test_missing_device_is_explained(tiny_gpt2_dir):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ModelLoadError, match="no CUDA GPU"):
        load_host(ModelSpec("folder", str(tiny_gpt2_dir), "cuda"))


def test_spec_parse(tmp_path):
    assert ModelSpec.parse(None).source == "bundled"
    assert ModelSpec.parse(str(tmp_path)).source == "folder"
    assert ModelSpec.parse("gpt2-small") == ModelSpec("hf", "gpt2-small")


def test_download_reports_progress_to_the_job(monkeypatch, tmp_path, tiny_gpt2_dir):
    """When online and not cached, huggingface_hub drives our tqdm class: progress reaches ctx."""
    import huggingface_hub

    from engine import model_sources

    def fake_snapshot_download(repo, cache_dir=None, allow_patterns=None, tqdm_class=None,
                               local_files_only=False):
        if local_files_only:
            raise FileNotFoundError(repo)
        bar = tqdm_class(total=1000, disable=True)
        for _ in range(4):
            bar.update(250)
        bar.close()
        return str(tiny_gpt2_dir)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    monkeypatch.setattr(model_sources, "hub_reachable", lambda timeout=3.0: True)
    seen = []
    ctx = Context(on_progress=lambda f, m: seen.append((f, m)))
    host = load_host(ModelSpec("hf", "gpt2", "cpu"), ctx)
    downloads = [f for f, m in seen if m.startswith("Downloading gpt2")]
    assert downloads and abs(downloads[-1] - 0.8) < 1e-9 and downloads == sorted(downloads)
    assert host.info.n_layers == 2
