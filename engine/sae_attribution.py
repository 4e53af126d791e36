"""Feature attribution: each SAE feature's direct effect on the answer logit.

At the SAE's hook the activation is ``x = sum_i f_i W_dec[i] + b_dec + error``. Mapped into the
residual stream (identity for residual/attention/MLP outputs, ``W_out`` (+ ``b_out``) for MLP
neurons, ``W_O`` (+ ``b_O``) for z) and read through the final LayerNorm's cached scale and the
unembedding (TransformerLens's ``ActivationCache.logit_attrs``, the function behind its
``direct_logit_attribution``), every term gets a direct effect on the answer's logit (or the
answer-minus-counterfactual difference). The terms sum to the component's direct logit
attribution: features + bias + error = DLA of the component the hook reads (for residual-stream
hooks, the accumulated stream there). The effect at every position is given: position p's value
is the effect on the answer as the prediction after token p.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from engine.jobs import JobContext
from engine.sae import parse_hook
from engine.sae_features import output_map
from engine.sae_io import get_sae
from engine.targets import Target, resolve_target
from engine.tokens import str_tokens, tokenize

MAX_LISTED = 512


@dataclass(frozen=True)
class FeatureAttributionRequest:
    prompt: str
    sae_folder: str
    target: Target
    prepend_bos: bool | None = None  # None: the model's default (engine.tokens.bos_policy)
    truncate: bool = False


@dataclass(frozen=True)
class FeatureAttributionResult:
    prompt: str
    str_tokens: tuple[str, ...]
    target_label: str
    position: int  # the target position (non-negative)
    hook_name: str
    component_label: str  # TransformerLens's DLA label of what the hook reads
    features: np.ndarray  # [n] int64: active features, by |effect at position|, largest first
    effects: np.ndarray  # [n, pos] float32: direct effect of each feature at each position
    activations: np.ndarray  # [n, pos] float32: the features' activations
    error: np.ndarray  # [pos] float32: the SAE's error term's direct effect
    bias: np.ndarray  # [pos] float32: b_dec (and the layer's output bias) direct effect
    component: np.ndarray  # [pos] float32: TransformerLens's DLA of the component
    rest: np.ndarray  # [pos] float32: features active but not listed (beyond MAX_LISTED)
    final_value: float  # the model's logit (difference) at the position
    is_difference: bool


def component_label(hook_name: str, n_layers: int) -> tuple[str, str]:
    """(TransformerLens DLA unit, label) of the component an SAE at ``hook_name`` reads."""
    layer, suffix = parse_hook(hook_name)
    if suffix == "hook_resid_pre":
        return "layer", f"{layer}_pre"
    if suffix == "hook_resid_mid":
        return "layer", f"{layer}_mid"
    if suffix == "hook_resid_post":
        return "layer", f"{layer + 1}_pre" if layer + 1 < n_layers else "final_post"
    if suffix in ("hook_attn_out", "attn.hook_z"):
        return "component", f"{layer}_attn_out"
    return "component", f"{layer}_mlp_out"


def output_bias(model, hook_name: str) -> torch.Tensor | None:
    """The bias the layer adds after the hook's space is mapped into the stream (b_out, b_O)."""
    layer, suffix = parse_hook(hook_name)
    if suffix == "mlp.hook_post":
        return model.b_out[layer].float()
    if suffix == "attn.hook_z":
        return model.b_O[layer].float()
    return None


@torch.inference_mode()
def run_feature_attribution(host, request: FeatureAttributionRequest,
                            ctx: JobContext) -> FeatureAttributionResult:
    from transformer_lens.tools.analysis import direct_logit_attribution

    loaded = get_sae(host, request.sae_folder)
    sae, model = loaded.sae, host.model
    hook = sae.cfg.hook_name
    tokens = tokenize(host, request.prompt, request.prepend_bos, request.truncate)
    n_pos = int(tokens.shape[-1])
    target = resolve_target(host, request.target, n_pos)
    unit, label = component_label(hook, int(model.cfg.n_layers))
    ctx.progress(0.2, "Running the prompt…")
    logits, cache = model.run_with_cache(tokens)
    ctx.check_cancelled()
    a, c = target.answer_id, target.counterfactual_id

    def attrs(stack: torch.Tensor) -> torch.Tensor:
        """TransformerLens's logit_attrs of [n, pos, d_model] vectors at every position."""
        return cache.logit_attrs(stack[:, None].to(logits.dtype), tokens=a,
                                 incorrect_tokens=c, pos_slice=None, has_batch_dim=True)[:, 0]

    x = sae.flat(cache[hook])[0]  # [pos, d_in]
    f, state = sae.encode_with_state(x)
    x_hat = sae.decode(f, state)
    m = output_map(model, hook)
    to_resid = (lambda v: v) if m is None else (lambda v: v @ m.to(v.device))
    dirs = sae.decoder_directions()
    if state is not None:  # normalised SAEs: a feature writes f * W_dec scaled per token
        scale = (1 / state[1] if state[0] == "scale" else state[2])[:, 0]  # [pos]
    else:
        scale = torch.ones(n_pos, device=x.device)
    active = torch.nonzero((f > 0).any(0)).flatten()
    ctx.progress(0.5, f"Attributing {len(active)} active features…")
    effects = torch.zeros(len(active), n_pos, device=x.device)
    # each feature's direction is read at every position: [chunk, pos, d_model] floats a chunk,
    # about 2**23 of them (~0.2 s on a CPU), so a Cancel waits for little more than that
    chunk = max(1, min(256, 2**23 // (n_pos * int(model.cfg.d_model))))
    for i in range(0, len(active), chunk):
        ctx.check_cancelled()
        idx = active[i:i + chunk]
        unit_attr = attrs(to_resid(dirs[idx])[:, None, :].expand(-1, n_pos, -1).float())
        effects[i:i + chunk] = f[:, idx].T * scale[None, :] * unit_attr.float()
    error = attrs(to_resid(x - x_hat)[None].float())[0]
    b_dec = sae.b_dec.expand(n_pos, -1)
    bias_resid = to_resid(sae._norm_out(b_dec, state) if state is not None else b_dec)
    extra = output_bias(model, hook)
    if extra is not None:
        bias_resid = bias_resid + extra.to(bias_resid.device)
    bias = attrs(bias_resid[None].float())[0]
    dla = direct_logit_attribution(model, cache=cache, answer_tokens=a, incorrect_tokens=c,
                                   unit=unit, pos=None)
    labels = list(dla.labels)
    component = dla.attribution[labels.index(label)].reshape(-1)[:n_pos]
    pos = target.position
    order = torch.argsort(effects[:, pos].abs(), descending=True)
    listed, rest_idx = order[:MAX_LISTED], order[MAX_LISTED:]
    rest = effects[rest_idx].sum(0) if len(rest_idx) else torch.zeros(n_pos, device=x.device)
    decode = host.tokenizer.decode
    tlabel = repr(decode([a])) + (f" − {decode([c])!r}" if c is not None else "")
    ctx.progress(1.0, "done")
    return FeatureAttributionResult(
        request.prompt, tuple(str_tokens(host, tokens[0])), tlabel, pos, hook, label,
        active[listed].cpu().numpy().astype(np.int64),
        effects[listed].cpu().numpy().astype(np.float32),
        f[:, active[listed]].T.cpu().numpy().astype(np.float32),
        error.cpu().numpy().astype(np.float32), bias.cpu().numpy().astype(np.float32),
        component.float().cpu().numpy().astype(np.float32),
        rest.cpu().numpy().astype(np.float32),
        float(target.metric(logits.float())[0]), target.is_difference)
