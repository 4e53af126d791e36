"""Cancel lands inside a forward pass, for every kind of job the app submits, and leaves the model
as it was (no hooks behind, the same numbers after).

Each job runs as app/worker.py runs it (``engine.jobs.run_job``) with a context that raises
Cancelled at the first check made while block 1 of a forward is starting: after block 0 of that
pass, before the pass ends. Checks made by the fast paths' own loops over layers (the patch
runner's staircase, the suffix forward) count when they are at layer 1 too. No timing: where the
check is made is what is tested (bench/bench_cancel.py measures the latencies).
"""

from __future__ import annotations

import dataclasses
import sys

import numpy as np
import pytest

from engine.jobs import Cancelled, Context, run_job
from tests.engine.test_sae import random_weights, saelens6_cfg, write_saelens_folder
from tests.model_fixtures import CORPUS

PROMPT = "When John and Mary went to the store, John gave a drink to"
_LAYER_LOOPS = ("patch_runner.py", "suffix_forward.py")


class CancelInBlock1(Context):
    """Raises Cancelled at the ``nth`` check made as block 1 of a forward starts."""

    def __init__(self, model, nth: int = 1) -> None:
        super().__init__()
        self.nth, self.seen, self.calls, self.landed = nth, 0, 0, None
        self.open_block: int | None = None
        self.blocks_done = 0
        self._handles = []
        for i, block in enumerate(model.blocks):
            self._handles.append(block.register_forward_pre_hook(self._opener(i)))
            self._handles.append(block.register_forward_hook(self._closer))

    def _opener(self, i: int):
        def hook(_module, _args):
            self.open_block = i
        return hook

    def _closer(self, _module, _args, _out):
        self.open_block = None
        self.blocks_done += 1

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()

    def _layer_of_loop(self) -> int | None:
        frame = sys._getframe(2)
        for _ in range(3):  # the check's caller, or the lambda's caller (shortcut_check.py)
            if frame is None:
                return None
            if frame.f_code.co_filename.endswith(_LAYER_LOOPS) and "layer" in frame.f_locals:
                return int(frame.f_locals["layer"])
            frame = frame.f_back
        return None

    def check_cancelled(self) -> None:
        self.calls += 1
        where = self.open_block if self.open_block is not None else self._layer_of_loop()
        if where == 1:
            self.seen += 1
            if self.seen == self.nth:
                self.landed = (where, self.blocks_done)
                raise Cancelled()


def _same(a, b, path="result") -> None:
    """Equal results, field by field (wall-clock ``seconds`` aside)."""
    if dataclasses.is_dataclass(a):
        assert type(a) is type(b), path
        for f in dataclasses.fields(a):
            if f.name != "seconds":
                _same(getattr(a, f.name), getattr(b, f.name), f"{path}.{f.name}")
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for key in a:
            _same(a[key], b[key], f"{path}[{key!r}]")
    elif isinstance(a, (list, tuple)) and not isinstance(a, str):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _same(x, y, f"{path}[{i}]")
    elif isinstance(a, (np.ndarray, np.generic)):
        np.testing.assert_array_equal(a, b, err_msg=path)
    elif isinstance(a, float):
        assert a == b or (np.isnan(a) and np.isnan(b)), path
    else:
        assert a == b, path


@pytest.fixture(scope="module")
def sae(tmp_path_factory):
    """A random SAE whose hook (block 1's MLP output) needs the whole tiny model."""
    folder = tmp_path_factory.mktemp("cancel_sae") / "res-mlp1"
    w = random_weights(64, 160, seed=3)
    w["b_enc"] = w["b_enc"] - 0.15
    write_saelens_folder(folder, saelens6_cfg(64, 160, "blocks.1.hook_mlp_out"), w)
    return str(folder)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("cancel_corpus") / "c.txt"
    path.write_text("\n".join(CORPUS * 40))
    return path


def _pair():
    from engine.patch_pairs import PromptPair

    return PromptPair(PROMPT, PROMPT.replace("John and", "Alice and"), " Mary", " John")


def _analysis_jobs():
    from engine.attention import AttentionRequest, run_attention
    from engine.attribution import AttributionRequest, run_attribution
    from engine.attribution_patching import AttributionPatchRequest, run_attribution_patching
    from engine.induction import (
        AblationRequest,
        InductionRequest,
        run_induction_ablation,
        run_induction_scan,
    )
    from engine.patch_plan import PlanItem, PlanRequest, run_plan
    from engine.patching import SweepRequest, run_sweep
    from engine.path_patching import PathPatchRequest, run_path_patching
    from engine.prompt import PromptRequest, run_prompt

    pairs = (_pair(),)
    return {
        "predictions": (run_prompt, PromptRequest(prompt=PROMPT), False),
        "attention": (run_attention, AttentionRequest(prompts=(PROMPT,)), False),
        "attribution": (run_attribution, AttributionRequest.single(PROMPT, " Mary"), False),
        "head sweep": (run_sweep, SweepRequest(pairs, "head_out"), False),
        "block sweep": (run_sweep, SweepRequest(pairs, "block"), False),
        "head x position sweep": (run_sweep, SweepRequest(pairs, "head_out_by_pos"), False),
        "full-model sweep": (run_sweep, SweepRequest(pairs, "head_out", start_at_layer=False),
                             False),
        "attribution patching": (run_attribution_patching,
                                 AttributionPatchRequest(pairs, "head_out", "logit_diff"), True),
        "path patching": (run_path_patching, PathPatchRequest(pairs, ((0, 0),), "q"), False),
        "patch plan": (run_plan, PlanRequest(pairs, (PlanItem("z", 1, 1), PlanItem("mlp_out", 0)),
                                             "logit_diff"), False),
        "induction scan": (run_induction_scan,
                           InductionRequest(seq_len=8, batch=3, prompt=PROMPT), False),
        "induction ablation": (run_induction_ablation,
                               AblationRequest(heads=((1, 1),), seq_len=8, batch=3), False),
    }


def _sae_jobs(sae, corpus, tmp):
    from engine.patch_plan import PlanItem, PlanRequest, run_plan
    from engine.sae_attribution import FeatureAttributionRequest, run_feature_attribution
    from engine.sae_features import DashboardRequest, run_dashboards
    from engine.sae_prompt import (
        InterventionRequest,
        PromptFeaturesRequest,
        run_intervention,
        run_prompt_features,
    )
    from engine.sae_splice import FeatureEdit
    from engine.targets import Target
    from engine.text_source import TextSource

    source = TextSource("file", str(corpus))
    return {
        "sae prompt features": (run_prompt_features, PromptFeaturesRequest(PROMPT, sae), False),
        "sae feature attribution": (run_feature_attribution,
                                    FeatureAttributionRequest(PROMPT, sae, Target(" Mary")),
                                    False),
        "sae intervention": (run_intervention,
                             InterventionRequest(PROMPT, sae, (FeatureEdit(3, "clamp", 5.0),)),
                             False),
        "sae feature plan": (run_plan, PlanRequest((_pair(),), (PlanItem("feature", 1, 3,
                                                                         sae=sae),),
                                                   "logit_diff"), False),
        "sae dashboards": (run_dashboards, DashboardRequest(sae, source, n_tokens=2048,
                                                           context_size=32), False),
    }


def _forget_memos(host) -> None:
    host.__dict__.pop("_patching_runner", None)


def _cancel_then_compare(host, fn, request, grad, nth: int | None = 1):
    """The job's result; Cancel in block 1 of a forward; the result again, unchanged."""
    model = host.model
    hooks = [(len(b._forward_pre_hooks), len(b._forward_hooks), len(b._backward_hooks))
             for b in model.blocks]
    _forget_memos(host)
    before = run_job(fn, host, request, Context(), grad)
    if nth is None:  # the last time block 1 starts in a run on what the first one memoised
        count = CancelInBlock1(model, nth=10**9)
        try:
            run_job(fn, host, request, count, grad)
        finally:
            count.remove()
        nth = count.seen
    ctx = CancelInBlock1(model, nth)
    try:
        with pytest.raises(Cancelled):
            run_job(fn, host, request, ctx, grad)
    finally:
        ctx.remove()
    assert ctx.landed is not None and ctx.landed[0] == 1
    assert [(len(b._forward_pre_hooks), len(b._forward_hooks), len(b._backward_hooks))
            for b in model.blocks] == hooks
    after = run_job(fn, host, request, Context(), grad)  # memos the cancelled run left, if any
    _same(before, after)
    return ctx


@pytest.mark.parametrize("name", list(_analysis_jobs()))
def test_cancel_lands_in_block_1_and_the_job_then_gives_the_same_result(tiny_host, name):
    fn, request, grad = _analysis_jobs()[name]
    _cancel_then_compare(tiny_host, fn, request, grad)


@pytest.mark.parametrize("name", ["head sweep", "block sweep", "path patching", "patch plan"])
def test_cancel_in_a_patched_pass_keeps_the_memoised_runner_exact(tiny_host, name):
    """Late in the job: the last time block 1 starts (the fast paths' own layer loops included)
    in a job that reuses the clean and corrupted runs the first one memoised on the host, so in
    its patched passes; the memoised runner then still gives exactly the first job's numbers."""
    fn, request, grad = _analysis_jobs()[name]
    _cancel_then_compare(tiny_host, fn, request, grad, nth=None)


@pytest.mark.parametrize("name", ["sae prompt features", "sae feature attribution",
                                  "sae intervention", "sae feature plan", "sae dashboards"])
def test_sae_jobs_cancel_in_block_1(tiny_host, sae, corpus, tmp_path, name):
    fn, request, grad = _sae_jobs(sae, corpus, tmp_path)[name]
    _cancel_then_compare(tiny_host, fn, request, grad)


def test_sae_training_cancels_in_a_forward_of_the_activation_buffer(tiny_host, corpus,
                                                                    tmp_path):
    from engine.sae_train import TrainRequest, TrainSliceRequest, run_train_slice
    from engine.text_source import TextSource

    train = TrainRequest(hook_name="blocks.1.hook_mlp_out", out_folder=str(tmp_path / "out"),
                         source=TextSource("file", str(corpus)), context_size=32,
                         n_tokens=4096, batch_size=64, eval_tokens=256)
    ctx = CancelInBlock1(tiny_host.model)
    try:
        with pytest.raises(Cancelled):
            run_job(run_train_slice, tiny_host, TrainSliceRequest(train, 1, 60.0), ctx)
    finally:
        ctx.remove()
    assert ctx.landed == (1, 1)
    assert not tiny_host.__dict__.get("_sae_training")  # the cancelled run is dropped
    assert not (tmp_path / "out").exists()
