"""The SAE type, SAELens folders and splicing, checked against direct computations."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from engine.errors import InputError
from engine.sae import SAEConfig, SparseAutoencoder, check_fits
from engine.sae_io import config_to_dict, get_sae, load_sae, save_sae
from engine.sae_splice import FeatureEdit, edit_hook, reconstruction_hook


def random_weights(d_in: int, d_sae: int, seed: int = 0, jump: bool = False) -> dict:
    g = torch.Generator().manual_seed(seed)
    w = {"W_enc": torch.randn(d_in, d_sae, generator=g) * 0.3,
         "b_enc": torch.randn(d_sae, generator=g) * 0.1,
         "W_dec": torch.randn(d_sae, d_in, generator=g) * 0.3,
         "b_dec": torch.randn(d_in, generator=g) * 0.1}
    if jump:
        w["threshold"] = torch.rand(d_sae, generator=g) * 0.5
    return w


def direct_encode(x, w, arch="standard", k=0, rescale=False, apply_b_dec=True):
    pre = (x - w["b_dec"] * apply_b_dec) @ w["W_enc"] + w["b_enc"]
    if arch == "standard":
        return torch.clamp(pre, min=0)
    if arch == "jumprelu":
        return torch.where(pre > w["threshold"], torch.clamp(pre, min=0), torch.zeros_like(pre))
    ranked = pre * w["W_dec"].norm(dim=-1) if rescale else pre
    out = torch.zeros_like(pre)
    idx = ranked.topk(k, dim=-1).indices
    return out.scatter(-1, idx, ranked.gather(-1, idx).clamp(min=0))


@pytest.mark.parametrize("arch,k,rescale", [("standard", 0, False), ("topk", 5, False),
                                            ("topk", 5, True), ("jumprelu", 0, False)])
def test_encode_decode_match_direct_computation(arch, k, rescale):
    d_in, d_sae = 16, 48
    w = random_weights(d_in, d_sae, jump=arch == "jumprelu")
    cfg = SAEConfig(d_in, d_sae, "blocks.0.hook_resid_pre", arch, k,
                    rescale_acts_by_decoder_norm=rescale)
    sae = SparseAutoencoder(cfg, w)
    x = torch.randn(3, 7, d_in)
    f = sae.encode(x)
    want = direct_encode(x, w, arch, k, rescale)
    assert torch.allclose(f, want, atol=1e-6)
    assert (f > 0).sum(-1).max() <= (k if arch == "topk" else d_sae)
    if arch == "jumprelu":
        assert ((f > 0) <= (f > w["threshold"])).all()
    dec = want / w["W_dec"].norm(dim=-1) if rescale else want
    assert torch.allclose(sae.decode(f), dec @ w["W_dec"] + w["b_dec"], atol=1e-5)


@pytest.mark.parametrize("norm", ["constant_norm_rescale", "layer_norm"])
def test_normalised_inputs_are_undone_after_decoding(norm):
    d_in, d_sae = 16, 32
    w = random_weights(d_in, d_sae, 1)
    sae = SparseAutoencoder(SAEConfig(d_in, d_sae, "blocks.0.hook_resid_pre",
                                      normalize_activations=norm), w)
    x = torch.randn(5, d_in) * 7 + 2
    if norm == "constant_norm_rescale":
        c = d_in ** 0.5 / x.norm(dim=-1, keepdim=True)
        f = direct_encode(x * c, w)
        want = (f @ w["W_dec"] + w["b_dec"]) / c
    else:
        mu, std = x.mean(-1, keepdim=True), (x - x.mean(-1, keepdim=True)).std(-1, keepdim=True)
        f = direct_encode((x - mu) / (std + 1e-5), w)
        want = (f @ w["W_dec"] + w["b_dec"]) * std + mu
    assert torch.allclose(sae.encode(x), f, atol=1e-5)
    assert torch.allclose(sae(x), want, atol=1e-4)


# -- SAELens folders ---------------------------------------------------------------------------
def saelens6_cfg(d_in, d_sae, hook, arch="standard", **extra):
    """What SAELens 6's ``SAE.save_model`` writes (``cfg.to_dict()``): fields of its test of
    ``load_sae_config_from_huggingface('gpt2-small-res-jb')``."""
    cfg = {"d_in": d_in, "d_sae": d_sae, "dtype": "float32", "device": "cpu",
           "apply_b_dec_to_input": True, "normalize_activations": "none",
           "reshape_activations": "hook_z" if "hook_z" in hook else "none",
           "metadata": {"model_name": "tiny-gpt2", "hook_name": hook, "hook_head_index": None,
                        "context_size": 64, "model_from_pretrained_kwargs": {},
                        "neuronpedia_id": None, "prepend_bos": True,
                        "dataset_path": "Skylion007/openwebtext", "sae_lens_version": "6.18.0",
                        "sae_lens_training_version": "6.18.0"},
           "architecture": arch}
    cfg.update(extra)
    return cfg


def write_saelens_folder(folder, cfg: dict, weights: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in weights.items()}, str(folder / "sae_weights.safetensors"))
    (folder / "cfg.json").write_text(json.dumps(cfg))


def test_saelens6_folder_loads_to_the_same_weights(tmp_path):
    w = random_weights(64, 256, 3)
    write_saelens_folder(tmp_path / "sae", saelens6_cfg(64, 256, "blocks.1.hook_resid_pre"), w)
    sae = load_sae(tmp_path / "sae")
    assert sae.cfg.hook_name == "blocks.1.hook_resid_pre" and sae.cfg.architecture == "standard"
    assert sae.cfg.model_name == "tiny-gpt2" and sae.cfg.context_size == 64
    for name, t in w.items():
        assert torch.equal(getattr(sae, name).detach(), t), name


def test_pre_6_saelens_configs_load(tmp_path):
    """Old releases (e.g. gpt2-small-res-jb) use hook_point and activation_fn_str; old TopK ones
    put k in activation_fn_kwargs."""
    w = random_weights(64, 128, 4)
    old = {"model_name": "gpt2-small", "hook_point": "blocks.0.hook_mlp_out", "hook_point_layer": 0,
           "hook_point_head_index": None, "dataset_path": "Skylion007/openwebtext",
           "is_dataset_tokenized": False, "context_size": 128, "d_in": 64, "d_sae": 128,
           "dtype": "torch.float32", "device": "cuda", "expansion_factor": 2,
           "l1_coefficient": 8e-05, "lr": 0.0004, "activation_fn_str": "relu",
           "normalize_activations": False}
    write_saelens_folder(tmp_path / "old", old, w)
    sae = load_sae(tmp_path / "old")
    assert (sae.cfg.hook_name, sae.cfg.architecture, sae.cfg.normalize_activations) == (
        "blocks.0.hook_mlp_out", "standard", "none")
    assert torch.equal(sae.W_enc.detach(), w["W_enc"])
    topk = dict(old, activation_fn_str="topk", activation_fn_kwargs={"k": 7})
    write_saelens_folder(tmp_path / "topk", topk, w)
    sae = load_sae(tmp_path / "topk")
    assert sae.cfg.architecture == "topk" and sae.cfg.k == 7


def test_jumprelu_with_log_threshold(tmp_path):
    w = random_weights(64, 128, 5, jump=True)
    stored = {k: v for k, v in w.items() if k != "threshold"}
    stored["log_threshold"] = w["threshold"].log()
    write_saelens_folder(tmp_path / "j", saelens6_cfg(64, 128, "blocks.0.hook_resid_post",
                                                      "jumprelu"), stored)
    sae = load_sae(tmp_path / "j")
    assert torch.allclose(sae.threshold.detach(), w["threshold"], rtol=1e-6)


def test_saved_folder_is_saelens6_and_round_trips(tmp_path):
    w = random_weights(64, 96, 6)
    cfg = SAEConfig(64, 96, "blocks.1.attn.hook_z", "topk", 8, reshape_activations="hook_z",
                    model_name="tiny")
    save_sae(SparseAutoencoder(cfg, w), tmp_path / "out", torch.full((96,), -2.0))
    data = json.loads((tmp_path / "out" / "cfg.json").read_text())
    assert data["metadata"]["hook_name"] == "blocks.1.attn.hook_z"
    assert data["metadata"]["sae_lens_version"] >= "6"  # SAELens reads it as a 6.x config
    assert data["architecture"] == "topk" and data["k"] == 8
    assert data == config_to_dict(cfg)
    back = load_sae(tmp_path / "out")
    assert back.cfg == cfg
    for name, t in w.items():
        assert torch.equal(getattr(back, name).detach(), t)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "cfg.json", "sae_weights.safetensors", "sparsity.safetensors"]


# -- bad folders --------------------------------------------------------------------------------
def _message(fn) -> str:
    with pytest.raises(InputError) as info:
        fn()
    return (info.value.message + " " + info.value.hint).lower()


def test_bad_folders_get_clear_messages(tmp_path):
    w = random_weights(64, 128, 7)
    good = saelens6_cfg(64, 128, "blocks.0.hook_resid_pre")
    assert "no cfg.json" in _message(lambda: load_sae(tmp_path))
    # a release root: says which SAE folders it holds
    write_saelens_folder(tmp_path / "release" / "blocks.0.hook_resid_pre", good, w)
    assert "blocks.0.hook_resid_pre" in _message(lambda: load_sae(tmp_path / "release"))
    # pickled weights are refused, never opened
    pk = tmp_path / "pickled"
    pk.mkdir()
    (pk / "cfg.json").write_text(json.dumps(good))
    torch.save(w, pk / "sae_weights.pt")
    assert "pickled" in _message(lambda: load_sae(pk))
    torch.save(w, pk / "sae_weights.safetensors")  # a pickle under a safetensors name
    assert "pickled" in _message(lambda: load_sae(pk))
    # truncated / corrupt
    cor = tmp_path / "corrupt"
    write_saelens_folder(cor, good, w)
    raw = (cor / "sae_weights.safetensors").read_bytes()
    (cor / "sae_weights.safetensors").write_bytes(raw[: len(raw) // 2])
    assert "corrupt" in _message(lambda: load_sae(cor))
    (cor / "sae_weights.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json!!!}")
    assert "corrupt" in _message(lambda: load_sae(cor))
    # config and weights that do not belong together
    mis = tmp_path / "mismatch"
    write_saelens_folder(mis, saelens6_cfg(32, 128, "blocks.0.hook_resid_pre"), w)
    assert "shape" in _message(lambda: load_sae(mis))
    # NaN weights
    nan = tmp_path / "nan"
    write_saelens_folder(nan, good, dict(w, W_dec=w["W_dec"].clone().fill_(float("nan"))))
    assert "nan" in _message(lambda: load_sae(nan))
    # unsupported architectures / configs
    gated = tmp_path / "gated"
    write_saelens_folder(gated, dict(good, architecture="gated"), w)
    assert "gated" in _message(lambda: load_sae(gated))
    bad_json = tmp_path / "badjson"
    write_saelens_folder(bad_json, good, w)
    (bad_json / "cfg.json").write_text("{")
    assert "json" in _message(lambda: load_sae(bad_json))


def test_sae_must_fit_the_model(tmp_path, tiny_host):
    info = tiny_host.info  # 2 layers, d_model 64, d_mlp 256, 4 heads x 16
    w = random_weights(64, 128, 8)
    fits = SAEConfig(64, 128, "blocks.1.hook_resid_pre")
    check_fits(fits, info)
    check_fits(SAEConfig(256, 128, "blocks.0.mlp.hook_post"), info)
    check_fits(SAEConfig(64, 128, "blocks.0.attn.hook_z", reshape_activations="hook_z"), info)
    wide = _message(lambda: check_fits(SAEConfig(768, 128, "blocks.1.hook_resid_pre",
                                                 model_name="gpt2-small"), info))
    assert "d_in=768" in wide and "gpt2-small" in wide
    assert "2 layers" in _message(lambda: check_fits(SAEConfig(64, 128,
                                                                "blocks.5.hook_resid_pre"), info))
    assert "supported hooks" in _message(lambda: check_fits(
        SAEConfig(64, 128, "blocks.0.ln1.hook_normalized"), info))
    folder = tmp_path / "wrong"
    write_saelens_folder(folder, saelens6_cfg(64, 128, "blocks.3.hook_resid_pre"), w)
    assert "layers" in _message(lambda: get_sae(tiny_host, folder))


# -- splicing ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_sae_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sae") / "tiny-res1"
    w = random_weights(64, 192, 9)
    w["W_enc"] = w["W_enc"] * 0.5
    write_saelens_folder(folder, saelens6_cfg(64, 192, "blocks.1.hook_resid_pre"), w)
    return folder


@torch.inference_mode()
def test_reconstruction_splice_equals_a_direct_hook(tiny_host, tiny_sae_folder):
    model = tiny_host.model
    loaded = get_sae(tiny_host, tiny_sae_folder)
    w = {k: v.detach() for k, v in loaded.sae.named_parameters()}
    tokens = model.to_tokens("When John and Mary went to the store, John gave a drink to")
    hook = "blocks.1.hook_resid_pre"

    def direct(act, hook=None):
        return direct_encode(act, w) @ w["W_dec"] + w["b_dec"]

    want = model.run_with_hooks(tokens, fwd_hooks=[(hook, direct)])
    got = model.run_with_hooks(tokens, fwd_hooks=[(hook, reconstruction_hook(loaded.sae))])
    assert torch.allclose(got, want, atol=1e-4)
    clean = model(tokens)
    assert not torch.allclose(got, clean, atol=1e-2)  # a random SAE does change the output
    kept = model.run_with_hooks(tokens, fwd_hooks=[(hook, edit_hook(loaded.sae, ()))])
    assert torch.equal(kept, clean)  # the error term keeps the run exactly the model's own


@torch.inference_mode()
def test_steering_and_ablation_equal_a_hook_adding_the_vector(tiny_host, tiny_sae_folder):
    model = tiny_host.model
    sae = get_sae(tiny_host, tiny_sae_folder).sae
    tokens = model.to_tokens("The Eiffel Tower is in Paris. The cat sat on the mat.")
    hook = "blocks.1.hook_resid_pre"
    w_dec = sae.W_dec.detach()
    _, cache = model.run_with_cache(tokens, names_filter=hook)
    f = direct_encode(cache[hook], {k: v.detach() for k, v in sae.named_parameters()})
    feature = int(f[0].sum(0).argmax())  # a feature that fires on this prompt
    assert f[0, :, feature].max() > 0

    def adds(vector):
        def fn(act, hook=None):
            return act + vector
        return fn

    steer = model.run_with_hooks(tokens, fwd_hooks=[(hook, edit_hook(
        sae, (FeatureEdit(feature, "steer", 4.0),)))])
    want = model.run_with_hooks(tokens, fwd_hooks=[(hook, adds(4.0 * w_dec[feature]))])
    assert torch.allclose(steer, want, atol=1e-5)
    ablate = model.run_with_hooks(tokens, fwd_hooks=[(hook, edit_hook(
        sae, (FeatureEdit(feature, "ablate"),)))])
    want = model.run_with_hooks(tokens, fwd_hooks=[(hook, adds(
        -f[0, :, feature, None] * w_dec[feature]))])
    assert torch.allclose(ablate, want, atol=1e-5)
    assert not torch.allclose(ablate, model(tokens), atol=1e-3)
    clamp = model.run_with_hooks(tokens, fwd_hooks=[(hook, edit_hook(
        sae, (FeatureEdit(feature, "clamp", 2.5, (3, 5)),)))])
    delta = torch.zeros_like(cache[hook])
    for p in (3, 5):
        delta[0, p] = (2.5 - f[0, p, feature]) * w_dec[feature]
    want = model.run_with_hooks(tokens, fwd_hooks=[(hook, adds(delta))])
    assert torch.allclose(clamp, want, atol=1e-5)


@torch.inference_mode()
def test_z_and_neuron_saes_splice_in_their_hook_shapes(tiny_host, tmp_path):
    model = tiny_host.model
    tokens = model.to_tokens("Alice and Bob walked to the park")
    for hook, d_in in (("blocks.0.attn.hook_z", 64), ("blocks.1.mlp.hook_post", 256)):
        folder = tmp_path / hook
        w = random_weights(d_in, 96, 10)
        write_saelens_folder(folder, saelens6_cfg(d_in, 96, hook), w)
        sae = get_sae(tiny_host, folder).sae
        _, cache = model.run_with_cache(tokens, names_filter=hook)
        act = cache[hook]
        flat = act.flatten(-2) if act.ndim == 4 else act
        want = (direct_encode(flat, w) @ w["W_dec"] + w["b_dec"]).reshape(act.shape)
        assert torch.allclose(sae.reconstruct_act(act), want, atol=1e-5)
        edit = edit_hook(sae, (FeatureEdit(3, "steer", 1.5),))
        assert torch.allclose(edit(act), act + (1.5 * w["W_dec"][3]).reshape(act.shape[2:]),
                              atol=1e-5)
        out = model.run_with_hooks(tokens, fwd_hooks=[(hook, reconstruction_hook(sae))])
        assert np.isfinite(out.numpy()).all()
