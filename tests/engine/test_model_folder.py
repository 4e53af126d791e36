"""Hostile model folders are refused before anything is built; every real family still passes."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import pytest

from engine.errors import ModelLoadError
from engine.model_folder import check_sizes, tensor_shapes, validate_folder, weight_files
from engine.model_sources import ModelSpec, check_spec


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _set_config(folder: Path, **changes) -> None:
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))


@pytest.fixture(scope="module")
def family_folders(tmp_path_factory):
    """One tiny folder per architecture family (tests/model_matrix.py), sharing one tokenizer."""
    from tests.model_fixtures import make_tokenizer
    from tests.model_matrix import FAMILIES, make_family_folder

    tokenizer = tmp_path_factory.mktemp("tok")
    make_tokenizer(tokenizer)
    return {f: make_family_folder(f, tmp_path_factory.mktemp(f), tokenizer_dir=tokenizer)
            for f in FAMILIES}


def test_no_real_family_is_refused(family_folders):
    for family, folder in family_folders.items():
        validate_folder(folder)  # raw config keys (n_layer, num_layers, d_model, ...)
        check_sizes(folder)  # AutoConfig's num_hidden_layers / hidden_size
        assert weight_files(folder) == [folder / "model.safetensors"], family


def test_bundled_model_passes():
    check_spec(ModelSpec())


def test_decoy_safetensors_beside_pickle_is_refused(tmp_path, tiny_gpt2_dir):
    folder = _copy(tiny_gpt2_dir, tmp_path / "m")
    (folder / "model.safetensors").rename(folder / "decoy.safetensors")
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04pickle")
    with pytest.raises(ModelLoadError, match="only pickled weights.*decoy.safetensors"):
        validate_folder(folder)


def test_sharded_index_is_checked(tmp_path, tiny_gpt2_dir):
    folder = _copy(tiny_gpt2_dir, tmp_path / "m")
    (folder / "model.safetensors").rename(folder / "model-00001-of-00001.safetensors")
    names = list(tensor_shapes([folder / "model-00001-of-00001.safetensors"]))
    index = {"weight_map": {n: "model-00001-of-00001.safetensors" for n in names}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    assert weight_files(folder) == [folder / "model-00001-of-00001.safetensors"]
    validate_folder(folder)
    for bad, message in (("../../etc/passwd.safetensors", "outside the folder"),
                         ("/etc/x.safetensors", "outside the folder"),
                         ("pytorch_model.bin", "not in safetensors"),
                         ("missing.safetensors", "is missing")):
        index["weight_map"][names[0]] = bad
        (folder / "model.safetensors.index.json").write_text(json.dumps(index))
        with pytest.raises(ModelLoadError, match=message):
            validate_folder(folder)


@pytest.mark.parametrize("changes, message", [
    ({"n_layer": 100000}, "100000 layers; Lensbench accepts 1 to 1024"),
    ({"n_layer": 7}, "declares 7 layers but the weights have 2"),
    ({"n_embd": 10**6}, "hidden size"),
    ({"n_embd": 96}, "hidden size 96 but no weight has that dimension"),
    ({"n_layer": "2"}, "layers"),
    ({"n_layer": 10**40}, "layers"),
])
def test_config_sizes_must_match_the_weights(tmp_path, tiny_gpt2_dir, changes, message):
    folder = _copy(tiny_gpt2_dir, tmp_path / "m")
    _set_config(folder, **changes)
    with pytest.raises(ModelLoadError, match=message):
        validate_folder(folder)


def test_absurd_config_is_refused_by_autoconfig_sizes(tmp_path, tiny_gpt2_dir):
    """The worker's check maps key names with AutoConfig (here num_hidden_layers for GPT-2)."""
    folder = _copy(tiny_gpt2_dir, tmp_path / "m")
    _set_config(folder, n_layer=9)
    with pytest.raises(ModelLoadError, match="9 layers but the weights have 2"):
        check_sizes(folder)


def test_special_files_are_refused_without_reading(tmp_path, tiny_gpt2_dir):
    folder = _copy(tiny_gpt2_dir, tmp_path / "m")
    (folder / "config.json").unlink()
    (folder / "config.json").symlink_to("/dev/zero")
    with pytest.raises(ModelLoadError, match="not a regular file"):
        validate_folder(folder)
    (folder / "config.json").unlink()
    os.mkfifo(folder / "config.json")  # would block a plain read forever
    with pytest.raises(ModelLoadError, match="not a regular file"):
        validate_folder(folder)


@pytest.mark.parametrize("spec, message", [
    (ModelSpec("folder", "/etc"), "no config.json"),
    (ModelSpec("folder", os.path.relpath("/etc")), "no config.json"),  # ../../etc from here
    (ModelSpec("folder", "https://evil.example/model"), "web address"),
    (ModelSpec("hf", "https://evil.example/model"), "not a Hugging Face model name"),
    (ModelSpec("hf", "../../etc"), "not a Hugging Face model name"),
    (ModelSpec("hf", "surely-not-a-model-name-xyz"), "Unknown model name"),
    (ModelSpec("hf", "someorg/uncached-model"), "not in the Hugging Face cache"),
    (ModelSpec("bundled", "other"), "Unknown bundled model"),
    (ModelSpec("nope"), "Unknown model source"),
    (ModelSpec(device="tpu"), "Unknown device"),
    (ModelSpec(dtype="int4"), "Unknown dtype"),
    (ModelSpec(n_devices=0), "device count"),
    (ModelSpec("folder", "x" * 4000), "does not exist"),
    (ModelSpec("folder", "x" * 100_000), "too long"),
])
def test_check_spec_refuses_without_loading(spec, message):
    with pytest.raises(ModelLoadError, match=message) as info:
        check_spec(spec)
    assert len(info.value.message) < 400  # names from a file are clipped


def test_pickle_only_folder_is_refused(tmp_path, tiny_gpt2_dir):
    folder = _copy(tiny_gpt2_dir, tmp_path / "m")
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04pickle")
    with pytest.raises(ModelLoadError, match="only pickled"):
        check_spec(ModelSpec("folder", str(folder)))


def test_load_passes_use_safetensors(tmp_path, tiny_gpt2_dir, monkeypatch):
    """With model.safetensors present and a pickle beside it, transformers is told to use only
    safetensors (a .bin that would be unpickled makes the load fail instead)."""
    import transformers

    from engine.host import load_host

    seen = {}
    real = transformers.GPT2LMHeadModel.from_pretrained.__func__

    def spy(cls, name, *args, **kwargs):
        seen.update(kwargs)
        return real(cls, name, *args, **kwargs)

    monkeypatch.setattr(transformers.GPT2LMHeadModel, "from_pretrained", classmethod(spy))
    folder = _copy(tiny_gpt2_dir, tmp_path / "m")
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04not really")
    host = load_host(ModelSpec("folder", str(folder), "cpu"))
    assert seen.get("use_safetensors") is True
    assert host.model.cfg.n_layers == 2


def test_parameter_count_reads_only_the_models_own_files(tmp_path, tiny_gpt2_dir):
    from engine.param_count import safetensors_parameter_count

    folder = _copy(tiny_gpt2_dir, tmp_path / "m")
    expected = sum(math.prod(s) for s in
                   tensor_shapes([folder / "model.safetensors"]).values())
    os.mkfifo(folder / "stray.safetensors")  # opening it would block the worker forever
    assert safetensors_parameter_count(folder) == expected > 100_000
