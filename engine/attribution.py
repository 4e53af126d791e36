"""Layer attribution: logit lens and direct logit attribution (DLA) for one target, many prompts.

Which components push the model toward its answer? For each prompt (each with its own answer,
optional counterfactual and position) this runs the model once, caching only the hooks the
decompositions read, and then asks TransformerLens's own functions:

- ``tools.analysis.logit_lens`` (accumulated residual stream through the real final norm and
  unembedding, statistics recomputed per entry): the target's logit or logit difference, its rank
  and the top-k tokens after each sublayer;
- ``tools.analysis.direct_logit_attribution`` with ``unit="layer"`` (the same accumulated stream
  scaled by the final LayerNorm's cached scale, no unembedding bias), ``unit="component"`` (embed,
  pos_embed, each layer's attn_out and mlp_out) and ``unit="head"`` (each head, plus a remainder).

With the final-layer scale applied, the components sum to the model's final logit (difference)
minus the unembedding bias term ``b_U[answer] (- b_U[counterfactual])``; the result carries both
so a panel (and a test) can show the identity.

Prompts may differ in length: each runs on its own, and a batch result holds one row per prompt.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from engine.errors import InputError
from engine.jobs import JobContext
from engine.targets import Target, resolve_target
from engine.tokens import str_tokens, tokenize

MAX_PROMPTS = 256


@dataclass(frozen=True)
class AttributionItem:
    """One prompt with its own target."""

    prompt: str
    target: Target


@dataclass(frozen=True)
class AttributionRequest:
    items: tuple[AttributionItem, ...]
    top_k: int = 5
    prepend_bos: bool | None = None  # None: the model's default (engine.tokens.bos_policy)
    truncate: bool = False

    @classmethod
    def single(cls, prompt: str, answer: str, counterfactual: str = "", position: int = -1,
               **kwargs) -> AttributionRequest:
        return cls((AttributionItem(prompt, Target(answer, counterfactual, position)),), **kwargs)


@dataclass(frozen=True)
class AttributionResult:
    """One row per prompt (axis 0 of every array). Values are logits (difference when
    ``is_difference``) in the model's logit units."""

    prompts: tuple[str, ...]
    str_tokens: tuple[tuple[str, ...], ...]  # [prompt][pos]
    positions: np.ndarray  # [P] int64, resolved (non-negative)
    answers: tuple[str, ...]  # decoded answer token per prompt
    counterfactuals: tuple[str, ...]  # decoded counterfactual per prompt ("" when none)
    answer_ids: np.ndarray  # [P] int64
    counterfactual_ids: np.ndarray  # [P] int64, -1 when none
    is_difference: bool
    n_layers: int
    n_heads: int
    # logit lens over the accumulated residual stream (entries 0_pre, 0_mid, ..., final_post)
    lens_labels: tuple[str, ...]
    lens_values: np.ndarray  # [P, E] float32: logit lens (recomputed final LN, with b_U)
    lens_direct: np.ndarray  # [P, E] float32: DLA of the accumulated stream (cached final scale)
    lens_ranks: np.ndarray  # [P, E] int64: rank of the answer (0 = top)
    lens_cf_ranks: np.ndarray  # [P, E] int64: rank of the counterfactual, -1 when none
    lens_top_ids: np.ndarray  # [P, E, k] int64
    lens_top_tokens: tuple[tuple[tuple[str, ...], ...], ...]  # [P][E][k]
    lens_top_logits: np.ndarray  # [P, E, k] float32
    # decomposed residual stream: embed, pos_embed, L_attn_out, L_mlp_out
    component_labels: tuple[str, ...]
    component_values: np.ndarray  # [P, C] float32
    # per head (final-layer scale), plus everything that is not a head output
    head_values: np.ndarray  # [P, n_layers, n_heads] float32
    head_remainder: np.ndarray  # [P] float32
    # the model's own numbers
    final_values: np.ndarray  # [P] float32: the model's logit (difference) at the position
    bias_values: np.ndarray  # [P] float32: b_U[answer] (- b_U[counterfactual])
    # What is not shown on this architecture and why, and how the numbers were computed.
    notes: tuple[str, ...] = ()

    @property
    def n_prompts(self) -> int:
        return len(self.prompts)

    @property
    def target_label(self) -> str:
        """e.g. "' Mary' − ' John'" for the first prompt (the panel labels axes with it)."""
        a = repr(self.answers[0])
        return f"{a} − {self.counterfactuals[0]!r}" if self.is_difference else a


def _hook_names(n_layers: int, with_mid: bool) -> list[str]:
    names = ["hook_embed", "hook_pos_embed", "ln_final.hook_scale",
             f"blocks.{n_layers - 1}.hook_resid_post"]
    kinds = ("hook_resid_pre", "hook_attn_out", "hook_mlp_out", "attn.hook_z")
    if with_mid:
        kinds += ("hook_resid_mid",)
    for layer in range(n_layers):
        names += [f"blocks.{layer}.{h}" for h in kinds]
    return names


def _attrs(cache, stack: torch.Tensor, a: int, c: int | None, pos: int) -> torch.Tensor:
    """Direct attribution of each row of ``stack`` (TransformerLens's ``cache.logit_attrs``, the
    final norm's cached scale): [rows, batch, d] -> [rows]."""
    out = cache.logit_attrs(stack, tokens=a, incorrect_tokens=c, pos_slice=pos,
                            has_batch_dim=cache.has_batch_dim)
    return out.reshape(stack.shape[0], -1)[:, 0].float()


def _validate(request: AttributionRequest) -> None:
    items = request.items
    if not items:
        raise InputError("There are no prompts to attribute.",
                         "Run a prompt, or add lines 'prompt | answer | counterfactual'.")
    if len(items) > MAX_PROMPTS:
        raise InputError(f"{len(items)} prompts is too many for one batch.",
                         f"Use at most {MAX_PROMPTS}.")
    kinds = {bool(it.target.counterfactual) for it in items}
    if len(kinds) > 1:
        raise InputError("Some prompts have a counterfactual and some do not.",
                         "Averaging a logit with a logit difference is meaningless: give every "
                         "prompt a counterfactual, or none.")


def _prefixed(index: int, n: int, exc: InputError) -> InputError:
    if n == 1:
        return exc
    return InputError(f"Prompt {index + 1}: {exc.message}", exc.hint)


@torch.inference_mode()
def _one(host, item: AttributionItem, request: AttributionRequest, index: int, n: int) -> dict:
    from transformer_lens.tools.analysis import direct_logit_attribution

    model = host.model
    try:
        tokens = tokenize(host, item.prompt, request.prepend_bos, request.truncate)
        target = resolve_target(host, item.target, int(tokens.shape[-1]))
    except InputError as exc:
        raise _prefixed(index, n, exc) from exc
    n_layers = int(model.cfg.n_layers)
    # Parallel blocks (GPT-NeoX, GPT-J, Phi, Falcon) have no resid_mid: their logit lens and
    # accumulated stream step from one resid_pre to the next.
    with_mid = "blocks.0.hook_resid_mid" in (getattr(model, "hook_dict", {}) or {})
    logits, cache = model.run_with_cache(tokens, names_filter=_hook_names(n_layers, with_mid))
    pos = target.position
    a, c = target.answer_id, target.counterfactual_id
    incorrect = c if target.is_difference else None
    notes: list[str] = list(host.caps.notes)
    try:
        comp = direct_logit_attribution(model, cache=cache, answer_tokens=a,
                                        incorrect_tokens=incorrect, unit="component", pos=pos)
    except (ValueError, NotImplementedError) as exc:  # TransformerLens refuses DLA here
        return _lens_only(host, item, request, tokens, target, logits, cache, with_mid,
                          notes + [f"Direct logit attribution is not available for this model "
                                   f"(TransformerLens: {exc})"])
    comp_labels = list(comp.labels)
    comp_values = comp.attribution.reshape(len(comp.labels), -1)[:, 0].float()
    if with_mid:
        accum = direct_logit_attribution(model, cache=cache, answer_tokens=a,
                                         incorrect_tokens=incorrect, unit="layer", pos=pos)
        accum_values = accum.attribution.reshape(len(accum.labels), -1)[:, 0].float()
    else:  # what direct_logit_attribution(unit="layer") computes, without resid_mid
        stack = cache.accumulated_resid(apply_ln=False, incl_mid=False, pos_slice=pos)
        accum_values = _attrs(cache, stack, a, incorrect, pos)
    # The embeddings TransformerLens hooks may not be all of block 0's input (XGLM's sinusoidal
    # positions are not hooked): the rest is its own component, so the components add up.
    embed_rows = [i for i, lab in enumerate(comp_labels) if lab in ("embed", "pos_embed")]
    resid0 = cache["blocks.0.hook_resid_pre"]
    hooked = sum((cache[f"hook_{comp_labels[i]}"] for i in embed_rows),
                 torch.zeros_like(resid0))
    rest = resid0 - hooked
    if float(rest.abs().max()) > 1e-5 * max(1.0, float(resid0.abs().max())):
        i = (embed_rows[-1] + 1) if embed_rows else 0
        comp_labels.insert(i, "pos_embed_unhooked")
        comp_values = torch.cat([comp_values[:i],
                                 _attrs(cache, rest[None, :, pos], a, incorrect, pos)[:1],
                                 comp_values[i:]])
        notes.append("This model adds positions to the embeddings without a TransformerLens "
                     "hook (hook_pos_embed): that part of the first block's input is shown as "
                     "'pos_embed_unhooked' (resid_pre 0 − embed), so the components add up.")
    # Components are shown only where they add up to the stream the readout sees.
    total = float(accum_values[-1])
    tol = 1e-3 * max(1.0, abs(total))
    if abs(float(comp_values.sum()) - total) > tol:
        notes.append("On this architecture the components' outputs do not add up to the "
                     "residual stream (e.g. a scaled residual), so per-component attributions "
                     "are not shown.")
        comp_values = torch.full_like(comp_values, float("nan"))
    if host.caps.head_dla:
        head_attr = torch.full((n_layers * int(model.cfg.n_heads) + 1,), float("nan"))
        notes.append("Per-head attribution is not defined on this architecture: "
                     + host.caps.head_dla)
    else:
        heads = direct_logit_attribution(model, cache=cache, answer_tokens=a,
                                         incorrect_tokens=incorrect, unit="head", pos=pos)
        head_attr = heads.attribution.reshape(heads.attribution.shape[0], -1)[:, 0].float()
    row = _lens_row(host, request, tokens, target, logits, cache, with_mid)
    n_heads = int(model.cfg.n_heads)
    row.update({
        "lens_direct": accum_values.cpu().numpy(),
        "component_labels": tuple(comp_labels),
        "component_values": comp_values.cpu().numpy(),
        "head_values": head_attr[:n_layers * n_heads].reshape(n_layers, n_heads).cpu().numpy(),
        "head_remainder": float(head_attr[-1]),
        "notes": tuple(notes),
    })
    return row


def _lens_only(host, item, request, tokens, target, logits, cache, with_mid, notes) -> dict:
    """The logit lens alone, every direct attribution NaN (a model DLA is not defined on)."""
    model = host.model
    row = _lens_row(host, request, tokens, target, logits, cache, with_mid)
    n_layers, n_heads = int(model.cfg.n_layers), int(model.cfg.n_heads)
    labels = ["embed", *[f"{la}_{kind}" for la in range(n_layers) for kind in ("attn_out",
                                                                              "mlp_out")]]
    row.update({
        "lens_direct": np.full(len(row["lens_labels"]), np.nan, dtype=np.float32),
        "component_labels": tuple(labels),
        "component_values": np.full(len(labels), np.nan, dtype=np.float32),
        "head_values": np.full((n_layers, n_heads), np.nan, dtype=np.float32),
        "head_remainder": float("nan"),
        "notes": tuple(notes),
    })
    return row


@torch.inference_mode()
def _lens_row(host, request, tokens, target, logits, cache, with_mid) -> dict:
    from transformer_lens.tools.analysis import logit_lens

    model = host.model
    pos = target.position
    a, c = target.answer_id, target.counterfactual_id
    ids = [a] if c is None else [a, c]
    lens = logit_lens(model, cache=cache, incl_mid=with_mid, positions=pos, targets=ids)
    k = max(1, min(int(request.top_k), int(model.cfg.d_vocab)))
    top = logit_lens(model, cache=cache, incl_mid=with_mid, positions=pos, top_k=k)
    lens_vals = lens.values[:, 0, :].float()  # [E, t]
    lens_ranks = lens.readout.target_ranks[:, 0, :]
    value = lens_vals[:, 0] - (lens_vals[:, 1] if c is not None else 0.0)
    b_u = getattr(model, "b_U", None)
    bias = 0.0
    if b_u is not None:
        bias = float(b_u[a]) - (float(b_u[c]) if c is not None else 0.0)
    top_ids = top.readout.top_ids[:, 0, :].cpu().numpy().astype(np.int64)
    decode = host.tokenizer.decode
    return {
        "str_tokens": tuple(str_tokens(host, tokens[0])),
        "position": pos,
        "answer": decode([a]),
        "counterfactual": decode([c]) if c is not None else "",
        "answer_id": a,
        "counterfactual_id": -1 if c is None else c,
        "lens_labels": tuple(lens.labels),
        "lens_values": value.cpu().numpy(),
        "lens_ranks": lens_ranks[:, 0].cpu().numpy().astype(np.int64),
        "lens_cf_ranks": (lens_ranks[:, 1].cpu().numpy().astype(np.int64) if c is not None
                          else np.full(len(lens.labels), -1, dtype=np.int64)),
        "lens_top_ids": top_ids,
        "lens_top_tokens": tuple(tuple(decode([int(i)]) for i in row) for row in top_ids),
        "lens_top_logits": top.values[:, 0, :].float().cpu().numpy(),
        "final_value": float(target.metric(logits.float())[0]),
        "bias_value": bias,
    }


def run_attribution(host, request: AttributionRequest, ctx: JobContext) -> AttributionResult:
    """Logit lens + DLA for every prompt of ``request``; one model run per prompt."""
    _validate(request)
    n = len(request.items)
    rows = []
    for i, item in enumerate(request.items):
        ctx.check_cancelled()
        ctx.progress(i / n, f"Attributing prompt {i + 1} of {n}…" if n > 1 else "Attributing…")
        rows.append(_one(host, item, request, i, n))
    ctx.check_cancelled()
    for key in ("lens_labels", "component_labels"):
        if len({r[key] for r in rows}) != 1:  # cannot happen for one model; say so if it does
            raise InputError("The prompts decompose into different components.", "")

    def stack(key, dtype=np.float32):
        return np.stack([np.asarray(r[key]) for r in rows]).astype(dtype)

    info = host.info
    ctx.progress(1.0, "Done")
    return AttributionResult(
        prompts=tuple(it.prompt for it in request.items),
        str_tokens=tuple(r["str_tokens"] for r in rows),
        positions=np.array([r["position"] for r in rows], dtype=np.int64),
        answers=tuple(r["answer"] for r in rows),
        counterfactuals=tuple(r["counterfactual"] for r in rows),
        answer_ids=np.array([r["answer_id"] for r in rows], dtype=np.int64),
        counterfactual_ids=np.array([r["counterfactual_id"] for r in rows], dtype=np.int64),
        is_difference=bool(request.items[0].target.counterfactual),
        n_layers=int(info.n_layers),
        n_heads=int(info.n_heads),
        lens_labels=rows[0]["lens_labels"],
        lens_values=stack("lens_values"),
        lens_direct=stack("lens_direct"),
        lens_ranks=stack("lens_ranks", np.int64),
        lens_cf_ranks=stack("lens_cf_ranks", np.int64),
        lens_top_ids=stack("lens_top_ids", np.int64),
        lens_top_tokens=tuple(r["lens_top_tokens"] for r in rows),
        lens_top_logits=stack("lens_top_logits"),
        component_labels=rows[0]["component_labels"],
        component_values=stack("component_values"),
        head_values=stack("head_values"),
        head_remainder=stack("head_remainder"),
        final_values=stack("final_value"),
        bias_values=stack("bias_value"),
        notes=tuple(dict.fromkeys(note for r in rows for note in r["notes"])),
    )
