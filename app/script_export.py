"""File > Export as Python script: the window's analyses as a self-contained TransformerLens 4 script.

The script boots the same model (``TransformerBridge.boot_transformers`` + compatibility mode),
tokenises with the same BOS policy, and reruns each analysis through TransformerLens's own
functions: ``run_with_cache`` and ``loss_fn`` (predictions), ``cache["pattern", layer]``
(attention), ``tools.analysis.logit_lens`` and ``direct_logit_attribution`` (attribution),
``patching.get_act_patch_*`` (the patching sweep). It prints each result as one line
``RESULT <name> <json>``, so a reader can compare it with what the panels showed (a test does).

Everything taken from the session (prompts, answers, model names) enters the script only as a
Python literal written by ``repr``: a hostile prompt cannot become code. Generating needs no torch.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field

# Lensbench's sweep kinds -> TransformerLens's patching functions (tests/tl_reference.py checks
# the engine against exactly these).
TL_SWEEPS = {
    "resid_pre": "get_act_patch_resid_pre",
    "resid_mid": "get_act_patch_resid_mid",
    "attn_out": "get_act_patch_attn_out",
    "mlp_out": "get_act_patch_mlp_out",
    "head_out": "get_act_patch_attn_head_out_all_pos",
    "head_out_by_pos": "get_act_patch_attn_head_out_by_pos",
    "head_q": "get_act_patch_attn_head_q_all_pos",
    "head_k": "get_act_patch_attn_head_k_all_pos",
    "head_v": "get_act_patch_attn_head_v_all_pos",
    "head_pattern": "get_act_patch_attn_head_pattern_all_pos",
    "head_q_by_pos": "get_act_patch_attn_head_q_by_pos",
    "head_k_by_pos": "get_act_patch_attn_head_k_by_pos",
    "head_v_by_pos": "get_act_patch_attn_head_v_by_pos",
    "head_pattern_by_pos": "get_act_patch_attn_head_pattern_by_pos",
    "block": "get_act_patch_block_every",
}


@dataclass
class ScriptSpec:
    """What the script reruns; plain values only (gathered from the window by ``spec_of``)."""

    model: str  # an HF name or a local folder
    model_label: str
    device: str = "auto"
    dtype: str = "float32"
    prepend_bos: bool = True
    prompt: str = ""
    top_k: int = 10
    head: tuple[int, int] | None = None  # the attention panel's focused head
    attribution: tuple[str, str, int] | None = None  # answer, counterfactual, position
    pairs: list[tuple[str, str, str, str]] = field(default_factory=list)
    metric: str = "logit_diff_norm"
    direction: str = "denoise"
    sweep: str | None = None
    plan: list[tuple[str, int, int, list[int], str]] = field(default_factory=list)
    # The induction scan as it ran: its repeated sequences (token ids) and detect_head options.
    rep_tokens: list[list[int]] | None = None
    detector_options: dict = field(default_factory=dict)
    prompt_scores: bool = False


def spec_of(window) -> ScriptSpec:
    """The current window's model, prompt, BOS policy and each panel's analysis settings."""
    info = window.controller.model_info
    spec = window.controller.session_spec(window.model_spec)  # loaded or loading, not refused
    folder = info.folder if info is not None and info.folder else spec.name
    bos = window.controller.prepend_bos
    if bos is None:
        bos = info.default_prepend_bos if info is not None else True
    panels = {b.object_name: b for b in window.bindings}
    out = ScriptSpec(model=folder if spec.source != "hf" else spec.name,
                     model_label=info.name if info is not None else spec.display_name,
                     device=spec.device, dtype=spec.dtype, prepend_bos=bool(bos),
                     prompt=window.controller.selection.prompt or window.prompt_editor.prompt(),
                     top_k=window.prompt_editor.top_k.value())
    attention = panels.get("attentionDock")
    if attention is not None and info is not None:
        out.head = tuple(attention.widget.focused_head())
    attribution = panels.get("attributionDock")
    if attribution is not None and attribution.widget.answer_edit.text():
        w = attribution.widget
        out.attribution = (w.answer_edit.text(), w.cf_edit.text(), w.position_spin.value())
    patching = panels.get("patchingDock")
    if patching is not None:
        w = patching.widget
        out.pairs = [tuple(p) for p in w.pairs()]
        out.metric, out.direction = w.metric_name(), w.direction()
        out.sweep = w.sweep_kind() if w.sweep_kind() in TL_SWEEPS else None
        items = list(getattr(w.plan, "items", []) or [])
        if items and all(i.get("component") in PLAN_HOOKS for i in items):
            out.plan = [(str(i["component"]), int(i.get("layer", 0)), int(i.get("index", -1)),
                         [int(p) for p in i.get("positions", [])], str(i.get("mode", "denoise")))
                        for i in items]
    induction = panels.get("inductionDock")
    r = getattr(induction, "result", None)
    if r is not None:
        out.rep_tokens = [[int(t) for t in row] for row in r.rep_tokens]
        out.detector_options = {"exclude_bos": bool(r.exclude_bos),
                                "exclude_current_token": bool(r.exclude_current_token),
                                "error_measure": str(r.error_measure)}
        out.prompt_scores = bool(r.prompt_scores)
    return out


PLAN_HOOKS = ("embed", "resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out", "z", "q",
              "k", "v", "pattern", "neuron")  # plan items the script can patch (not SAE features)

# A panel's "Copy as code" holds its own analysis (and the predictions run it reads from).
PANEL_SECTIONS = {"predictionsDock": {"predictions"},
                  "attentionDock": {"predictions", "attention"},
                  "attributionDock": {"predictions", "attribution"},
                  "patchingDock": {"patching"}, "inductionDock": {"induction"}}
ALL_SECTIONS = {"predictions", "attention", "attribution", "patching", "induction"}


def render(spec: ScriptSpec, when: _dt.datetime | None = None,
           sections: set[str] | None = None) -> str:
    """The script's text: every analysis, or only ``sections``."""
    when = when or _dt.datetime.now()
    want = ALL_SECTIONS if sections is None else sections
    parts = [_HEADER.format(label=_one_line(spec.model_label), when=f"{when:%Y-%m-%d %H:%M}"),
             _SETUP.format(model=repr(spec.model), device=_device(spec.device),
                           dtype=repr(spec.dtype), bos=repr(bool(spec.prepend_bos)))]
    has_prompt = bool(spec.prompt.strip())
    if has_prompt and want & {"predictions", "attention", "attribution"}:
        parts.append(_PREDICTIONS.format(prompt=repr(spec.prompt), top_k=int(spec.top_k)))
        if spec.head is not None and "attention" in want:
            parts.append(_ATTENTION.format(layer=int(spec.head[0]), head=int(spec.head[1])))
        if spec.attribution is not None and "attribution" in want:
            answer, cf, position = spec.attribution
            parts.append(_ATTRIBUTION.format(answer=repr(answer), cf=repr(cf),
                                             position=int(position)))
    if spec.pairs and (spec.sweep in TL_SWEEPS or spec.plan) and "patching" in want:
        parts.append(_PAIRS.format(pairs=_pairs_literal(spec.pairs), metric=repr(spec.metric)))
        if spec.sweep in TL_SWEEPS:
            parts.append(_SWEEP.format(direction=repr(spec.direction), sweep=repr(spec.sweep),
                                       function=TL_SWEEPS[spec.sweep]))
        if spec.plan:
            parts.append(_PLAN.format(plan=_plan_literal(spec.plan)))
    if spec.rep_tokens and "induction" in want:
        opts = spec.detector_options
        parts.append(_INDUCTION.format(
            rep=_tokens_literal(spec.rep_tokens),
            options=", ".join(f"{k}={opts[k]!r}" for k in ("exclude_bos", "exclude_current_token",
                                                           "error_measure") if k in opts)))
        if spec.prompt_scores and has_prompt:
            if "predictions" not in want:
                parts.append(f"\nPROMPT = {spec.prompt!r}")
            parts.append(_INDUCTION_PROMPT)
    return "\n".join(parts)


def snippet(window, object_name: str) -> str | None:
    """One panel's analysis as a script, or None when the panel has none to show yet."""
    sections = PANEL_SECTIONS.get(object_name)
    if sections is None or window.controller.model_info is None:
        return None
    text = render(spec_of(window), sections=sections)
    body = text.split("model.eval()\n", 1)[-1]
    return text if body.strip() else None


def copy_as_code(window, object_name: str) -> bool:
    """Put one panel's snippet on the clipboard; say so (or why not) in the status bar."""
    from PySide6.QtWidgets import QApplication

    text = snippet(window, object_name)
    if text is None:
        window.statusBar().showMessage("Nothing to copy yet: load a model and compute this "
                                       "panel's analysis first.", 6000)
        return False
    QApplication.clipboard().setText(text)
    window.statusBar().showMessage("Copied this analysis as a TransformerLens script.", 6000)
    return True


def _plan_literal(plan) -> str:
    rows = "".join(f"    ({c!r}, {int(la)}, {int(ix)}, {[int(p) for p in ps]!r}, {m!r}),\n"
                   for c, la, ix, ps, m in plan)
    return "[\n" + rows + "]"


def _tokens_literal(rows: list[list[int]]) -> str:
    return "[\n" + "".join(f"    {[int(t) for t in row]!r},\n" for row in rows) + "]"


def _one_line(text: str) -> str:
    """For the docstring: one line, no closing quotes, backslashes literal."""
    return " ".join(str(text).split())[:200].replace("\\", "\\\\").replace('"""', "'''")


def _device(device: str) -> str:
    if device in ("", "auto"):
        return ('"cuda" if torch.cuda.is_available() else ("mps" if torch.backends.mps.'
                'is_available() else "cpu")')
    return repr(device)


def _pairs_literal(pairs) -> str:
    rows = "".join(f"    ({', '.join(repr(str(x)) for x in pair)}),\n" for pair in pairs)
    return "[\n" + rows + "]"


_HEADER = '''#!/usr/bin/env python3
"""Lensbench analyses of {label}, exported {when} as a TransformerLens 4 script.

Reruns what the Lensbench panels computed through TransformerLens's own functions and prints each
result as one line: RESULT <name> <json>. Needs torch and transformer_lens >= 4.
"""

import json

import torch
from transformer_lens.model_bridge import TransformerBridge
'''

_SETUP = '''MODEL = {model}
DEVICE = {device}
DTYPE = {{"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}}[{dtype}]
PREPEND_BOS = {bos}  # the model's default unless it was switched in Lensbench


def report(name, value):
    if isinstance(value, torch.Tensor):
        value = value.detach().float().cpu().tolist()
    print("RESULT", name, json.dumps(value), flush=True)


def single_token(text):
    ids = model.to_tokens(text, prepend_bos=False)[0]
    assert len(ids) == 1, f"{{text!r}} is {{len(ids)}} tokens, not one"
    return int(ids[0])


torch.set_grad_enabled(False)
model = TransformerBridge.boot_transformers(MODEL, device=DEVICE, dtype=DTYPE,
                                            trust_remote_code=False)
model.enable_compatibility_mode(disable_warnings=True)
model.eval()
'''

_PREDICTIONS = '''
# -- Predictions: the top next tokens and the loss at every position -----------------------------
PROMPT = {prompt}
tokens = model.to_tokens(PROMPT, prepend_bos=PREPEND_BOS)
logits, cache = model.run_with_cache(tokens)
top = logits[0].float().softmax(-1).topk(min({top_k}, logits.shape[-1]), dim=-1)
report("predictions.str_tokens", model.to_str_tokens(tokens[0]))
report("predictions.top_ids", top.indices)
report("predictions.top_probs", top.values)
report("predictions.loss_per_token", model.loss_fn(logits, tokens, per_token=True)[0])
'''

_ATTENTION = '''
# -- Attention: the focused head's pattern (query x key) ------------------------------------------
report("attention.pattern.L{layer}H{head}", cache["pattern", {layer}][0, {head}])
'''

_ATTRIBUTION = '''
# -- Attribution: logit lens and direct logit attribution (TransformerLens's tools.analysis) ------
from transformer_lens.tools.analysis import direct_logit_attribution, logit_lens

ANSWER, COUNTERFACTUAL, POSITION = {answer}, {cf}, {position}
pos = POSITION % tokens.shape[-1]
a = single_token(ANSWER)
c = single_token(COUNTERFACTUAL) if COUNTERFACTUAL else None
with_mid = "blocks.0.hook_resid_mid" in model.hook_dict  # parallel blocks have no resid_mid
lens = logit_lens(model, cache=cache, incl_mid=with_mid, positions=pos,
                  targets=[a] if c is None else [a, c])
values = lens.values[:, 0, :].float()
report("attribution.lens_labels", list(lens.labels))
report("attribution.logit_lens", values[:, 0] - (values[:, 1] if c is not None else 0.0))
comp = direct_logit_attribution(model, cache=cache, answer_tokens=a, incorrect_tokens=c,
                                unit="component", pos=pos)
report("attribution.component_labels", list(comp.labels))
report("attribution.components", comp.attribution.reshape(len(comp.labels), -1)[:, 0])
heads = direct_logit_attribution(model, cache=cache, answer_tokens=a, incorrect_tokens=c,
                                 unit="head", pos=pos)
n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
per_head = heads.attribution.reshape(heads.attribution.shape[0], -1)[:, 0]
report("attribution.heads", per_head[:n_layers * n_heads].reshape(n_layers, n_heads))
'''

_PAIRS = '''
# -- Activation patching: the pairs and Lensbench's metric ----------------------------------------
from transformer_lens import patching

PAIRS = {pairs}  # (clean, corrupted, answer, counterfactual)
METRIC = {metric}
clean = torch.cat([model.to_tokens(p[0], prepend_bos=PREPEND_BOS) for p in PAIRS])
corrupted = torch.cat([model.to_tokens(p[1], prepend_bos=PREPEND_BOS) for p in PAIRS])
answers = torch.tensor([single_token(p[2]) for p in PAIRS], device=clean.device)
cfs = (torch.tensor([single_token(p[3]) for p in PAIRS], device=clean.device)
       if PAIRS[0][3] else None)
rows = torch.arange(len(PAIRS), device=clean.device)
last = clean.shape[1] - 1  # the answer is predicted after the last token


def raw_metric(logits):
    at = logits[rows, last].float()
    if METRIC in ("prob", "loss"):
        logp = at.log_softmax(-1).gather(-1, answers[:, None])[:, 0]
        value = logp.exp() if METRIC == "prob" else -logp
    else:
        value = at.gather(-1, answers[:, None])[:, 0]
        if cfs is not None:
            value = value - at.gather(-1, cfs[:, None])[:, 0]
    return value.mean()


clean_logits, clean_cache = model.run_with_cache(clean)
corrupted_logits, corrupted_cache = model.run_with_cache(corrupted)
CLEAN, CORRUPTED = float(raw_metric(clean_logits)), float(raw_metric(corrupted_logits))


def metric(logits):
    value = raw_metric(logits)
    if METRIC == "logit_diff_norm":  # 0 = the corrupted run, 1 = the clean run
        return (value - CORRUPTED) / (CLEAN - CORRUPTED)
    return value
'''

_SWEEP = '''
DIRECTION, SWEEP = {direction}, {sweep}
base, source = ((corrupted, clean_cache) if DIRECTION == "denoise"
                else (clean, corrupted_cache))
report(f"patching.{{SWEEP}}", patching.{function}(model, base, source, metric))
'''

_PLAN = '''
# -- The patch plan: every item together, then each alone (forward hooks) -------------------------
PLAN = {plan}  # (component, layer, head or neuron, positions ([] = all), mode)
HOOKS = {{"embed": ("hook_embed", ("pos", "d")),
         "resid_pre": ("blocks.{{}}.hook_resid_pre", ("pos", "d")),
         "resid_mid": ("blocks.{{}}.hook_resid_mid", ("pos", "d")),
         "resid_post": ("blocks.{{}}.hook_resid_post", ("pos", "d")),
         "attn_out": ("blocks.{{}}.hook_attn_out", ("pos", "d")),
         "mlp_out": ("blocks.{{}}.hook_mlp_out", ("pos", "d")),
         "z": ("blocks.{{}}.attn.hook_z", ("pos", "head", "d")),
         "q": ("blocks.{{}}.attn.hook_q", ("pos", "head", "d")),
         "k": ("blocks.{{}}.attn.hook_k", ("pos", "head", "d")),
         "v": ("blocks.{{}}.attn.hook_v", ("pos", "head", "d")),
         "pattern": ("blocks.{{}}.attn.hook_pattern", ("head", "pos", "k")),
         "neuron": ("blocks.{{}}.mlp.hook_post", ("pos", "neuron"))}}
modes = {{item[4] for item in PLAN}}
# denoise patches into the corrupted run; noise, and plans that only ablate, into the clean run
plan_base, plan_base_cache, plan_source_cache = (
    (corrupted, corrupted_cache, clean_cache) if "denoise" in modes
    else (clean, clean_cache, corrupted_cache))
clean_side = clean_cache


def plan_hook(component, layer, index, positions, mode):
    template, layout = HOOKS[component]
    name = template.format(layer)
    where = tuple(positions if dim == "pos" and positions else
                  index if dim in ("head", "neuron") else slice(None) for dim in layout)
    if mode in ("denoise", "noise"):
        values = plan_source_cache[name]
    elif mode == "zero":
        values = torch.zeros_like(plan_base_cache[name][:1])
    elif mode == "mean":  # over every clean and corrupted prompt, and every position but a pattern's
        both = torch.cat([plan_base_cache[name], plan_source_cache[name]])
        values = both.mean(dim=[0] if component == "pattern" else [0, 1], keepdim=True)
    else:  # resample: each pair's activation from another pair's clean run
        values = torch.roll(clean_side[name], 1, dims=0)

    def hook(act, hook):
        act[(slice(None), *where)] = values.expand_as(act)[(slice(None), *where)].to(act.dtype)
        return act
    return name, hook


values = [metric(model.run_with_hooks(plan_base, fwd_hooks=[plan_hook(*i) for i in PLAN]))]
values += [metric(model.run_with_hooks(plan_base, fwd_hooks=[plan_hook(*i)])) for i in PLAN]
report("patching.plan", torch.stack(values))
'''


_INDUCTION = '''
# -- Induction scan: head_detector's scores on the scan's repeated random tokens ------------------
from transformer_lens.head_detector import (
    compute_head_attention_similarity_score,
    detect_head,
    get_duplicate_token_head_detection_pattern,
    get_induction_head_detection_pattern,
    get_previous_token_head_detection_pattern,
)

REP_TOKENS = {rep}
DETECTOR_OPTIONS = dict({options})
DETECTORS = {{"previous": get_previous_token_head_detection_pattern,
              "duplicate": get_duplicate_token_head_detection_pattern,
              "induction_detector": get_induction_head_detection_pattern}}


def detector_scores(tokens):
    """detect_head's scores for one sequence of token ids (what it does for a string)."""
    _, seq_cache = model.run_with_cache(tokens, remove_batch_dim=True)
    out = {{}}
    for name, make in DETECTORS.items():
        pattern = make(tokens.cpu()).to(tokens.device)
        scores = torch.empty(model.cfg.n_layers, model.cfg.n_heads)
        for layer in range(model.cfg.n_layers):
            layer_patterns = seq_cache["pattern", layer, "attn"]
            for head in range(model.cfg.n_heads):
                scores[layer, head] = compute_head_attention_similarity_score(
                    layer_patterns[head], detection_pattern=pattern, **DETECTOR_OPTIONS)
        out[name] = scores
    return out


per_sequence = [detector_scores(torch.tensor([row], device=model.cfg.device))
                for row in REP_TOKENS]
for name in DETECTORS:  # detect_head averages over a list of sequences the same way
    report(f"induction.repeated.{{name}}", torch.stack([s[name] for s in per_sequence]).mean(0))
'''

_INDUCTION_PROMPT = '''
# detect_head tokenises the prompt itself, with the model's default BOS
if PREPEND_BOS == model.cfg.default_prepend_bos:
    for name, head_name in (("previous", "previous_token_head"),
                            ("duplicate", "duplicate_token_head"),
                            ("induction", "induction_head")):
        report(f"induction.prompt.{name}", detect_head(model, PROMPT, head_name,
                                                       **DETECTOR_OPTIONS))
'''


def export_dialog(window) -> str | None:
    """Ask where, write the script; a problem is shown in the window's error box."""
    from PySide6.QtWidgets import QFileDialog

    from app.exports import write_text_atomic

    if window.controller.model_info is None:
        window.statusBar().showMessage("Load a model first: the script reruns its analyses.",
                                       6000)
        return None
    path, _ = QFileDialog.getSaveFileName(window, "Export as Python script",
                                          "lensbench_analysis.py", "Python script (*.py)")
    if not path:
        return None
    if not path.endswith(".py"):
        path += ".py"
    try:
        write_text_atomic(path, render(spec_of(window)))
    except OSError as exc:
        from engine.errors import ErrorInfo

        window.errors.show("script", ErrorInfo("OSError", f"Could not write {path}: "
                                               f"{exc.strerror or exc}", "", "Choose another "
                                               "folder; nothing else changed.", "input"))
        return None
    window.statusBar().showMessage(f"Wrote {path}", 6000)
    return path
