"""Splicing an SAE into the model at its hook, through TransformerLens hooks.

Two ways to splice:

- *reconstruction*: the activation is replaced by the SAE's output ``x_hat``, so the model runs on
  what the SAE understood (used for the cross-entropy loss recovered);
- *with the error term* (SAELens's ``use_error_term``): the activation stays ``x`` and feature
  edits add ``decode(f') - decode(f)``, so a run without edits is exactly the model's own and an
  edit changes only what that feature writes. Interventions and feature patches use this.

Edits act on feature activations: *ablate* sets a feature to 0, *clamp* to a value, *steer* adds
a multiple of it (i.e. adds ``value * W_dec[i]`` to the activation), at every position or a few.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.errors import InputError
from engine.sae import SparseAutoencoder

EDIT_MODES = ("ablate", "clamp", "steer")


@dataclass(frozen=True)
class FeatureEdit:
    feature: int
    mode: str = "ablate"  # ablate | clamp | steer
    value: float = 0.0  # clamp: the activation to set; steer: the multiple of W_dec[feature]
    positions: tuple[int, ...] = ()  # () = every position

    def label(self) -> str:
        where = "" if not self.positions else " @" + ",".join(str(p) for p in self.positions)
        if self.mode == "ablate":
            return f"ablate F{self.feature}{where}"
        if self.mode == "clamp":
            return f"clamp F{self.feature} = {self.value:g}{where}"
        return f"steer F{self.feature} {self.value:+g}{where}"


def check_edits(edits, d_sae: int, n_pos: int) -> None:
    """InputError naming the first edit that does not fit the SAE or the prompt."""
    import math

    for i, e in enumerate(edits):
        where = f"Intervention {i + 1} ({e.label()})"
        if e.mode not in EDIT_MODES:
            raise InputError(f"{where}: unknown mode {e.mode!r}.", "Use ablate, clamp or steer.")
        if not 0 <= e.feature < d_sae:
            raise InputError(f"{where}: the SAE has features 0-{d_sae - 1}.",
                             "Pick a feature from the list.")
        if not math.isfinite(e.value) or abs(e.value) > 1e6:
            raise InputError(f"{where}: the value {e.value!r} is not a usable number.",
                             "Use a finite value, e.g. 0-50 for a clamp or ±10 for steering.")
        bad = [p for p in e.positions if not 0 <= p < n_pos]
        if bad:
            raise InputError(f"{where}: position {bad[0]} is past the prompt's {n_pos} tokens.",
                             f"Use positions 0-{n_pos - 1}, or leave them empty for all.")


def edited(f: torch.Tensor, edits) -> torch.Tensor:
    """Feature activations [..., pos, d_sae] with ``edits`` applied."""
    out = f.clone()
    for e in edits:
        if e.positions:
            index = torch.tensor(e.positions, device=f.device)
            column = out[..., index, e.feature]
        else:
            index, column = None, out[..., e.feature]
        if e.mode == "ablate":
            new = torch.zeros_like(column)
        elif e.mode == "clamp":
            new = torch.full_like(column, float(e.value))
        else:
            new = column + float(e.value)
        if index is None:
            out[..., e.feature] = new
        else:
            out[..., index, e.feature] = new
    return out


def decode_delta(sae: SparseAutoencoder, df: torch.Tensor, state) -> torch.Tensor:
    """``decode(f + df) - decode(f)`` [..., d_in] computed directly (linear in df)."""
    if sae.cfg.architecture == "topk" and sae.cfg.rescale_acts_by_decoder_norm:
        df = df / sae.W_dec.norm(dim=-1)
    out = df @ sae.W_dec
    if state is not None:
        out = out / state[1] if state[0] == "scale" else out * state[2]
    return out


def reconstruction_hook(sae: SparseAutoencoder):
    """Replace the activation by the SAE's reconstruction."""

    def hook(act, hook=None):
        return sae.reconstruct_act(act)

    return hook


def zero_hook(act, hook=None):
    return torch.zeros_like(act)


def edit_hook(sae: SparseAutoencoder, edits, record: dict | None = None):
    """Keep the error term and add what the edited features write instead of the originals.

    ``record`` (optional) receives the original feature activations under ``"f"``."""

    def hook(act, hook=None):
        f, state = sae.encode_with_state(sae.flat(act))
        if record is not None:
            record["f"] = f
        if not edits:
            return act
        delta = decode_delta(sae, edited(f, edits) - f, state)
        return act + sae.unflat(delta, act)

    return hook


def capture_hook(store: dict, key: str = "act"):
    def hook(act, hook=None):
        store[key] = act.detach()
        return act

    return hook


def stop_layer(hook_name: str, n_layers: int) -> int | None:
    """The ``stop_at_layer`` that still runs ``hook_name`` (None: the whole model)."""
    from engine.sae import parse_hook

    layer, suffix = parse_hook(hook_name)
    stop = layer if suffix == "hook_resid_pre" else layer + 1
    return stop if stop < n_layers else None


def activations(model, tokens: torch.Tensor, hook_name: str) -> torch.Tensor:
    """The activation at ``hook_name`` for ``tokens``, running only the layers needed."""
    store: dict = {}
    stop = stop_layer(hook_name, int(model.cfg.n_layers))
    with model.hooks(fwd_hooks=[(hook_name, capture_hook(store))]):
        model(tokens, stop_at_layer=stop) if stop is not None else model(tokens,
                                                                         return_type=None)
    return store["act"]
