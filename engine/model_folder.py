"""Checks on a local model folder before anything builds a model from it.

Every folder is hostile. Only the model's own safetensors weights count (``model.safetensors``,
or the shards that ``model.safetensors.index.json`` lists inside the folder): a stray
``decoy.safetensors`` beside a pickled ``pytorch_model.bin`` must not pass, or transformers would
unpickle the .bin. The sizes config.json declares are compared with the weights' headers (shapes
only, no data), so an absurd config cannot make the load build a model of 100000 layers.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from engine.errors import ModelLoadError
from engine.safe_files import UnsafeFile, clip, read_regular_file, regular_file_size

MAX_CONFIG_BYTES = 2_000_000
MAX_INDEX_BYTES = 50_000_000
MAX_LAYERS = 1024
MAX_HIDDEN = 131_072
WEIGHTS = "model.safetensors"
INDEX = "model.safetensors.index.json"
LAYER_KEYS = ("num_hidden_layers", "n_layer", "n_layers", "num_layers")
HIDDEN_KEYS = ("hidden_size", "n_embd", "d_model")
_LAYER_RE = re.compile(r"(?:^|\.)(?:h|layers|layer|blocks|block)\.(\d+)\.")
_CORRUPT = "The model folder is corrupt; download or copy it again."


def read_json(path: Path, max_bytes: int = MAX_CONFIG_BYTES) -> dict:
    """A JSON object from a regular file of at most ``max_bytes``; ModelLoadError otherwise."""
    name = clip(path.name, 80)
    try:
        raw = read_regular_file(path, max_bytes)
    except UnsafeFile as exc:
        raise ModelLoadError(str(exc), "This does not look like a model folder.") from None
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        detail = "nested too deeply" if isinstance(exc, RecursionError) else clip(exc, 120)
        raise ModelLoadError(f"{name} in {clip(path.parent, 120)} is not valid JSON: {detail}",
                             _CORRUPT) from None
    if not isinstance(data, dict):
        raise ModelLoadError(f"{name} does not hold a JSON object.", _CORRUPT)
    return data


def validate_folder(folder: Path) -> dict:
    """Check a model folder before anything reads its weights; return its config."""
    folder = Path(folder)
    where = clip(folder, 160)
    if not (folder / "config.json").exists():
        raise ModelLoadError(f"{where} has no config.json.",
                             "A model folder holds config.json, model.safetensors and tokenizer "
                             "files, as saved by transformers' save_pretrained().")
    config = read_json(folder / "config.json")
    if "auto_map" in config:
        raise ModelLoadError(
            f"{clip(folder.name, 80)} needs trust_remote_code: it ships its own Python code.",
            "Lensbench never runs code from a model folder. Use a model whose architecture "
            "transformers supports natively.",
        )
    if not config.get("architectures") and not config.get("model_type"):
        raise ModelLoadError(f"config.json in {where} names no architecture.",
                             "The model folder is corrupt or not a transformers model.")
    shapes = tensor_shapes(weight_files(folder))
    compare_sizes(_raw_size(config, LAYER_KEYS), _raw_size(config, HIDDEN_KEYS), shapes, folder)
    has_tokenizer = any(_is_file(folder / f) for f in
                        ("tokenizer.json", "vocab.json", "tokenizer.model", "tokenizer_config.json"))
    if not has_tokenizer:
        raise ModelLoadError(f"{where} has no tokenizer files.",
                             "Copy tokenizer.json (and tokenizer_config.json) into the folder.")
    return config


def _is_file(path: Path) -> bool:
    try:
        regular_file_size(path)
    except UnsafeFile:
        return False
    return True


def weight_files(folder: Path) -> list[Path]:
    """The model's own safetensors files: model.safetensors, or every shard its index lists."""
    folder = Path(folder)
    if (folder / WEIGHTS).exists():
        _check_regular(folder / WEIGHTS)
        return [folder / WEIGHTS]
    if (folder / INDEX).exists():
        index = read_json(folder / INDEX, MAX_INDEX_BYTES)
        weight_map = index.get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise ModelLoadError(f"{INDEX} in {clip(folder.name, 80)} has no weight_map.",
                                 _CORRUPT)
        shards: list[Path] = []
        for shard in dict.fromkeys(weight_map.values()):
            if (not isinstance(shard, str) or not shard.endswith(".safetensors")
                    or Path(shard).name != shard or shard in (".", "..") or "\\" in shard):
                raise ModelLoadError(f"{INDEX} names a shard outside the folder or not in "
                                     f"safetensors format ({clip(shard, 80)!r}).",
                                     "Lensbench loads only safetensors files inside the folder.")
            path = folder / shard
            if not path.exists():
                raise ModelLoadError(f"The shard {clip(shard, 80)} listed in {INDEX} is missing.",
                                     "Copy the complete model folder.")
            _check_regular(path)
            shards.append(path)
        return shards
    pickles = [p.name for p in folder.glob("*") if p.suffix in (".bin", ".pt", ".pth", ".ckpt")]
    others = [p.name for p in folder.glob("*.safetensors")]
    if pickles:
        raise ModelLoadError(
            f"{clip(folder.name, 80)} has only pickled weights ({clip(pickles[0], 80)})"
            + (f"; {clip(others[0], 80)} is not the model's weights file." if others else "."),
            "Pickle files can run code, so Lensbench loads safetensors only: model.safetensors "
            "or the shards of model.safetensors.index.json. Convert them with transformers "
            "(model.save_pretrained(folder, safe_serialization=True)).",
        )
    raise ModelLoadError(f"{clip(folder, 160)} has no model weights (model.safetensors).",
                         "Copy the complete model folder.")


def _check_regular(path: Path) -> None:
    try:
        regular_file_size(path)
    except UnsafeFile as exc:
        raise ModelLoadError(str(exc), _CORRUPT) from None


def tensor_shapes(files: list[Path]) -> dict[str, tuple[int, ...]]:
    """Every tensor's shape from the safetensors headers (the library reads headers only)."""
    from safetensors import safe_open

    shapes: dict[str, tuple[int, ...]] = {}
    for path in files:
        try:
            if regular_file_size(path) < 16:
                raise ValueError("too short")
            with safe_open(str(path), framework="numpy") as f:
                for key in f.keys():
                    shapes[key] = tuple(int(d) for d in f.get_slice(key).get_shape())
        except Exception as exc:
            raise ModelLoadError(f"{clip(path.name, 80)} is not a valid safetensors file "
                                 f"({clip(exc, 160)}).",
                                 "The weights are corrupt or truncated; download or copy them "
                                 "again.") from None
    if not shapes:
        raise ModelLoadError("The model's safetensors files hold no tensors.", _CORRUPT)
    return shapes


def _raw_size(config: dict, keys: tuple[str, ...]) -> object:
    """A size as config.json spells it (families name them differently); text_config first for
    multimodal checkpoints, whose language model is what is loaded."""
    for cfg in (config.get("text_config"), config):
        if isinstance(cfg, dict):
            for key in keys:
                if key in cfg:
                    return cfg[key]
    return None


def compare_sizes(n_layers: object, hidden: object, shapes: dict[str, tuple[int, ...]],
                  folder: Path) -> None:
    """Refuse a config whose sizes are absurd or that the weights do not have."""
    name = clip(Path(folder).name, 80)
    hint = ("config.json does not describe these weights; building the model would take "
            "minutes and gigabytes. Copy the folder's config.json again.")
    for label, value, bound in (("layers", n_layers, MAX_LAYERS),
                                ("hidden size", hidden, MAX_HIDDEN)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= bound:
            raise ModelLoadError(f"config.json in {name} declares {clip(value, 40)} {label}; "
                                 f"Lensbench accepts 1 to {bound}.", hint)
    layers = {int(m.group(1)) for key in shapes if (m := _LAYER_RE.search(key))}
    if isinstance(n_layers, int) and layers and n_layers > max(layers) + 1:
        raise ModelLoadError(f"config.json in {name} declares {n_layers} layers but the weights "
                             f"have {max(layers) + 1}.", hint)
    if isinstance(hidden, int) and not any(hidden in shape for shape in shapes.values()):
        embed = next((f"{k} {list(s)}" for k, s in shapes.items() if "emb" in k or "wte" in k),
                     "no tensor")
        raise ModelLoadError(f"config.json in {name} declares hidden size {hidden} but no "
                             f"weight has that dimension (embedding: {clip(embed, 100)}).", hint)


def check_sizes(folder: Path) -> None:
    """Compare the sizes transformers will build (AutoConfig maps every family's key names to
    num_hidden_layers / hidden_size) with the weights' headers. Imports transformers: run it
    on the worker thread, just before the model is built."""
    folder = Path(folder)
    try:
        from transformers import AutoConfig

        cfg = AutoConfig.from_pretrained(str(folder), trust_remote_code=False)
        text = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
        n_layers = getattr(text, "num_hidden_layers", None)
        hidden = getattr(text, "hidden_size", None)
    except Exception:  # an architecture AutoConfig does not know: the load reports it
        return
    compare_sizes(n_layers, hidden, tensor_shapes(weight_files(folder)), folder)
