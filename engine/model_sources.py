"""Where a model comes from: the bundled organism, the HF cache (or hub), or a local folder.

Every folder is treated as hostile: JSON is size-checked and parsed as data, only safetensors
weights are accepted (pickled ``.bin`` files can run code), and ``trust_remote_code`` is never on.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from engine.errors import ModelLoadError

BUNDLED_NAME = "lensbench-organism"
RESOURCES = Path(__file__).resolve().parent.parent / "resources"
BUNDLED_DIR = RESOURCES / "models" / BUNDLED_NAME
BUNDLED_SAE_DIR = RESOURCES / "saes" / "lensbench-organism-res3"  # its SAE (engine.sae_io)
MAX_CONFIG_BYTES = 2_000_000
HF_HOST = "huggingface.co"


@dataclass(frozen=True)
class ModelSpec:
    """What the user asked to load. ``source`` is ``bundled``, ``hf`` or ``folder``."""

    source: str = "bundled"
    name: str = BUNDLED_NAME
    device: str = "auto"
    dtype: str = "float32"
    n_devices: int = 1

    @classmethod
    def parse(cls, text: str | None, device: str = "auto", dtype: str = "float32") -> ModelSpec:
        """Read a command-line ``--model`` value: empty -> bundled, a folder path, else an HF name."""
        if not text or text in (BUNDLED_NAME, "bundled"):
            return cls("bundled", BUNDLED_NAME, device, dtype)
        if os.path.isdir(os.path.expanduser(text)):
            return cls("folder", str(Path(text).expanduser().resolve()), device, dtype)
        return cls("hf", text, device, dtype)

    @property
    def display_name(self) -> str:
        return Path(self.name).name if self.source == "folder" else self.name


def supported_model_names() -> list[str]:
    """The HF names TransformerLens lists as supported (official names and their aliases)."""
    from transformer_lens.supported_models import MODEL_ALIASES, OFFICIAL_MODEL_NAMES

    names = list(OFFICIAL_MODEL_NAMES)
    for official in OFFICIAL_MODEL_NAMES:
        names.extend(MODEL_ALIASES.get(official, []))
    return sorted(set(names), key=str.lower)


def official_name(name: str) -> str:
    from transformer_lens.supported_models import get_official_model_name

    try:
        return get_official_model_name(name)
    except ValueError:
        if "/" in name:  # an HF repo id TransformerLens may still support by architecture
            return name
        raise ModelLoadError(
            f"Unknown model name {name!r}.",
            "Pick a name from the list of models TransformerLens supports (e.g. gpt2-small), "
            "or choose a local model folder.",
        ) from None


def _repo_candidates(name: str) -> list[str]:
    """HF moved the original GPT-2 repos under openai-community/; the cache may hold either."""
    out = [name]
    if "/" not in name:
        out.append(f"openai-community/{name}")
    return out


def download_command(name: str) -> str:
    """The download command the installed huggingface_hub provides: ``hf`` since 0.34 (1.0
    removed ``huggingface-cli``)."""
    from importlib import metadata

    try:
        scripts = {ep.name for ep in metadata.distribution("huggingface_hub").entry_points
                   if ep.group == "console_scripts"}
    except metadata.PackageNotFoundError:
        scripts = set()
    cli = "huggingface-cli" if "hf" not in scripts and "huggingface-cli" in scripts else "hf"
    return f"{cli} download {name}"


def hf_cache_dir() -> str | None:
    return os.environ.get("HF_HUB_CACHE") or (
        os.path.join(os.environ["HF_HOME"], "hub") if os.environ.get("HF_HOME") else None
    )


def find_in_cache(name: str) -> Path | None:
    """The snapshot folder of ``name`` in the HF cache, or None. Never touches the network."""
    from huggingface_hub import snapshot_download

    for repo in _repo_candidates(name):
        try:
            path = snapshot_download(repo, cache_dir=hf_cache_dir(), local_files_only=True)
        except Exception:
            continue
        if (Path(path) / "config.json").is_file():
            return Path(path)
    return None


def hub_reachable(timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    try:
        with socket.create_connection((HF_HOST, 443), timeout=timeout):
            return True
    except OSError:
        return False


def download(name: str, ctx) -> Path:
    """Download ``name`` (safetensors, config and tokenizer only) reporting progress to ``ctx``."""
    from huggingface_hub import snapshot_download
    from tqdm.auto import tqdm

    class _Progress(tqdm):  # huggingface_hub drives this per file; we forward to the job context
        def update(self, n=1):
            out = super().update(n)
            # Count ourselves: a disabled bar (HF_HUB_DISABLE_PROGRESS_BARS) never advances self.n.
            self._done = getattr(self, "_done", 0) + (n or 0)
            if self.total:
                ctx.progress(min(self._done / self.total, 1.0) * 0.8, f"Downloading {name}: "
                             f"{self._done / 1e6:.0f} / {self.total / 1e6:.0f} MB")
            ctx.check_cancelled()
            return out

    patterns = ["*.json", "*.safetensors", "tokenizer*", "*.txt", "*.model"]
    last_error: Exception | None = None
    for repo in _repo_candidates(name):
        try:
            return Path(snapshot_download(repo, cache_dir=hf_cache_dir(),
                                          allow_patterns=patterns, tqdm_class=_Progress))
        except Exception as exc:  # try the next candidate repo id
            if type(exc).__name__ == "Cancelled":
                raise
            last_error = exc
    raise ModelLoadError(f"Could not download {name!r}: {last_error}",
                         "Check the model name and your network connection.")


def resolve_folder(spec: ModelSpec, ctx) -> Path:
    """Turn a spec into a validated local HF folder, downloading only when online and asked."""
    if spec.source == "bundled":
        folder = BUNDLED_DIR
        if not folder.is_dir():
            raise ModelLoadError(
                f"The bundled model is missing from {folder}.",
                "Reinstall Lensbench, or train it with tools/organism/train.py.",
            )
    elif spec.source == "folder":
        folder = Path(spec.name).expanduser()
        if not folder.is_dir():
            raise ModelLoadError(f"Model folder {folder} does not exist.",
                                 "Choose a folder that holds config.json and model.safetensors.")
    elif spec.source == "hf":
        name = official_name(spec.name.strip())
        cached = find_in_cache(name)
        if cached is not None:
            folder = cached
        elif hub_reachable():
            folder = download(name, ctx)
        else:
            raise ModelLoadError(
                f"{name!r} is not in the Hugging Face cache and huggingface.co cannot be reached.",
                "Connect to the internet and load it again (it is downloaded once), or on a "
                f"machine with network run `{download_command(name)}` and copy the "
                "cache folder (~/.cache/huggingface/hub) here; or load a local model folder.",
            )
    else:
        raise ModelLoadError(f"Unknown model source {spec.source!r}.")
    validate_folder(folder)
    return folder


def read_json(path: Path) -> dict:
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise ModelLoadError(f"{path.name} is implausibly large ({path.stat().st_size} bytes).",
                             "This does not look like a model folder.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{path.name} in {path.parent} is not valid JSON: {exc}",
                             "The model folder is corrupt; download or copy it again.") from None
    if not isinstance(data, dict):
        raise ModelLoadError(f"{path.name} does not hold a JSON object.",
                             "The model folder is corrupt; download or copy it again.")
    return data


def validate_folder(folder: Path) -> dict:
    """Check a model folder before anything reads its weights; return its config."""
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise ModelLoadError(f"{folder} has no config.json.",
                             "A model folder holds config.json, model.safetensors and tokenizer "
                             "files, as saved by transformers' save_pretrained().")
    config = read_json(config_path)
    if "auto_map" in config:
        raise ModelLoadError(
            f"{folder.name} needs trust_remote_code: it ships its own Python code.",
            "Lensbench never runs code from a model folder. Use a model whose architecture "
            "transformers supports natively.",
        )
    if not config.get("architectures") and not config.get("model_type"):
        raise ModelLoadError(f"config.json in {folder} names no architecture.",
                             "The model folder is corrupt or not a transformers model.")
    weights = list(folder.glob("*.safetensors"))
    if not weights:
        pickles = list(folder.glob("*.bin")) + list(folder.glob("*.pt")) + list(folder.glob("*.pth"))
        if pickles:
            raise ModelLoadError(
                f"{folder.name} has only pickled weights ({pickles[0].name}).",
                "Pickle files can run code, so Lensbench loads safetensors only. Convert them "
                "with transformers (model.save_pretrained(folder, safe_serialization=True)).",
            )
        raise ModelLoadError(f"{folder} has no model weights (*.safetensors).",
                             "Copy the complete model folder.")
    for w in weights:
        _check_safetensors_header(w)
    has_tokenizer = any((folder / f).is_file() for f in
                        ("tokenizer.json", "vocab.json", "tokenizer.model", "tokenizer_config.json"))
    if not has_tokenizer:
        raise ModelLoadError(f"{folder} has no tokenizer files.",
                             "Copy tokenizer.json (and tokenizer_config.json) into the folder.")
    return config


def _check_safetensors_header(path: Path) -> None:
    """Read the safetensors header with the library (data only) to catch truncated files early."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:  # the header only; no torch
            keys = list(f.keys())
            meta = f.metadata()
        del meta
        size = path.stat().st_size
        if not keys or size < 16:
            raise ValueError("no tensors")
    except Exception as exc:
        raise ModelLoadError(f"{path.name} is not a valid safetensors file ({exc}).",
                             "The weights are corrupt or truncated; download or copy them "
                             "again.") from None
