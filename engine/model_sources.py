"""Where a model comes from: the bundled organism, the HF cache (or hub), or a local folder.

Every folder is treated as hostile: JSON is size-checked and parsed as data, only safetensors
weights are accepted (pickled ``.bin`` files can run code), and ``trust_remote_code`` is never on.
"""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path

from engine.errors import ModelLoadError
from engine.model_folder import check_sizes, read_json, validate_folder  # noqa: F401
from engine.safe_files import clip

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
            f"Unknown model name {clip(name)!r}.",
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
    raise ModelLoadError(f"Could not download {clip(name)!r}: {clip(last_error)}",
                         "Check the model name and your network connection.")


def _is_dir(path: Path) -> bool:
    """Path.is_dir, with a name too long or otherwise unusable counting as no folder."""
    try:
        return path.is_dir()
    except (OSError, ValueError):
        return False


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
        if not _is_dir(folder):
            raise ModelLoadError(f"Model folder {clip(folder)} does not exist.",
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
                f"{clip(name)!r} is not in the Hugging Face cache and huggingface.co cannot be reached.",
                "Connect to the internet and load it again (it is downloaded once), or on a "
                f"machine with network run `{download_command(name)}` and copy the "
                "cache folder (~/.cache/huggingface/hub) here; or load a local model folder.",
            )
    else:
        raise ModelLoadError(f"Unknown model source {clip(spec.source, 40)!r}.")
    validate_folder(folder)
    return folder


SOURCES = ("bundled", "hf", "folder")
DTYPE_NAMES = ("float32", "bfloat16", "float16")
MAX_DEVICES = 64
_HF_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}(/[A-Za-z0-9][A-Za-z0-9._-]{0,95})?")
_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d{1,3})?")


def check_spec(spec: ModelSpec) -> None:
    """Refuse a spec that could not be loaded, before anything is applied or loaded: the checks
    of ``resolve_folder`` that need neither the network nor PyTorch (a name that is not cached
    is accepted only while the hub can be reached). Raises ModelLoadError."""
    if spec.source not in SOURCES:
        raise ModelLoadError(f"Unknown model source {clip(spec.source, 40)!r}.",
                             "A session names the bundled model, an HF model or a model folder.")
    if not isinstance(spec.device, str) or not _DEVICE.fullmatch(spec.device):
        raise ModelLoadError(f"Unknown device {clip(spec.device, 40)!r}.",
                             "Use auto, cpu, cuda, cuda:N or mps.")
    if spec.dtype not in DTYPE_NAMES:
        raise ModelLoadError(f"Unknown dtype {clip(spec.dtype, 40)!r}.",
                             "Use float32, bfloat16 or float16.")
    if (isinstance(spec.n_devices, bool) or not isinstance(spec.n_devices, int)
            or not 1 <= spec.n_devices <= MAX_DEVICES):
        raise ModelLoadError(f"Invalid device count {clip(spec.n_devices, 40)!r}.",
                             f"Use 1 to {MAX_DEVICES}.")
    if not isinstance(spec.name, str) or not spec.name or len(spec.name) > 4096 \
            or "\0" in spec.name:
        raise ModelLoadError("The model name is empty, too long or not text.",
                             "Choose the model again with Model > Load model….")
    if spec.source == "bundled":
        if spec.name != BUNDLED_NAME:
            raise ModelLoadError(f"Unknown bundled model {clip(spec.name)!r}.",
                                 f"The bundled model is {BUNDLED_NAME}.")
        resolve_folder(spec, None)
    elif spec.source == "folder":
        if "://" in spec.name:
            raise ModelLoadError(f"{clip(spec.name)!r} is a web address, not a model folder.",
                                 "Choose a local folder, or an HF model by its name.")
        resolve_folder(spec, None)
    else:
        name = spec.name.strip()
        if not _HF_NAME.fullmatch(name) or ".." in name:
            raise ModelLoadError(f"{clip(name)!r} is not a Hugging Face model name.",
                                 "HF names look like gpt2-small or org/model.")
        name = official_name(name)
        if find_in_cache(name) is None and not hub_reachable():
            resolve_folder(spec, None)  # raises the offline message with its instructions
