"""What the loaded model has, and which TransformerLens hooks do what their names say on it.

TransformerLens 4 wraps each Hugging Face architecture in a *bridge*, and its hooks do not mean the
same on every bridge: a parallel block (GPT-NeoX, GPT-J, Phi, Falcon) has no ``hook_resid_mid``; on
OPT, GPT-Neo, GPT-J and XGLM the attention bridge calls the original HF attention, so
``hook_pattern`` reports the pattern but editing it changes nothing; a post-attention norm (Gemma 2
and 3, OLMo 2) means a head's write to the residual stream is not its own ``z @ W_O``. Panels offer
only what a model has, and an analysis asked for something else raises ``InputError`` with a hint.

``probe`` finds this out once per model, on layer 0 with two short random sequences A and B and
``stop_at_layer=1`` (one block, so it costs little even on large models):

- a hook is *present* if the bridge exposes it;
- it is *patchable* if writing B's activation into A's run changes block 0's output, and the change
  is complete: B's ``resid_pre`` gives B's ``resid_post``; B's ``z`` gives B's ``attn_out``; B's
  ``q``, ``k`` and ``v`` together give B's ``z``; B's ``pattern`` gives ``pattern_B @ v_A``;
- a head's write to the residual stream is its own ``z @ W_O`` (so per-head direct logit
  attribution and path patching from sender heads are defined) if the block has no post-norm,
  ``resid_post = resid_pre + attn_out + mlp_out``, and the heads' ``z @ W_O`` (plus ``b_O``) sum
  to ``hook_attn_out``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from engine.errors import InputError

# component -> hook name template (layer-indexed, or a fixed name)
HOOKS = {
    "embed": "hook_embed",
    "resid_pre": "blocks.{}.hook_resid_pre",
    "resid_mid": "blocks.{}.hook_resid_mid",
    "resid_post": "blocks.{}.hook_resid_post",
    "attn_out": "blocks.{}.hook_attn_out",
    "mlp_out": "blocks.{}.hook_mlp_out",
    "z": "blocks.{}.attn.hook_z",
    "q": "blocks.{}.attn.hook_q",
    "k": "blocks.{}.attn.hook_k",
    "v": "blocks.{}.attn.hook_v",
    "pattern": "blocks.{}.attn.hook_pattern",
    "neuron": "blocks.{}.mlp.hook_post",
}
COMPONENT_LABELS = {
    "embed": "token embedding", "resid_pre": "residual stream before the block (resid_pre)",
    "resid_mid": "residual stream between attention and MLP (resid_mid)",
    "resid_post": "residual stream after the block (resid_post)",
    "attn_out": "attention output (attn_out)", "mlp_out": "MLP output (mlp_out)",
    "z": "head outputs (z)", "q": "queries (q)", "k": "keys (k)", "v": "values (v)",
    "pattern": "attention patterns", "neuron": "MLP neurons (hook_post)",
}


@dataclass(frozen=True)
class Capabilities:
    """Plain values the UI and every analysis consult. ``missing[c]`` says why component ``c``
    cannot be patched on this model (absent: it can)."""

    architecture: str = ""
    n_heads: int = 0
    n_kv_heads: int = 0
    default_prepend_bos: bool = True
    parallel_blocks: bool = False
    post_norms: bool = False
    logit_softcap: float = 0.0
    missing: dict = field(default_factory=dict)  # component -> reason (for the user)
    head_dla: str = ""  # why per-head DLA is not defined ("" = it is)
    notes: tuple[str, ...] = ()

    @property
    def components(self) -> tuple[str, ...]:
        """Patchable components, in HOOKS order."""
        return tuple(c for c in HOOKS if c not in self.missing)

    @property
    def kv_group(self) -> int:
        """Query heads per key/value head (1 without grouped-query attention)."""
        return max(1, self.n_heads // max(1, self.n_kv_heads or self.n_heads))

    def has(self, component: str) -> bool:
        return component in HOOKS and component not in self.missing

    def require(self, component: str, what: str = "") -> None:
        """Raise InputError (with a hint) unless ``component`` can be patched on this model."""
        if component not in HOOKS:
            raise InputError(f"Unknown component {component!r}.",
                             "Use one of " + ", ".join(HOOKS) + ".")
        reason = self.missing.get(component)
        if reason:
            label = what or COMPONENT_LABELS[component]
            raise InputError(f"{label[:1].upper()}{label[1:]} cannot be patched on this "
                             f"{self.architecture or 'model'}: {reason}", _HINTS.get(component, ""))


_HINTS = {
    "resid_mid": "Patch resid_pre, resid_post, attn_out or mlp_out instead.",
    "pattern": "Patch the heads' outputs (z), queries, keys or values instead.",
    "q": "Patch the heads' outputs (z) instead.",
    "k": "Patch the heads' outputs (z) instead.",
    "v": "Patch the heads' outputs (z) instead.",
    "neuron": "Patch mlp_out instead.",
}


def _probe_tokens(model, n: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    vocab = int(model.cfg.d_vocab)
    special = set(getattr(getattr(model, "tokenizer", None), "all_special_ids", []) or [])
    ids = [i for i in range(min(vocab, 4 * n + 16)) if i not in special]
    if len(ids) < 2 * n:
        ids = list(range(vocab))
    dev = next(model.parameters()).device
    a = torch.tensor([ids[:n]], device=dev)
    b = torch.tensor([ids[n:2 * n][::-1]], device=dev)
    return a, b


def _close(x: torch.Tensor, y: torch.Tensor, tol: float = 1e-4) -> bool:
    if x.shape != y.shape:
        return False
    x, y = x.float(), y.float()
    scale = max(1.0, float(y.abs().max()))
    return bool(torch.isfinite(x).all()) and float((x - y).abs().max()) <= tol * scale


@torch.inference_mode()
def probe(model) -> Capabilities:
    """Find out what ``model`` (a bridge in compatibility mode) has; see the module docstring."""
    cfg = model.cfg
    arch = str(getattr(cfg, "architecture", "") or type(model).__name__)
    n_heads = int(cfg.n_heads)
    n_kv = int(getattr(cfg, "n_key_value_heads", None) or n_heads)
    hook_dict = getattr(model, "hook_dict", {}) or {}
    names = {c: HOOKS[c].format(0) for c in HOOKS}
    missing: dict[str, str] = {}
    for comp, name in names.items():
        if name not in hook_dict:
            missing[comp] = _absent_reason(comp, arch)
    block0 = model.blocks[0]
    post_norms = any(hasattr(block0, n) for n in ("ln1_post", "ln2_post"))
    parallel = "resid_mid" in missing
    softcap = float(getattr(cfg, "output_logits_soft_cap", -1.0) or -1.0)
    out_name = "blocks.0.hook_resid_post"
    a, b = _probe_tokens(model)
    wanted = [n for c, n in names.items() if c not in missing] + [out_name]
    wanted = sorted(set(wanted))
    try:
        _, cache_a = model.run_with_cache(a, names_filter=lambda n: n in wanted, stop_at_layer=1)
        _, cache_b = model.run_with_cache(b, names_filter=lambda n: n in wanted, stop_at_layer=1)
    except Exception as exc:  # noqa: BLE001 - a model we cannot probe gets no shortcuts either
        return Capabilities(arch, n_heads, n_kv, bool(getattr(cfg, "default_prepend_bos", True)),
                            parallel, post_norms, max(0.0, softcap), missing,
                            "the model could not be probed", (f"Probe failed: {exc}",))
    store_a = cache_a.cache_dict if hasattr(cache_a, "cache_dict") else dict(cache_a.items())
    store_b = cache_b.cache_dict if hasattr(cache_b, "cache_dict") else dict(cache_b.items())

    def run(patches: dict[str, torch.Tensor], watch: str) -> torch.Tensor | None:
        got: dict[str, torch.Tensor] = {}

        def setter(value):
            def hook(act, hook=None):
                return value.to(act.dtype) if value.shape == act.shape else act
            return hook

        def grab(act, hook=None):
            got["x"] = act.detach().clone()

        hooks = [(n, setter(v)) for n, v in patches.items()] + [(watch, grab)]
        try:
            model.run_with_hooks(a, fwd_hooks=hooks, stop_at_layer=1)
        except Exception:  # noqa: BLE001 - a hook that breaks the forward is not patchable
            return None
        return got.get("x")

    def effect(comp: str) -> bool:
        name = names[comp]
        out = run({name: store_b[name]}, out_name)
        return out is not None and not _close(out, store_a[out_name], 1e-6)

    for comp in list(names):
        if comp in missing or names[comp] not in store_a:
            if comp not in missing:
                missing[comp] = "TransformerLens's hook for it did not fire."
            continue
        if not effect(comp):
            missing[comp] = _no_effect_reason(comp, arch)
    # Completeness: the hooks carry everything downstream needs.
    z_name, ao_name = names["z"], names["attn_out"]
    if "resid_pre" not in missing:
        out = run({names["resid_pre"]: store_b[names["resid_pre"]]}, out_name)
        if out is None or not _close(out, store_b[out_name]):
            missing["resid_pre"] = "writing a whole resid_pre does not reproduce that run."
    if "z" not in missing and "attn_out" in store_a:
        out = run({z_name: store_b[z_name]}, ao_name)
        if out is None or not _close(out, store_b[ao_name]):
            missing["z"] = "writing every head's z does not reproduce that run's attention output."
    qkv = [c for c in ("q", "k", "v") if c not in missing]
    if len(qkv) == 3 and z_name in store_a:
        out = run({names[c]: store_b[names[c]] for c in qkv}, z_name)
        if out is None or not _close(out, store_b[z_name]):
            for c in qkv:
                missing[c] = ("writing q, k and v does not reproduce that run's head outputs "
                              "(the hooks do not carry what attention uses).")
    if "pattern" not in missing and "v" in store_a and z_name in store_a:
        pattern_b = store_b[names["pattern"]].float()
        v_a = store_a[names["v"]].float()
        v_q = v_a.repeat_interleave(max(1, n_heads // max(1, v_a.shape[2])), dim=2)
        want = torch.einsum("bhqk,bkhd->bqhd", pattern_b, v_q)
        out = run({names["pattern"]: store_b[names["pattern"]]}, z_name)
        if out is None or not _close(out, want):
            missing["pattern"] = ("writing the pattern does not give pattern · v (the hook is not "
                                  "the softmax the values are pooled with).")
    head_dla = ""
    rp, mo = names["resid_pre"], names["mlp_out"]
    additive = all(n in store_a for n in (rp, ao_name, mo, out_name)) and _close(
        store_a[rp] + store_a[ao_name] + store_a[mo], store_a[out_name])
    if not additive:
        head_dla = ("the block scales or transforms its attention and MLP outputs before adding "
                    "them to the residual stream, so a head's write is not its own z·W_O.")
    elif post_norms:
        head_dla = ("each attention output is normalised again after the heads are summed "
                    "(a post-attention norm), so a head's write to the residual stream is not its "
                    "own z·W_O.")
    elif z_name in store_a and ao_name in store_a:
        attn = block0.attn
        w_o = getattr(attn, "W_O", None)
        if w_o is None:
            head_dla = "the attention output weights (W_O) are not available."
        else:
            heads = torch.einsum("bphd,hdm->bpm", store_a[z_name].float(), w_o.float())
            b_o = getattr(attn, "b_O", None)
            if b_o is not None:
                heads = heads + b_o.float()
            if not _close(heads, store_a[ao_name], 1e-4):
                head_dla = "the heads' z·W_O do not add up to the attention output."
    notes = []
    if softcap > 0:
        notes.append(f"This model soft-caps its logits ({softcap:g}·tanh(x/{softcap:g})): "
                     "attributions add up to the logit before the cap.")
    return Capabilities(arch, n_heads, n_kv, bool(getattr(cfg, "default_prepend_bos", True)),
                        parallel, post_norms, max(0.0, softcap), missing, head_dla, tuple(notes))


def _absent_reason(comp: str, arch: str) -> str:
    if comp == "resid_mid":
        return ("its blocks run attention and the MLP in parallel on the same input, so there is "
                "no residual stream between them (no resid_mid).")
    return f"TransformerLens exposes no {HOOKS[comp].format('L')} hook for it."


def _no_effect_reason(comp: str, arch: str) -> str:
    what = HOOKS[comp].format("L")
    if comp == "pattern":
        return (f"TransformerLens's {what} hook is read-only on this architecture (the bridge "
                "reports the pattern but calls the original attention, so editing it changes "
                "nothing); patching it would return the unpatched run.")
    return (f"TransformerLens's {what} hook is read-only on this architecture: editing it does "
            "not change the model's output.")
