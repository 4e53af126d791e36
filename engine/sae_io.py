"""SAE folders on disk, in SAELens's layout: ``cfg.json`` + ``sae_weights.safetensors``.

Published SAE releases use the same layout, one folder per hook (``blocks.8.hook_resid_pre/``),
so a release root lists its SAEs with :func:`find_sae_folders`. Folders are hostile data: the
config is size-checked JSON read as data, weights are read only from safetensors (pickled
``.pt``/``.bin`` files can run code and are refused, never opened), every tensor's name, dtype
and shape is checked against the config from the file header before anything is allocated, and
non-finite weights are refused. Both SAELens 6 configs (``metadata.hook_name``) and older ones
(``hook_point``, ``activation_fn_str``, boolean ``normalize_activations``) are read.

Writing produces what SAELens 6 writes (``metadata.sae_lens_version`` marks that format, so
SAELens reads the folder back), atomically file by file.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from engine.errors import InputError
from engine.model_sources import BUNDLED_SAE_DIR
from engine.sae import ARCHITECTURES, SAEConfig, SparseAutoencoder, check_fits

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"
SPARSITY_FILE = "sparsity.safetensors"
SAELENS_FORMAT = "6.0.0"  # the SAELens config format these files follow
MAX_CFG_BYTES = 1_000_000
MAX_WEIGHTS_BYTES = 8 * 2**30
PICKLED = (".pt", ".pth", ".bin", ".pkl", ".pickle", ".ckpt")
_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
           "F64": torch.float64}


def _bad(folder: Path, message: str, hint: str = "") -> InputError:
    return InputError(f"{folder.name}: {message}", hint or "Pick a folder with cfg.json and "
                      "sae_weights.safetensors, as SAELens saves them.")


def read_config(folder: str | Path) -> SAEConfig:
    folder = Path(folder)
    path = folder / CFG_FILE
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder.", "Pick the folder that holds cfg.json.")
    if not path.is_file():
        subs = find_sae_folders(folder)
        hint = (f"It holds {len(subs)} SAE folders (a release?); pick one of them, e.g. "
                f"{subs[0].name}." if subs else "")
        raise _bad(folder, "there is no cfg.json here.", hint)
    if path.stat().st_size > MAX_CFG_BYTES:
        raise _bad(folder, "cfg.json is too large to be an SAE config.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _bad(folder, f"cfg.json is not valid JSON ({exc}).") from None
    if not isinstance(data, dict):
        raise _bad(folder, "cfg.json is not a JSON object.")
    return config_from_dict(data, folder)


def _int(d: dict, key: str, folder: Path, lo: int = 1, hi: int = 2**24) -> int:
    v = d.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise _bad(folder, f"cfg.json has no valid {key} (got {v!r}).")
    return v


def config_from_dict(d: dict, folder: Path = Path("cfg")) -> SAEConfig:
    """SAELens 6 or older cfg.json contents -> SAEConfig (SAELens's own defaulting rules)."""
    meta = d.get("metadata") if isinstance(d.get("metadata"), dict) else {}
    flat = {**d, **meta}
    hook = flat.get("hook_name") or flat.get("hook_point")
    if not isinstance(hook, str) or not hook:
        raise _bad(folder, "cfg.json names no hook (hook_name / hook_point).")
    if flat.get("hook_head_index", flat.get("hook_point_head_index")) is not None:
        raise _bad(folder, "this SAE reads a single head's z (hook_head_index), which Lensbench "
                   "does not splice.", "Use an SAE over all heads of attn.hook_z.")
    arch = d.get("architecture") or "standard"
    act_fn = d.get("activation_fn") or d.get("activation_fn_str") or "relu"
    kwargs = d.get("activation_fn_kwargs") if isinstance(d.get("activation_fn_kwargs"), dict) \
        else {}
    k = d.get("k", 0)
    if act_fn == "topk" and kwargs.get("k") is not None:
        arch, k = "topk", kwargs["k"]
    if arch not in ARCHITECTURES:
        raise _bad(folder, f"architecture {arch!r} is not supported.",
                   f"Lensbench runs {', '.join(ARCHITECTURES)} SAEs.")
    if arch == "standard" and act_fn not in ("relu", None):
        raise _bad(folder, f"activation {act_fn!r} is not supported for a standard SAE.")
    norm = d.get("normalize_activations", "none")
    if isinstance(norm, bool):
        norm = "expected_average_only_in" if norm else "none"
    if norm is None:
        norm = "none"
    if d.get("finetuning_scaling_factor") is True:
        raise _bad(folder, "finetuning_scaling_factor is set, which Lensbench does not apply.")
    d_in = _int(d, "d_in", folder)
    d_sae = _int(d, "d_sae", folder)
    if arch == "topk":
        k = _int({"k": k}, "k", folder, 1, d_sae)
    reshape = d.get("reshape_activations") or ("hook_z" if "hook_z" in hook else "none")
    ctx = flat.get("context_size")
    return SAEConfig(
        d_in=d_in, d_sae=d_sae, hook_name=hook, architecture=arch,
        k=int(k) if arch == "topk" else 0,
        rescale_acts_by_decoder_norm=bool(d.get("rescale_acts_by_decoder_norm", False)),
        apply_b_dec_to_input=bool(d.get("apply_b_dec_to_input", True)),
        normalize_activations=str(norm), reshape_activations=str(reshape),
        model_name=str(flat.get("model_name") or ""),
        context_size=int(ctx) if isinstance(ctx, int) and ctx > 0 else 128,
        prepend_bos=bool(flat.get("prepend_bos", True)),
        dataset_path=str(flat.get("dataset_path") or ""),
        metadata={k2: v for k2, v in meta.items() if isinstance(k2, str)},
    )


def config_to_dict(cfg: SAEConfig) -> dict:
    """The SAELens 6 cfg.json of an inference SAE."""
    meta = dict(cfg.metadata)
    meta.update(model_name=cfg.model_name, hook_name=cfg.hook_name, hook_head_index=None,
                context_size=cfg.context_size, prepend_bos=cfg.prepend_bos,
                dataset_path=cfg.dataset_path)
    meta.setdefault("sae_lens_version", SAELENS_FORMAT)
    meta.setdefault("sae_lens_training_version", None)
    out = {"d_in": cfg.d_in, "d_sae": cfg.d_sae, "dtype": "float32", "device": "cpu",
           "apply_b_dec_to_input": cfg.apply_b_dec_to_input,
           "normalize_activations": cfg.normalize_activations,
           "reshape_activations": cfg.reshape_activations, "metadata": meta,
           "architecture": cfg.architecture}
    if cfg.architecture == "topk":
        out["k"] = cfg.k
        out["rescale_acts_by_decoder_norm"] = cfg.rescale_acts_by_decoder_norm
    return out


def _expected_shapes(cfg: SAEConfig) -> dict[str, tuple[int, ...]]:
    shapes = {"W_enc": (cfg.d_in, cfg.d_sae), "b_enc": (cfg.d_sae,),
              "W_dec": (cfg.d_sae, cfg.d_in), "b_dec": (cfg.d_in,)}
    if cfg.architecture == "jumprelu":
        shapes["threshold"] = (cfg.d_sae,)
    return shapes


def _header(path: Path, folder: Path) -> dict:
    """The safetensors JSON header, read and checked before any tensor is."""
    size = path.stat().st_size
    if size > MAX_WEIGHTS_BYTES:
        raise _bad(folder, f"{path.name} is {size / 2**30:.1f} GiB, larger than Lensbench loads.")
    with path.open("rb") as f:
        head = f.read(8)
        if head[:1] == b"\x80" or head[:2] == b"PK":
            raise _bad(folder, f"{path.name} is a pickled (torch.save) file, not safetensors.",
                       "Pickled files can run code when opened; Lensbench never opens them. "
                       "Convert the weights to safetensors where you trust them.")
        if len(head) < 8:
            raise _bad(folder, f"{path.name} is truncated or corrupt.")
        n = int.from_bytes(head, "little")
        if not 2 <= n <= min(size - 8, 100_000_000):
            raise _bad(folder, f"{path.name} is corrupt (bad header size).",
                       "Copy the file again, or retrain the SAE.")
        try:
            header = json.loads(f.read(n).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise _bad(folder, f"{path.name} is corrupt (unreadable header).",
                       "Copy the file again, or retrain the SAE.") from None
    if not isinstance(header, dict):
        raise _bad(folder, f"{path.name} is corrupt (header is not an object).")
    end = 8 + n
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2
                and all(isinstance(o, int) for o in offsets) and end + offsets[1] <= size):
            raise _bad(folder, f"{path.name} is truncated or corrupt (tensor {name!r}).",
                       "Copy the file again, or retrain the SAE.")
    return header


def load_sae(folder: str | Path, device: str | torch.device = "cpu") -> SparseAutoencoder:
    """An SAE from a SAELens-layout folder, or InputError saying what is wrong with it."""
    from safetensors import safe_open

    folder = Path(folder).expanduser()
    cfg = read_config(folder)
    path = folder / WEIGHTS_FILE
    if not path.is_file():
        pickled = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLED)
        npz = sorted(p.name for p in folder.iterdir() if p.suffix == ".npz")
        if pickled:
            raise _bad(folder, f"the weights are pickled ({', '.join(pickled)}); there is no "
                       f"{WEIGHTS_FILE}.", "Pickled files can run code when opened; Lensbench "
                       "only reads safetensors. Convert them where you trust them.")
        if npz:
            raise _bad(folder, f"the weights are NumPy archives ({', '.join(npz)}).",
                       "Convert them to sae_weights.safetensors (W_enc, b_enc, W_dec, b_dec, "
                       "threshold) first.")
        raise _bad(folder, f"there is no {WEIGHTS_FILE}.")
    header = _header(path, folder)
    expected = _expected_shapes(cfg)
    names = set(header) - {"__metadata__"}
    alias = {"threshold": "log_threshold"} if "log_threshold" in names else {}
    for name, shape in expected.items():
        stored = alias.get(name, name) if name not in names else name
        entry = header.get(stored)
        if entry is None:
            raise _bad(folder, f"{WEIGHTS_FILE} has no tensor {name!r} "
                       f"(it has {', '.join(sorted(names)) or 'none'}).")
        if entry.get("dtype") not in _DTYPES:
            raise _bad(folder, f"tensor {stored!r} has dtype {entry.get('dtype')}, not a float.")
        if tuple(entry.get("shape", ())) != shape:
            raise _bad(folder, f"tensor {stored!r} has shape {tuple(entry.get('shape', ()))}, "
                       f"but cfg.json (d_in={cfg.d_in}, d_sae={cfg.d_sae}) needs {shape}.",
                       "The config and the weights do not belong together.")
    weights = {}
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            for name in expected:
                if name not in names and name in alias:
                    weights[name] = f.get_tensor(alias[name]).float().exp()
                else:
                    weights[name] = f.get_tensor(name).float()
    except Exception as exc:  # noqa: BLE001 - safetensors' own errors: a corrupt file
        raise _bad(folder, f"{WEIGHTS_FILE} is corrupt ({exc}).",
                   "Copy the file again, or retrain the SAE.") from None
    scale = None
    if "scaling_factor" in names:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            scale = f.get_tensor("scaling_factor").float()
        if not torch.allclose(scale, torch.ones_like(scale)):
            raise _bad(folder, "the weights carry a fine-tuning scaling factor, which Lensbench "
                       "does not apply.")
    for name, t in weights.items():
        if not bool(torch.isfinite(t).all()):
            raise _bad(folder, f"tensor {name!r} contains NaN or infinite values.",
                       "The SAE's training diverged; retrain it with a lower learning rate.")
    sae = SparseAutoencoder(cfg, weights)
    sae.source_folder = str(folder.resolve())
    return sae.to(device).eval()


def save_sae(sae: SparseAutoencoder, folder: str | Path,
             log_sparsity: torch.Tensor | None = None) -> Path:
    """Write cfg.json + sae_weights.safetensors (+ sparsity.safetensors), each atomically."""
    from safetensors.torch import save as st_save

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _atomic_write(folder / WEIGHTS_FILE, st_save(sae.weights()))
    if log_sparsity is not None:
        _atomic_write(folder / SPARSITY_FILE,
                      st_save({"sparsity": log_sparsity.detach().float().cpu().contiguous()}))
    text = json.dumps(config_to_dict(sae.cfg), indent=2, default=_json_default)
    _atomic_write(folder / CFG_FILE, text.encode("utf-8"))
    return folder


def _json_default(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return str(obj)


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=str(path.parent))
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes files private; these are ordinary files
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def find_sae_folders(root: str | Path, max_depth: int = 3) -> list[Path]:
    """SAE folders (with cfg.json) under ``root``: the root itself or a release's subfolders."""
    root = Path(root)
    if (root / CFG_FILE).is_file():
        return [root]
    out: list[Path] = []
    if max_depth <= 0 or not root.is_dir():
        return out
    try:
        children = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return out
    for child in children[:2000]:
        out.extend(find_sae_folders(child, max_depth - 1))
    return out


def folder_digest(folder: str | Path) -> str:
    """A content hash of an SAE folder's config and weights (cache keys for dashboards)."""
    h = hashlib.sha256()
    for name in (CFG_FILE, WEIGHTS_FILE):
        path = Path(folder) / name
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:24]


def read_log_sparsity(folder: str | Path, d_sae: int) -> torch.Tensor | None:
    """SAELens's sparsity.safetensors (log10 feature density), when present and well-formed."""
    from safetensors import safe_open

    path = Path(folder) / SPARSITY_FILE
    if not path.is_file():
        return None
    try:
        header = _header(path, Path(folder))
        entry = header.get("sparsity")
        if not isinstance(entry, dict) or tuple(entry.get("shape", ())) != (d_sae,):
            return None
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return f.get_tensor("sparsity").float()
    except (InputError, Exception):  # noqa: BLE001 - optional file: ignore when unreadable
        return None


@dataclass
class LoadedSAE:
    """An SAE on the host's device, checked against the host's model."""

    sae: SparseAutoencoder
    folder: str
    digest: str
    name: str

    @property
    def cfg(self) -> SAEConfig:
        return self.sae.cfg


def get_sae(host, folder: str | Path) -> LoadedSAE:
    """The SAE in ``folder`` for ``host``'s model, loaded once per host and file version."""
    folder = Path(folder).expanduser()
    try:
        resolved = folder.resolve()
        stamp = tuple((p.stat().st_mtime_ns, p.stat().st_size)
                      for p in (resolved / CFG_FILE, resolved / WEIGHTS_FILE) if p.exists())
    except OSError as exc:
        raise InputError(f"Cannot read {folder}: {exc.strerror or exc}",
                         "Pick an SAE folder that exists.") from None
    cache = host.__dict__.setdefault("_saes", {})
    key = (str(resolved), stamp)
    if key not in cache:
        with torch.inference_mode(False):  # normal tensors, usable by jobs with gradients too
            sae = load_sae(resolved, "cpu")
            check_fits(sae.cfg, host.info)
            sae = sae.to(host.device).requires_grad_(False)
        name = resolved.name if resolved != BUNDLED_SAE_DIR.resolve() else "bundled SAE"
        for old in [k for k in cache if k[0] == key[0]] + list(cache)[:-3]:
            cache.pop(old, None)  # a changed file replaces its old version; keep at most 4
        cache[key] = LoadedSAE(sae, str(resolved), folder_digest(resolved), name)
    return cache[key]
