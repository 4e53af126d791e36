"""Sparse autoencoders: the SAE type, its hook point on the model, and encode/decode.

An SAE writes an activation ``x`` (at one hook of one layer) as a sparse combination of learned
dictionary directions: ``f = act(W_enc^T (x - b_dec) + b_enc)`` and ``x_hat = f W_dec + b_dec``.
The forms follow SAELens (its on-disk format is the field's lingua franca, ``engine.sae_io``):

- ``standard``: ReLU, trained with an L1 penalty (the tutorial's SAE);
- ``topk``: keep the k largest pre-activations (ReLU'd), optionally ranked by pre-activation
  times decoder norm (``rescale_acts_by_decoder_norm``);
- ``jumprelu``: ReLU that also zeroes pre-activations at or below a per-feature threshold.

Input normalisation as SAELens does it at inference: ``none`` and ``expected_average_only_in``
(a constant factor, folded into the weights when saved) are the identity;
``constant_norm_rescale`` scales each token to norm sqrt(d_in); ``layer_norm`` standardises each
token. Both are undone after decoding. ``reshape_activations == "hook_z"`` flattens
[..., n_heads, d_head] into d_in and back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch
from torch import nn

from engine.errors import InputError

ARCHITECTURES = ("standard", "topk", "jumprelu")
NORMALIZATIONS = ("none", "expected_average_only_in", "constant_norm_rescale", "layer_norm")
# hook suffix -> (what it is, the width it has: "d_model", "d_mlp" or "z")
HOOKS = {
    "hook_resid_pre": ("residual stream before the block", "d_model"),
    "hook_resid_mid": ("residual stream between attention and MLP", "d_model"),
    "hook_resid_post": ("residual stream after the block", "d_model"),
    "hook_attn_out": ("attention output", "d_model"),
    "hook_mlp_out": ("MLP output", "d_model"),
    "mlp.hook_post": ("MLP neurons (after the activation)", "d_mlp"),
    "attn.hook_z": ("attention heads' z (all heads, concatenated)", "z"),
}
_HOOK_RE = re.compile(r"^blocks\.(\d+)\.(.+)$")


def parse_hook(hook_name: str) -> tuple[int, str]:
    """``blocks.2.hook_resid_pre`` -> (2, "hook_resid_pre"); InputError for anything else."""
    m = _HOOK_RE.match(hook_name or "")
    if m is None or m.group(2) not in HOOKS:
        known = ", ".join(f"blocks.L.{s}" for s in HOOKS)
        raise InputError(f"The SAE's hook {hook_name!r} is not one Lensbench can splice into.",
                         f"Supported hooks: {known}.")
    return int(m.group(1)), m.group(2)


def hook_width(suffix: str, info) -> int:
    """The width of a hook's activation on a model (``info``: engine.host.ModelInfo)."""
    kind = HOOKS[suffix][1]
    if kind == "d_mlp":
        return int(info.d_mlp)
    if kind == "z":
        return int(info.n_heads * info.d_head)
    return int(info.d_model)


@dataclass(frozen=True)
class SAEConfig:
    """What an SAE is and where it reads from. Plain values; ``metadata`` keeps whatever else the
    file's cfg.json held (written back unchanged)."""

    d_in: int
    d_sae: int
    hook_name: str
    architecture: str = "standard"
    k: int = 0
    rescale_acts_by_decoder_norm: bool = False
    apply_b_dec_to_input: bool = True
    normalize_activations: str = "none"
    reshape_activations: str = "none"
    model_name: str = ""
    context_size: int = 128
    prepend_bos: bool = True
    dataset_path: str = ""
    metadata: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def layer(self) -> int:
        return parse_hook(self.hook_name)[0]

    @property
    def hook_suffix(self) -> str:
        return parse_hook(self.hook_name)[1]

    def describe(self) -> str:
        sparsity = f"k={self.k}" if self.architecture == "topk" else self.architecture
        return f"{self.hook_name} · {self.d_sae} features ({self.d_sae / self.d_in:g}x) · {sparsity}"


class SparseAutoencoder(nn.Module):
    """Weights as SAELens names them: W_enc [d_in, d_sae], b_enc [d_sae], W_dec [d_sae, d_in],
    b_dec [d_in], and threshold [d_sae] for JumpReLU. Computation is float32."""

    def __init__(self, cfg: SAEConfig, weights: dict[str, torch.Tensor] | None = None) -> None:
        super().__init__()
        if cfg.architecture not in ARCHITECTURES:
            raise InputError(f"SAE architecture {cfg.architecture!r} is not supported.",
                             f"Lensbench runs {', '.join(ARCHITECTURES)} SAEs.")
        if cfg.normalize_activations not in NORMALIZATIONS:
            raise InputError(f"Unknown normalize_activations {cfg.normalize_activations!r}.",
                             f"Expected one of {', '.join(NORMALIZATIONS)}.")
        if cfg.architecture == "topk" and not 0 < cfg.k <= cfg.d_sae:
            raise InputError(f"TopK SAE with k={cfg.k} and {cfg.d_sae} features.",
                             "k must be between 1 and the number of features.")
        self.cfg = cfg
        d_in, d_sae = cfg.d_in, cfg.d_sae
        self.W_enc = nn.Parameter(torch.zeros(d_in, d_sae))
        self.b_enc = nn.Parameter(torch.zeros(d_sae))
        self.W_dec = nn.Parameter(torch.zeros(d_sae, d_in))
        self.b_dec = nn.Parameter(torch.zeros(d_in))
        if cfg.architecture == "jumprelu":
            self.threshold = nn.Parameter(torch.zeros(d_sae))
        if weights is not None:
            self.load_weights(weights)

    # -- weights ------------------------------------------------------------------------------
    def load_weights(self, weights: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for name, p in self.named_parameters():
                p.copy_(weights[name].to(torch.float32))

    def weights(self) -> dict[str, torch.Tensor]:
        """The state to save, SAELens's tensor names."""
        return {k: v.detach().contiguous().cpu() for k, v in self.named_parameters()}

    @property
    def device(self) -> torch.device:
        return self.W_enc.device

    # -- hook shapes ---------------------------------------------------------------------------
    def flat(self, act: torch.Tensor) -> torch.Tensor:
        """A hook's activation as [..., d_in] float32 (z: heads concatenated)."""
        if self.cfg.reshape_activations == "hook_z" and act.shape[-1] != self.cfg.d_in:
            act = act.flatten(-2)
        return act.to(torch.float32)

    def unflat(self, x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """[..., d_in] back to the hook's shape and dtype."""
        return x.reshape(like.shape).to(like.dtype)

    # -- normalisation ------------------------------------------------------------------------
    def _norm_in(self, x: torch.Tensor):
        mode = self.cfg.normalize_activations
        if mode == "constant_norm_rescale":
            coeff = (self.cfg.d_in ** 0.5) / x.norm(dim=-1, keepdim=True)
            return x * coeff, ("scale", coeff)
        if mode == "layer_norm":
            mu = x.mean(dim=-1, keepdim=True)
            centred = x - mu
            std = centred.std(dim=-1, keepdim=True)
            return centred / (std + 1e-5), ("ln", mu, std)
        return x, None

    @staticmethod
    def _norm_out(x: torch.Tensor, state) -> torch.Tensor:
        if state is None:
            return x
        if state[0] == "scale":
            return x / state[1]
        return x * state[2] + state[1]

    # -- encode / decode (inputs [..., d_in]) -----------------------------------------------
    def hidden_pre_with_state(self, x: torch.Tensor):
        x, state = self._norm_in(x.to(torch.float32))
        if self.cfg.apply_b_dec_to_input:
            x = x - self.b_dec
        return x @ self.W_enc + self.b_enc, state

    def hidden_pre(self, x: torch.Tensor) -> torch.Tensor:
        return self.hidden_pre_with_state(x)[0]

    def encode_with_state(self, x: torch.Tensor):
        """(feature activations [..., d_sae], normalisation state for decode)."""
        pre, state = self.hidden_pre_with_state(x)
        return self._activate(pre), state

    def _activate(self, pre: torch.Tensor) -> torch.Tensor:
        arch = self.cfg.architecture
        if arch == "standard":
            return torch.relu(pre)
        if arch == "jumprelu":
            return torch.relu(pre) * (pre > self.threshold).to(pre.dtype)
        ranked = pre * self.W_dec.norm(dim=-1) if self.cfg.rescale_acts_by_decoder_norm else pre
        values, index = ranked.topk(self.cfg.k, dim=-1, sorted=False)
        return torch.zeros_like(ranked).scatter_(-1, index, values.relu())

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode_with_state(x)[0]

    def decode(self, f: torch.Tensor, state=None) -> torch.Tensor:
        if self.cfg.architecture == "topk" and self.cfg.rescale_acts_by_decoder_norm:
            f = f / self.W_dec.norm(dim=-1)
        return self._norm_out(f @ self.W_dec + self.b_dec, state)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction of x [..., d_in]."""
        f, state = self.encode_with_state(x)
        return self.decode(f, state)

    def reconstruct_act(self, act: torch.Tensor) -> torch.Tensor:
        """Reconstruction of a hook's activation, in its shape and dtype."""
        return self.unflat(self(self.flat(act)), act)

    def decoder_directions(self) -> torch.Tensor:
        """Each feature's contribution per unit activation in the hook's space [d_sae, d_in]
        (exact for the normalisations that are the identity at inference)."""
        w = self.W_dec
        if self.cfg.architecture == "topk" and self.cfg.rescale_acts_by_decoder_norm:
            w = w / w.norm(dim=-1, keepdim=True)
        return w


def check_fits(cfg: SAEConfig, info) -> None:
    """Raise InputError when the SAE's hook or width does not fit the loaded model."""
    layer, suffix = parse_hook(cfg.hook_name)
    if not 0 <= layer < info.n_layers:
        raise InputError(f"The SAE reads {cfg.hook_name}, but {info.name} has {info.n_layers} "
                         f"layers (0-{info.n_layers - 1}).",
                         "This SAE was trained on a different model; load the model it was "
                         f"trained on{f' ({cfg.model_name})' if cfg.model_name else ''}.")
    width = hook_width(suffix, info)
    if cfg.d_in != width:
        raise InputError(f"The SAE expects d_in={cfg.d_in} at {cfg.hook_name}, but {info.name} "
                         f"has {width} there.",
                         "This SAE was trained on a different model"
                         f"{f' ({cfg.model_name})' if cfg.model_name else ''} or hook; load "
                         "the matching model, or train an SAE for this one.")
    if suffix == "attn.hook_z" and cfg.reshape_activations != "hook_z":
        raise InputError("The SAE reads attn.hook_z but does not flatten heads "
                         "(reshape_activations is not 'hook_z').",
                         "Lensbench splices z SAEs over all heads concatenated.")
