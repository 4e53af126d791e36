"""On a CUDA machine: the device choice, half-precision loads, and a sweep's, a scan's and the
attribution's numbers on the GPU against the same model on the CPU and against TransformerLens
there. Skipped where torch sees no CUDA GPU (CI); run with ``pytest -m gpu tests/gpu``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.attention import AttentionRequest, run_attention
from engine.attribution import AttributionRequest, run_attribution
from engine.devices import available_devices, memory_used, pick_device, supported_dtypes
from engine.host import load_host
from engine.induction import InductionRequest, run_induction_scan
from engine.jobs import Context
from engine.model_sources import ModelSpec
from engine.patching import SweepRequest, run_sweep
from tests.model_fixtures import make_tokenizer
from tests.model_matrix import make_family_folder
from tests.tl_reference import BASE, PAIRS, Runs, assert_spread, sample_cells

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here")]

# Rotary, parallel blocks, RMSNorm with grouped-query attention, soft-capping, ALiBi, learned
# positions, biased grouped-query projections: each block form the CPU matrix covers.
FAMILIES = ("gpt2", "gpt_neox", "llama", "gemma2", "bloom", "qwen2", "phi")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    tokenizer = tmp_path_factory.mktemp("gpu_tokenizer")
    make_tokenizer(tokenizer)
    made: dict = {}

    def get(family: str):
        if family not in made:
            made[family] = make_family_folder(family, tmp_path_factory.mktemp(family),
                                              tokenizer_dir=tokenizer)
        return made[family]
    return get


@pytest.fixture(scope="module")
def hosts(folders):
    loaded: dict = {}

    def get(family: str, device: str, dtype: str = "float32"):
        key = (family, device, dtype)
        if key not in loaded:
            loaded[key] = load_host(ModelSpec("folder", str(folders(family)), device, dtype))
        return loaded[key]
    return get


def test_auto_picks_cuda_and_offers_half_precision():
    assert pick_device("auto") == "cuda"
    assert "cuda:0" in available_devices()
    assert "float16" in supported_dtypes("cuda")
    if torch.cuda.is_bf16_supported():
        assert "bfloat16" in supported_dtypes("cuda")


def test_auto_loads_onto_the_gpu_and_reports_memory(folders):
    host = load_host(ModelSpec("folder", str(folders("llama")), "auto"))
    assert host.info.device.startswith("cuda")
    assert all(p.device.type == "cuda" for p in host.model.parameters())
    assert memory_used("cuda") > 0 and host.info.memory_bytes > 0
    host.close()


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("kind,pairs", [("block", "first"), ("head_every", "middle"),
                                        ("head_out_by_pos", "several")])
def test_sweep_on_the_gpu_equals_the_cpu_and_transformer_lens(hosts, family, kind, pairs):
    gpu, cpu = hosts(family, "cuda"), hosts(family, "cpu")
    request = SweepRequest(PAIRS[pairs], kind, metric="logit_diff")
    ours = run_sweep(gpu, request, Context())
    ref = run_sweep(cpu, request, Context())
    assert ours.complete and ours.path
    finite = np.isfinite(ref.values)
    assert (np.isfinite(ours.values) == finite).all()
    assert_spread(ref.values[finite], f"{family} {kind}")
    np.testing.assert_allclose(ours.values[finite], ref.values[finite], atol=1e-4, rtol=1e-4)
    # TransformerLens's own function, on the GPU, on a sample of the cells.
    tl = Runs(gpu, PAIRS[pairs], "logit_diff")
    for c, part in enumerate(ours.labels["components"]):
        shape = ours.part_shape(part)
        values = ours.values[c] if len(ours.labels["components"]) > 1 else ours.values
        cells = sample_cells(shape, ours.labels["part_axes"][part], tl.first_difference())
        want = tl.sweep(part, cells=cells)
        got = np.array([values[cell] for cell in cells])
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
def test_induction_scan_and_attention_on_the_gpu_equal_the_cpu(hosts, family):
    gpu, cpu = hosts(family, "cuda"), hosts(family, "cpu")
    request = InductionRequest(seq_len=20, batch=4)
    ours, ref = (run_induction_scan(h, request, Context()) for h in (gpu, cpu))
    assert (ours.rep_tokens == ref.rep_tokens).all()
    for name, want in ref.repeated.items():
        np.testing.assert_allclose(ours.repeated[name], want, atol=1e-5)
    a, b = (run_attention(h, AttentionRequest(prompts=(BASE,)), Context()) for h in (gpu, cpu))
    for layer in range(len(b.items[0].patterns)):
        np.testing.assert_allclose(a.items[0].patterns[layer], b.items[0].patterns[layer],
                                   atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_attribution_on_the_gpu_equals_the_cpu(hosts, family):
    request = AttributionRequest.single(BASE, " Mary", " John")
    ours, ref = (run_attribution(hosts(family, d), request, Context()) for d in ("cuda", "cpu"))
    np.testing.assert_allclose(ours.lens_values, ref.lens_values, atol=1e-4)
    np.testing.assert_allclose(ours.component_values, ref.component_values, atol=1e-4)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("family", ["gpt2", "llama", "gpt_neox"])
def test_half_precision_runs_and_stays_near_float32(hosts, family, dtype):
    """A half-precision model gives every analysis, near its float32 numbers (half precision
    cannot be held to 1e-4; the sweep keeps its ranking of cells)."""
    if dtype == "bfloat16" and not torch.cuda.is_bf16_supported():
        pytest.skip("no bfloat16 on this GPU")
    half, full = hosts(family, "cuda", dtype), hosts(family, "cuda")
    assert half.info.dtype == dtype
    assert next(half.model.parameters()).dtype == getattr(torch, dtype)
    request = SweepRequest(PAIRS["middle"], "block", metric="logit_diff")
    h, f = (run_sweep(x, request, Context()) for x in (half, full))
    assert h.complete and np.isfinite(h.values).all()
    scale = float(np.abs(f.values).max())
    assert np.abs(h.values - f.values).max() < 0.1 * scale
    assert np.corrcoef(h.values.ravel(), f.values.ravel())[0, 1] > 0.98
    a, b = (run_attention(x, AttentionRequest(prompts=(BASE,)), Context()) for x in (half, full))
    for layer in range(len(b.items[0].patterns)):
        np.testing.assert_allclose(a.items[0].patterns[layer], b.items[0].patterns[layer],
                                   atol=0.05)
