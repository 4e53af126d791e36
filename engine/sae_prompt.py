"""SAE jobs on one prompt: load an SAE, its features on the prompt, and interventions.

- :func:`run_load_sae` checks an SAE folder against the loaded model and returns what the
  Features panel lists (configuration, logit effects, the SAE file's own density estimate);
- :func:`run_prompt_features` gives every feature's activation at every position of a prompt,
  plus how much of the activation the SAE leaves unexplained (the error term);
- :func:`run_intervention` ablates, clamps or steers features (with the error term kept) and
  reports the predictions before and after.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from engine.jobs import JobContext
from engine.sae_features import LogitEffects, logit_effects
from engine.sae_io import get_sae, read_log_sparsity
from engine.sae_splice import FeatureEdit, activations, check_edits, edit_hook
from engine.targets import Target, resolve_target
from engine.tokens import str_tokens, tokenize


@dataclass(frozen=True)
class SAELoadRequest:
    folder: str


@dataclass(frozen=True)
class SAEInfo:
    folder: str
    name: str
    digest: str
    cfg: dict  # plain values from the SAEConfig
    description: str
    d_sae: int
    hook_name: str
    logits: LogitEffects
    log_sparsity: np.ndarray | None  # [F] float32 from sparsity.safetensors, when present
    vocab: tuple[str, ...]  # decoded token of every id (to show contexts)
    model_name: str


def _vocab(host) -> tuple[str, ...]:
    cached = host.__dict__.get("_vocab_strings")
    if cached is None:
        decode = host.tokenizer.decode
        cached = tuple(decode([i]) for i in range(int(host.info.d_vocab)))
        host.__dict__["_vocab_strings"] = cached
    return cached


def run_load_sae(host, request: SAELoadRequest, ctx: JobContext) -> SAEInfo:
    ctx.progress(0.1, "Loading the SAE…")
    loaded = get_sae(host, request.folder)
    ctx.check_cancelled()
    ctx.progress(0.5, "Computing the features' logit effects…")
    effects = logit_effects(host, loaded)
    cfg = loaded.cfg
    sparsity = read_log_sparsity(loaded.folder, cfg.d_sae)
    plain = {k: getattr(cfg, k) for k in ("d_in", "d_sae", "hook_name", "architecture", "k",
                                          "normalize_activations", "model_name", "context_size",
                                          "dataset_path")}
    ctx.progress(1.0, "SAE loaded")
    return SAEInfo(loaded.folder, loaded.name, loaded.digest, plain, cfg.describe(), cfg.d_sae,
                   cfg.hook_name, effects, None if sparsity is None else sparsity.numpy(),
                   _vocab(host), host.info.name)


@dataclass(frozen=True)
class PromptFeaturesRequest:
    prompt: str
    sae_folder: str
    prepend_bos: bool | None = None  # None: the model's default (engine.tokens.bos_policy)
    truncate: bool = False


@dataclass(frozen=True)
class PromptFeatures:
    prompt: str
    sae_folder: str
    str_tokens: tuple[str, ...]
    acts: np.ndarray  # [pos, F] float32
    act_norm: np.ndarray  # [pos] float32: |x| at the hook
    error_norm: np.ndarray  # [pos] float32: |x - x_hat|

    def top_at(self, position: int, n: int = 20) -> list[tuple[int, float]]:
        """The features firing most at ``position``: [(feature, activation)]."""
        row = self.acts[position]
        order = np.argsort(-row)[:n]
        return [(int(i), float(row[i])) for i in order if row[i] > 0]


@torch.inference_mode()
def run_prompt_features(host, request: PromptFeaturesRequest, ctx: JobContext) -> PromptFeatures:
    loaded = get_sae(host, request.sae_folder)
    sae = loaded.sae
    tokens = tokenize(host, request.prompt, request.prepend_bos, request.truncate)
    ctx.check_cancelled()
    x = sae.flat(activations(host.model, tokens, sae.cfg.hook_name))[0]
    f, state = sae.encode_with_state(x)
    err = x - sae.decode(f, state)
    return PromptFeatures(request.prompt, loaded.folder, tuple(str_tokens(host, tokens[0])),
                          f.cpu().numpy().astype(np.float32),
                          x.norm(dim=-1).cpu().numpy().astype(np.float32),
                          err.norm(dim=-1).cpu().numpy().astype(np.float32))


@dataclass(frozen=True)
class InterventionRequest:
    prompt: str
    sae_folder: str
    edits: tuple[FeatureEdit, ...]
    top_k: int = 10
    answer: str = ""  # optional: report this token's logit (minus the counterfactual's)
    counterfactual: str = ""
    prepend_bos: bool | None = None  # None: the model's default (engine.tokens.bos_policy)
    truncate: bool = False


@dataclass(frozen=True)
class InterventionResult:
    prompt: str
    labels: tuple[str, ...]  # one per edit
    str_tokens: tuple[str, ...]
    before_tokens: tuple[str, ...]  # top-k next tokens after the prompt, unedited
    before_probs: np.ndarray  # [k] float32
    after_tokens: tuple[str, ...]
    after_probs: np.ndarray  # [k] float32
    kl: np.ndarray  # [pos] float32: KL(before || after) of the next-token distribution
    target_label: str
    target_before: float  # answer logit (difference); nan without an answer
    target_after: float
    loss_before: float  # mean next-token loss on the prompt
    loss_after: float


@torch.inference_mode()
def run_intervention(host, request: InterventionRequest, ctx: JobContext) -> InterventionResult:
    loaded = get_sae(host, request.sae_folder)
    sae = loaded.sae
    tokens = tokenize(host, request.prompt, request.prepend_bos, request.truncate)
    n_pos = int(tokens.shape[-1])
    check_edits(request.edits, sae.cfg.d_sae, n_pos)
    target = resolve_target(host, Target(request.answer, request.counterfactual), n_pos) \
        if request.answer else None
    model = host.model
    ctx.progress(0.2, "Running the prompt…")
    before = model(tokens, return_type="logits").float()
    ctx.check_cancelled()
    ctx.progress(0.6, "Running it with the features edited…")
    with model.hooks(fwd_hooks=[(sae.cfg.hook_name, edit_hook(sae, request.edits))]):
        after = model(tokens, return_type="logits").float()
    lp_b, lp_a = torch.log_softmax(before[0], -1), torch.log_softmax(after[0], -1)
    kl = (lp_b.exp() * (lp_b - lp_a)).sum(-1)
    k = max(1, min(int(request.top_k), int(lp_b.shape[-1])))
    decode = host.tokenizer.decode
    tb, ta = lp_b[-1].topk(k), lp_a[-1].topk(k)
    ids = tokens[0, 1:, None]
    loss_b = float(-lp_b[:-1].gather(-1, ids).mean()) if n_pos > 1 else float("nan")
    loss_a = float(-lp_a[:-1].gather(-1, ids).mean()) if n_pos > 1 else float("nan")
    t_before = t_after = float("nan")
    label = ""
    if target is not None:
        t_before = float(target.metric(before)[0])
        t_after = float(target.metric(after)[0])
        label = repr(decode([target.answer_id])) + (
            f" − {decode([target.counterfactual_id])!r}" if target.is_difference else "")
    ctx.progress(1.0, "done")
    return InterventionResult(
        request.prompt, tuple(e.label() for e in request.edits),
        tuple(str_tokens(host, tokens[0])),
        tuple(decode([int(i)]) for i in tb.indices), tb.values.exp().cpu().numpy(),
        tuple(decode([int(i)]) for i in ta.indices), ta.values.exp().cpu().numpy(),
        kl.cpu().numpy().astype(np.float32), label, t_before, t_after, loss_b, loss_a)
