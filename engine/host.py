"""The model host: one loaded TransformerBridge (compatibility mode), its tokenizer and device.

Only the worker thread touches a host. ``load_host`` is itself a job function so loading shows
progress and can be cancelled between its steps.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from engine.capabilities import Capabilities, probe
from engine.devices import DTYPES, memory_used, pick_device, supported_dtypes
from engine.errors import LensbenchError, ModelLoadError
from engine.fingerprint import weights_fingerprint
from engine.jobs import Context, JobContext
from engine.model_folder import check_sizes
from engine.model_sources import ModelSpec, resolve_folder
from engine.param_count import checkpoint_parameter_count, format_count


@dataclass(frozen=True)
class ModelInfo:
    """What the UI shows about the loaded model; plain values only."""

    name: str
    source: str
    folder: str
    n_layers: int
    n_heads: int
    d_model: int
    d_head: int
    d_mlp: int
    d_vocab: int
    n_ctx: int
    n_key_value_heads: int
    n_params: int
    device: str
    dtype: str
    load_seconds: float
    memory_bytes: int
    architecture: str
    caps: Capabilities = field(default_factory=Capabilities)
    fingerprint: str = ""  # engine.fingerprint: which checkpoint (sessions keep it with results)

    @property
    def default_prepend_bos(self) -> bool:
        """Whether this model's tokenizer puts a BOS token first by default (GPT-2 yes, Pythia and
        BLOOM no); every panel follows it unless the user turns BOS on or off."""
        return self.caps.default_prepend_bos

    @property
    def is_gqa(self) -> bool:
        return 0 < self.n_key_value_heads < self.n_heads

    def summary(self) -> str:
        mem = f", {self.memory_bytes / 2**20:.0f} MiB" if self.memory_bytes else ""
        return (f"{self.name} · {self.n_layers}L×{self.n_heads}H d={self.d_model} · "
                f"{format_count(self.n_params)} params · {self.device} {self.dtype}{mem}")


class ModelHost:
    """Owns the bridge. Analyses read ``host.model`` (compatibility mode) and ``host.info``."""

    def __init__(self, model, spec: ModelSpec, info: ModelInfo) -> None:
        self.model = model
        self.spec = spec
        self.info = info

    @property
    def tokenizer(self):
        return self.model.tokenizer

    @property
    def device(self) -> torch.device:
        return torch.device(self.info.device)

    @property
    def caps(self) -> Capabilities:
        return self.info.caps

    def close(self) -> None:
        """Drop the model and return accelerator memory."""
        self.model = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _param_bytes(model) -> tuple[int, int]:
    n = sum(p.numel() for p in model.parameters())
    b = sum(p.numel() * p.element_size() for p in model.parameters())
    return int(n), int(b)


def load_host(spec: ModelSpec, ctx: JobContext | None = None) -> ModelHost:
    """Resolve, validate and boot a model, then enable TransformerLens compatibility mode.

    Always outside inference mode, even when called inside it: weights created there would be
    inference tensors, and every later analysis that needs gradients would fail."""
    with torch.inference_mode(False):
        return _load_host(spec, ctx)


def _load_host(spec: ModelSpec, ctx: JobContext | None) -> ModelHost:
    ctx = ctx or Context()
    started = time.perf_counter()
    device = pick_device(spec.device)
    if spec.dtype not in DTYPES:
        raise ModelLoadError(f"Unknown dtype {spec.dtype!r}.", "Use float32, bfloat16 or float16.")
    if spec.dtype not in supported_dtypes(device):
        raise ModelLoadError(f"{spec.dtype} is not supported on {device}.",
                             f"Use one of {', '.join(supported_dtypes(device))}.")
    ctx.progress(0.02, f"Locating {spec.display_name}…")
    folder = resolve_folder(spec, ctx)
    check_sizes(folder)  # an absurd config.json is refused before anything is built
    ctx.check_cancelled()
    ctx.progress(0.85 if spec.source == "hf" else 0.3, f"Loading {spec.display_name} on {device}…")
    from transformer_lens.model_bridge import TransformerBridge

    kwargs: dict = {"dtype": DTYPES[spec.dtype], "trust_remote_code": False}
    safe_class = safetensors_only_class(folder)
    if safe_class is not None:
        kwargs["model_class"] = safe_class
    if spec.n_devices > 1:
        kwargs["n_devices"] = spec.n_devices
    else:
        kwargs["device"] = device
    logging.getLogger("transformers").setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = TransformerBridge.boot_transformers(str(folder), **kwargs)
            n_checkpoint = checkpoint_parameter_count(model.original_model.config, folder)
            ctx.check_cancelled()
            ctx.progress(0.92, "Processing weights (TransformerLens compatibility mode)…")
            model.enable_compatibility_mode(disable_warnings=True)
    except LensbenchError:
        raise
    except Exception as exc:
        if type(exc).__name__ in ("Cancelled", "OutOfMemoryError"):
            raise
        raise ModelLoadError(f"Could not load {spec.display_name}: {type(exc).__name__}: {exc}",
                             "The folder may be incomplete or corrupt, or its architecture is "
                             "not supported by TransformerLens 4.") from exc
    model.eval()
    ctx.check_cancelled()
    ctx.progress(0.96, "Checking which hooks this architecture supports…")
    caps = probe(model)
    cfg = model.cfg
    n_params, n_bytes = _param_bytes(model)
    n_params = n_checkpoint or n_params
    n_kv = int(getattr(cfg, "n_key_value_heads", None) or cfg.n_heads)
    info = ModelInfo(
        name=spec.display_name,
        source=spec.source,
        folder=str(Path(folder)),
        n_layers=int(cfg.n_layers),
        n_heads=int(cfg.n_heads),
        d_model=int(cfg.d_model),
        d_head=int(cfg.d_head),
        d_mlp=int(getattr(cfg, "d_mlp", 0) or 0),
        d_vocab=int(cfg.d_vocab),
        n_ctx=int(cfg.n_ctx),
        n_key_value_heads=n_kv,
        n_params=n_params,
        device=str(device),
        dtype=spec.dtype,
        load_seconds=time.perf_counter() - started,
        memory_bytes=memory_used(str(device)) or n_bytes,
        architecture=str(getattr(cfg, "architecture", "") or ""),
        caps=caps,
        fingerprint=weights_fingerprint(folder),
    )
    ctx.progress(1.0, f"Loaded {info.name}")
    return ModelHost(model, spec, info)


def safetensors_only_class(folder) -> type | None:
    """The HF model class TransformerLens would pick for ``folder``, with ``use_safetensors=True``
    on every ``from_pretrained``: transformers never falls back to unpickling a ``.bin`` with
    torch.load, whatever else the folder holds. boot_transformers takes no from_pretrained
    arguments, but it takes the class. None if TransformerLens's helpers moved (the folder
    check already requires the model's own safetensors files)."""
    try:
        from transformer_lens.model_bridge.sources._hf_format import (
            determine_architecture_from_hf_config,
        )
        from transformer_lens.model_bridge.sources.transformers.helpers import (
            get_hf_model_class_for_architecture,
        )
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(str(folder), trust_remote_code=False)
        real = get_hf_model_class_for_architecture(determine_architecture_from_hf_config(config))
    except Exception:
        return None

    class SafetensorsOnly:
        __name__ = getattr(real, "__name__", "SafetensorsOnly")

        @staticmethod
        def from_pretrained(name, *args, **kwargs):
            kwargs["use_safetensors"] = True
            return real.from_pretrained(name, *args, **kwargs)

        @staticmethod
        def from_config(config, *args, **kwargs):
            return real.from_config(config, *args, **kwargs)

    return SafetensorsOnly
