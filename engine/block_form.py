"""The shape of a model's transformer block, as the hand-written suffix forward needs to know it.

``engine.suffix_forward`` recomputes patched runs from a layer and a position on with its own
dense layers instead of the bridge's hooked modules. It covers the block forms most models use:

- sequential (``x + attn(ln1(x))`` then ``+ mlp(ln2(x))``: GPT-2, Llama, Mistral, Qwen2, Gemma,
  StableLM, OLMo ...) and parallel (``x + attn(ln1(x)) + mlp(ln2(x) or ln1(x))``: GPT-NeoX /
  Pythia, Phi, Falcon);
- learned absolute positions (nothing to do from resid_pre on) or rotary positions in the
  rotate-half convention, over all of a head's dimensions or the first ``rotary_dim`` of them;
- multi-head, grouped-query and multi-query attention;
- plain MLPs (``act(x W_in + b_in) W_out + b_out``) and gated ones
  (``(act(x W_gate + b_gate) * (x W_in + b_in)) W_out + b_out``).

Anything else raises ``Unsupported`` here (ALiBi, soft-capping, sliding windows shorter than the
context, q/k norms, post-norms, attention the bridge delegates to HF modules), and the patching
engine uses the bridge's own blocks instead. Every form is also checked per model against the
hooked forward, with patches, before it is used (``engine.shortcut_check``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.dense import fusable

# Attention bridges whose forward is TransformerLens's own re-implementation with hooks at q/k/v/z,
# in the conventions below (the plain AttentionBridge calls HF's attention module).
REIMPLEMENTED = ("JointQKVAttentionBridge", "JointQKVPositionEmbeddingsAttentionBridge",
                 "PositionEmbeddingsAttentionBridge")


class Unsupported(Exception):
    """The block has a feature the hand-written forward does not reproduce."""


@dataclass(frozen=True)
class BlockForm:
    parallel: bool  # attention and MLP both read resid_pre
    mlp_norm: str  # "ln2", or "ln1" when a parallel block has one norm (GPT-J, Phi, Falcon)
    rotary: bool  # rotate-half rotary positions on q and k (after hook_q / hook_k)
    n_heads: int
    n_kv_heads: int
    scale: float  # multiplies q·k
    gated: bool
    act: str | None  # an engine.dense activation to fuse into the MLP's first product, or None

    @property
    def group(self) -> int:
        return self.n_heads // self.n_kv_heads


def describe(model) -> BlockForm:
    """The block form of ``model`` (a bridge in compatibility mode), or ``Unsupported``."""
    cfg = model.cfg
    blocks = list(model.blocks)
    kinds = {type(b).__name__ for b in blocks}
    if not kinds <= {"BlockBridge", "ParallelBlockBridge"}:
        raise Unsupported(f"block type {sorted(kinds)}")
    parallel = kinds == {"ParallelBlockBridge"}
    block = blocks[0]
    attn = block.attn
    if type(attn).__name__ not in REIMPLEMENTED:
        raise Unsupported(f"attention {type(attn).__name__} calls the HF module")
    for name in ("ln1_post", "ln2_post"):
        if hasattr(block, name):
            raise Unsupported("post-norms")
    if not hasattr(block, "ln1") or (not parallel and not hasattr(block, "ln2")):
        raise Unsupported("missing pre-norms")
    hf = attn.original_component
    if hasattr(attn, "q_norm") or hasattr(attn, "k_norm"):
        raise Unsupported("q/k norms")
    if getattr(hf, "attn_logit_softcapping", None) is not None or \
            float(getattr(cfg, "attn_scores_soft_cap", -1) or -1) > 0:
        raise Unsupported("attention soft-capping")
    window = getattr(hf, "sliding_window", None) or getattr(cfg, "window_size", None)
    if window and int(window) < int(cfg.n_ctx):
        raise Unsupported("sliding-window attention")
    if getattr(cfg, "gated_q_proj", False) or getattr(hf, "sinks", None) is not None:
        raise Unsupported("gated or sink attention")
    if getattr(cfg, "rotary_interleaved_cos_sin", False) or \
            getattr(cfg, "rotary_adjacent_pairs", False):
        raise Unsupported("adjacent-pair rotary")
    pos_type = str(getattr(cfg, "positional_embedding_type", "standard"))
    if pos_type not in ("standard", "rotary"):
        raise Unsupported(f"{pos_type} positions")
    if getattr(cfg, "use_split_qkv_input", False) or getattr(cfg, "use_attn_in", False) or \
            getattr(cfg, "use_attn_result", False):
        raise Unsupported("split attention inputs")
    n_heads = int(cfg.n_heads)
    n_kv = int(attn.W_K.shape[0])
    if n_heads % n_kv:
        raise Unsupported("uneven key/value groups")
    scaling = getattr(hf, "scaling", None)
    if scaling is None:
        attn_scale = float(getattr(cfg, "attn_scale", -1) or -1)
        scaling = 1.0 / attn_scale if attn_scale > 0 else int(cfg.d_head) ** -0.5
    gated = bool(getattr(cfg, "gated_mlp", False))
    mlp = block.mlp
    if gated and getattr(mlp, "W_gate", None) is None:
        raise Unsupported("gated MLP without W_gate")
    act = str(getattr(cfg, "act_fn", ""))
    return BlockForm(parallel=parallel,
                     mlp_norm="ln2" if hasattr(block, "ln2") else "ln1",
                     rotary=pos_type == "rotary", n_heads=n_heads, n_kv_heads=n_kv,
                     scale=float(scaling), gated=gated, act=act if fusable(act) else None)


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
           inplace: bool = False) -> torch.Tensor:
    """Rotary positions in the rotate-half convention on ``x`` [batch, pos, heads, d_head] with
    ``cos``/``sin`` [1 or batch, pos, rotary_dim]; dimensions past ``rotary_dim`` pass through
    (GPT-NeoX and Phi rotate part of each head). Three passes over the rotated part (the
    product with cos, then each half's sin term added in place); with ``inplace`` a partial
    rotation overwrites ``x`` instead of copying its pass-through part."""
    rd = cos.shape[-1]
    half = rd // 2
    cos, sin = cos[:, :, None, :].to(x.dtype), sin[:, :, None, :].to(x.dtype)
    if rd == x.shape[-1]:
        out, x_rot = x * cos, x
    else:
        out, x_rot = (x, x[..., :rd].clone()) if inplace else (x.clone(), x[..., :rd])
        out[..., :rd].mul_(cos)
    out[..., :half].addcmul_(x_rot[..., half:rd], sin[..., :half], value=-1)
    out[..., half:rd].addcmul_(x_rot[..., :half], sin[..., half:])
    return out
