"""Training an SAE as a job: streamed activations, live curves, dead features, evaluation.

The loss is SAELens's: squared reconstruction error summed over the d_in dimensions, plus (for
ReLU SAEs) ``l1_coefficient`` times the L1 norm of the feature activations, on activations
scaled so that their mean norm is sqrt(d_in) (so coefficients carry over between models and
hooks; the scale is folded into the saved weights). Decoder rows are kept at unit norm, with the
gradient's component along each row removed before the step (as in the tutorial's SAE).

Dead features (no activation over the last ``dead_window`` tokens): ReLU SAEs *resample* them
(Anthropic, "Towards Monosemanticity": re-initialised towards inputs the SAE reconstructs worst,
with their Adam state reset) at fixed points of training; TopK SAEs get the *auxiliary loss* of
Gao et al. 2024 (the top ``d_in/2`` dead features reconstruct the residual error).

Every ~0.4 s a :class:`TrainProgress` goes out as a partial result (curves of MSE, L0, dead
fraction), the job checks for Cancel between steps, and a loss that becomes NaN/infinite or
explodes stops training with a message saying to lower the learning rate. At the end the SAE is
evaluated on held-out text (``engine.sae_eval``) and saved in SAELens's layout.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from engine.errors import InputError
from engine.jobs import JobContext
from engine.sae import SAEConfig, SparseAutoencoder, check_fits, hook_width, parse_hook
from engine.sae_buffer import ActivationStream
from engine.sae_eval import SAEEvaluation, evaluate_sae
from engine.sae_io import save_sae
from engine.text_source import TextSource
from engine.tokens import bos_policy

PARTIAL_SECONDS = 0.4


@dataclass(frozen=True)
class TrainRequest:
    hook_name: str
    out_folder: str
    source: TextSource = field(default_factory=TextSource)
    expansion: float = 8.0  # features = expansion x d_in
    architecture: str = "standard"  # standard (ReLU + L1) | topk
    l1_coefficient: float = 5.0
    k: int = 32
    n_tokens: int = 2_000_000
    batch_size: int = 4096  # activations per optimiser step
    lr: float = 1e-3
    context_size: int = 128
    buffer_batches: int = 16
    dead_window: int = 200_000  # tokens without an activation that make a feature dead
    resample_at: tuple[float, ...] = (0.25, 0.5, 0.75)  # fractions of training (ReLU SAEs)
    aux_coefficient: float = 1 / 32  # TopK auxiliary loss
    eval_tokens: int = 50_000
    seed: int = 0
    model_name: str = ""


@dataclass(frozen=True)
class TrainProgress:
    """Curves so far, one entry per logged step. Sent as a partial result."""

    tokens: np.ndarray  # [n] float64, training tokens seen
    mse: np.ndarray  # [n] float32, per-token squared error / d_in (scaled space)
    l0: np.ndarray  # [n] float32
    dead_fraction: np.ndarray  # [n] float32
    step: int
    n_steps: int
    tokens_per_second: float
    seconds: float
    resampled: int  # features resampled so far


@dataclass(frozen=True)
class TrainResult:
    folder: str
    cfg: dict  # the saved cfg.json
    progress: TrainProgress
    evaluation: SAEEvaluation
    request: TrainRequest
    seconds: float


def validate(request: TrainRequest, info) -> int:
    """Check the settings against the model; returns the SAE width."""
    parse_hook(request.hook_name)
    d_in = hook_width(parse_hook(request.hook_name)[1], info)
    if request.architecture not in ("standard", "topk"):
        raise InputError(f"Cannot train a {request.architecture!r} SAE.",
                         "Train a standard (ReLU + L1) or a TopK SAE.")
    if not 0.25 <= request.expansion <= 256:
        raise InputError(f"Expansion {request.expansion:g}x is out of range.", "Use 0.25-256x.")
    width = int(round(request.expansion * d_in))
    checks = [
        (request.n_tokens >= request.batch_size, "There are fewer training tokens than one batch.",
         "Train on more tokens, or use a smaller batch."),
        (16 <= request.batch_size <= 1 << 17, f"Batch size {request.batch_size} is out of range.",
         "Use 16-131072 activations per step."),
        (0 < request.lr <= 1e3 and math.isfinite(request.lr),
         f"Learning rate {request.lr!r} is not usable.", "Use e.g. 1e-3."),
        (request.architecture != "standard" or 0 <= request.l1_coefficient <= 1e4,
         f"L1 coefficient {request.l1_coefficient!r} is out of range.", "Use e.g. 1-10."),
        (request.architecture != "topk" or 1 <= request.k <= width,
         f"k={request.k} does not fit {width} features.", f"Use 1-{width}."),
        (request.n_tokens <= 10_000_000_000, "That many tokens would take days.",
         "Train on fewer tokens."),
        (bool(request.out_folder.strip()), "No output folder given.", "Choose where to save."),
    ]
    for ok, message, hint in checks:
        if not ok:
            raise InputError(message, hint)
    out = Path(request.out_folder).expanduser()
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} exists and is not a folder.", "Choose another output folder.")
    return width


def _init(d_in: int, width: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    w_dec = torch.randn(width, d_in, generator=gen)
    w_dec /= w_dec.norm(dim=-1, keepdim=True)
    return {"W_enc": w_dec.T.clone().contiguous(), "b_enc": torch.zeros(width),
            "W_dec": w_dec, "b_dec": torch.zeros(d_in)}


class _Trainer:
    def __init__(self, request: TrainRequest, sae: SparseAutoencoder, n_steps: int) -> None:
        self.r = request
        self.sae = sae
        self.n_steps = n_steps
        self.opt = torch.optim.Adam(sae.parameters(), lr=request.lr, betas=(0.9, 0.999))
        self.last_fired = torch.zeros(sae.cfg.d_sae, dtype=torch.long, device=sae.device)
        self.tokens = 0
        self.resampled = 0
        self.resample_steps = {int(f * n_steps) for f in request.resample_at
                               if request.architecture == "standard" and 0 < f < 1}

    def lr_at(self, step: int) -> float:
        warm = max(1, self.n_steps // 20)
        decay_from = int(self.n_steps * 0.8)
        if step < warm:
            return self.r.lr * (step + 1) / warm
        if step >= decay_from:
            return self.r.lr * max(0.0, (self.n_steps - step) / max(1, self.n_steps - decay_from))
        return self.r.lr

    def dead_mask(self) -> torch.Tensor:
        return (self.tokens - self.last_fired) >= self.r.dead_window

    def step(self, step: int, x: torch.Tensor) -> tuple[float, float, float]:
        sae, r = self.sae, self.r
        for group in self.opt.param_groups:
            group["lr"] = self.lr_at(step)
        pre = sae.hidden_pre(x)
        f = sae._activate(pre)
        x_hat = f @ sae.W_dec + sae.b_dec
        err = x_hat - x
        mse = err.pow(2).sum(-1).mean()
        loss = mse
        if r.architecture == "standard":
            warm = min(1.0, (step + 1) / max(1, self.n_steps // 20))
            loss = loss + r.l1_coefficient * warm * f.abs().sum(-1).mean()
        else:
            loss = loss + self._aux_loss(pre, err)
        if not bool(torch.isfinite(loss.detach())) or float(mse.detach()) > 1e4 * x.shape[-1]:
            raise InputError(f"Training diverged at step {step + 1}: the loss became "
                             f"{float(loss):.3g}.",
                             f"Lower the learning rate (it is {r.lr:g}; try {r.lr / 10:g}).")
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        with torch.no_grad():  # keep decoder rows unit-norm: drop the gradient along them
            w, g = sae.W_dec, sae.W_dec.grad
            if g is not None:
                g -= (g * w).sum(-1, keepdim=True) * w
        self.opt.step()
        with torch.no_grad():
            sae.W_dec /= sae.W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-8)
            fired = (f > 0).any(0)
            self.tokens += x.shape[0]
            self.last_fired[fired] = self.tokens
        l0 = float((f.detach() > 0).float().sum(-1).mean())
        return float(mse.detach()) / x.shape[-1], l0, float(self.dead_mask().float().mean())

    def _aux_loss(self, pre: torch.Tensor, err: torch.Tensor) -> torch.Tensor:
        dead = self.dead_mask()
        n_dead = int(dead.sum())
        if n_dead == 0 or self.r.aux_coefficient <= 0:
            return pre.new_zeros(())
        k_aux = min(pre.shape[-1] // 2 if pre.shape[-1] > 1 else 1, n_dead,
                    max(1, self.sae.cfg.d_in // 2))
        masked = torch.where(dead[None], pre, torch.full_like(pre, -torch.inf))
        values, index = masked.topk(k_aux, dim=-1)  # no ReLU: as SAELens, Gao et al.
        acts = torch.zeros_like(pre).scatter_(-1, index, values)
        recon = acts @ self.sae.W_dec
        scale = min(n_dead / k_aux, 1.0)
        return self.r.aux_coefficient * scale * (recon - (-err.detach())).pow(2).sum(-1).mean()

    @torch.no_grad()
    def resample(self, x: torch.Tensor) -> int:
        """Re-initialise dead features towards the inputs reconstructed worst."""
        dead = torch.nonzero(self.dead_mask()).flatten()
        if dead.numel() == 0:
            return 0
        sae = self.sae
        err = (sae(x) - x).pow(2).sum(-1)
        probs = err / err.sum() if float(err.sum()) > 0 else torch.ones_like(err) / len(err)
        pick = torch.multinomial(probs, dead.numel(), replacement=dead.numel() > len(err))
        dirs = x[pick] - sae.b_dec
        dirs /= dirs.norm(dim=-1, keepdim=True).clamp_min(1e-8)
        alive = ~self.dead_mask()
        enc_norm = sae.W_enc[:, alive].norm(dim=0).mean() if bool(alive.any()) else 1.0
        sae.W_dec[dead] = dirs
        sae.W_enc[:, dead] = dirs.T * (0.2 * enc_norm)
        sae.b_enc[dead] = 0.0
        for p, index in ((sae.W_dec, (dead,)), (sae.W_enc, (slice(None), dead)),
                         (sae.b_enc, (dead,))):
            state = self.opt.state.get(p, {})
            for key in ("exp_avg", "exp_avg_sq"):
                if key in state:
                    state[key][index] = 0.0
        self.last_fired[dead] = self.tokens  # give them a full window to come alive
        self.resampled += int(dead.numel())
        return int(dead.numel())


def _progress(curves: dict, step: int, n_steps: int, tokens_per_s: float, seconds: float,
              resampled: int) -> TrainProgress:
    return TrainProgress(np.array(curves["tokens"], dtype=np.float64),
                         np.array(curves["mse"], dtype=np.float32),
                         np.array(curves["l0"], dtype=np.float32),
                         np.array(curves["dead"], dtype=np.float32),
                         step, n_steps, tokens_per_s, seconds, resampled)


@torch.no_grad()
def _fold(sae: SparseAutoencoder, scale: float) -> None:
    """Fold the input scale into the weights, then the decoder norms (all 1/scale, so a TopK
    ranking is unchanged): the saved SAE reads raw activations, and a feature's activation is the
    length of what it writes."""
    sae.W_enc *= scale
    sae.W_dec /= scale
    sae.b_dec /= scale
    norms = sae.W_dec.norm(dim=-1)
    sae.W_dec /= norms[:, None]
    sae.W_enc *= norms[None, :]
    sae.b_enc *= norms


class TrainingRun:
    """One training run, advanced in slices so the worker can run other jobs in between.

    ``run_for(seconds, ctx)`` trains until the time is up or training is done; ``finish``
    evaluates and saves. ``run_train_sae`` does it all at once; the app runs
    ``run_train_slice`` jobs, one after another, so other panels stay responsive."""

    def __init__(self, host, request: TrainRequest, ctx: JobContext) -> None:
        self.started = time.perf_counter()
        self.active = 0.0  # seconds spent in this run's slices
        self.host, self.request = host, request
        width = validate(request, host.info)
        info = host.info
        d_in = hook_width(parse_hook(request.hook_name)[1], info)
        cfg = SAEConfig(d_in=d_in, d_sae=width, hook_name=request.hook_name,
                        architecture=request.architecture,
                        k=request.k if request.architecture == "topk" else 0,
                        reshape_activations="hook_z" if request.hook_name.endswith("hook_z")
                        else "none", model_name=request.model_name or info.name,
                        context_size=request.context_size,
                        prepend_bos=bos_policy(host, None),
                        dataset_path=request.source.label())
        check_fits(cfg, info)
        ctx.progress(0.0, "Reading held-out text for the evaluation…")
        gen = torch.Generator().manual_seed(request.seed)
        self.stream = ActivationStream(host, request.source, request.hook_name,
                                       request.context_size,
                                       request.n_tokens + request.eval_tokens,
                                       request.batch_size, request.buffer_batches, ctx,
                                       request.seed)
        self.held_out = self.stream.hold_out(request.eval_tokens)
        ctx.progress(0.01, "Estimating the activations' scale…")
        with torch.inference_mode():
            first = self.stream.first_batch(request.batch_size)
        if first.numel() == 0:
            raise InputError("The text source ran out before training started.",
                             "Use a longer text, fewer evaluation tokens or a smaller batch.")
        mean_norm = float(first.norm(dim=-1).mean())
        if not math.isfinite(mean_norm) or mean_norm <= 0:
            raise InputError("The activations at this hook are zero or not finite.",
                             "Pick another hook.")
        self.scale = d_in ** 0.5 / mean_norm
        with torch.inference_mode(False):
            sae = SparseAutoencoder(cfg, _init(d_in, width, gen)).to(host.device)
            with torch.no_grad():
                sae.b_dec.copy_((first.clone() * self.scale).median(dim=0).values)
        self.sae = sae
        self.n_steps = max(1, request.n_tokens // request.batch_size)
        self.trainer = _Trainer(request, sae, self.n_steps)
        self.curves: dict[str, list] = {"tokens": [], "mse": [], "l0": [], "dead": []}
        self.step = 0
        self.batches = iter(self.stream)
        self.done = False
        self.active = time.perf_counter() - self.started

    def progress(self) -> TrainProgress:
        return _progress(self.curves, self.step, self.n_steps,
                         self.stream.tokens_read / max(self.active, 1e-9), self.active,
                         self.trainer.resampled)

    def run_for(self, seconds: float, ctx: JobContext) -> bool:
        """Train for up to ``seconds``; True when training is complete."""
        t0 = slice_start = time.perf_counter()
        last_partial = t0
        self.stream.ctx = ctx
        ctx.progress(0.02 + 0.88 * self.step / self.n_steps, "Training SAE…")
        with torch.inference_mode(False):
            while not self.done:
                ctx.check_cancelled()
                batch = next(self.batches, None) if self.step < self.n_steps else None
                if batch is None:
                    self.done = True
                    break
                x = batch.clone().to(self.host.device) * self.scale
                if self.step in self.trainer.resample_steps:
                    self.trainer.resample(x)
                with torch.enable_grad():
                    mse, l0, dead = self.trainer.step(self.step, x)
                self.step += 1
                for key, value in (("tokens", self.trainer.tokens), ("mse", mse), ("l0", l0),
                                   ("dead", dead)):
                    self.curves[key].append(value)
                now = time.perf_counter()
                if now - last_partial >= PARTIAL_SECONDS:
                    last_partial = now
                    self.active += now - t0
                    t0 = now
                    ctx.partial(self.progress())
                    ctx.progress(0.02 + 0.88 * self.step / self.n_steps,
                                 f"Training SAE: step {self.step}/{self.n_steps} · MSE "
                                 f"{mse:.3f} · L0 {l0:.1f} · dead {dead:.1%}")
                if now - slice_start >= seconds:
                    break
        self.active += time.perf_counter() - t0
        return self.done

    def finish(self, ctx: JobContext) -> TrainResult:
        if self.step == 0:
            raise InputError("The text source ran out before the first training step.",
                             "Use a longer text or a smaller batch.")
        request, sae, trainer = self.request, self.sae, self.trainer
        ctx.partial(self.progress())
        sae.requires_grad_(False)
        _fold(sae, self.scale)
        ctx.progress(0.9, "Evaluating on held-out text…")
        evaluation = evaluate_sae(self.host, sae, self.held_out, ctx)
        ctx.check_cancelled()
        folder = Path(request.out_folder).expanduser()
        cfg = replace(sae.cfg, metadata={"lensbench_training": {
            "tokens": trainer.tokens, "steps": self.step, "batch_size": request.batch_size,
            "lr": request.lr, "l1_coefficient": request.l1_coefficient
            if request.architecture == "standard" else None,
            "k": request.k if request.architecture == "topk" else None,
            "expansion": request.expansion, "resampled": trainer.resampled,
            "seed": request.seed, "source": request.source.label(),
            "evaluation": evaluation.as_dict()}})
        sae.cfg = cfg
        log_sparsity = torch.log10(torch.as_tensor(evaluation.feature_density).clamp_min(1e-10))
        save_sae(sae, folder, log_sparsity)
        from engine.sae_io import config_to_dict

        ctx.progress(1.0, f"Saved the SAE to {folder}")
        return TrainResult(str(folder), config_to_dict(cfg), self.progress(), evaluation,
                           request, time.perf_counter() - self.started)


def run_train_sae(host, request: TrainRequest, ctx: JobContext) -> TrainResult:
    """Train, evaluate and save an SAE in one job (scripts, tests, benchmarks)."""
    run = TrainingRun(host, request, ctx)
    run.run_for(math.inf, ctx)
    return run.finish(ctx)


@dataclass(frozen=True)
class TrainSliceRequest:
    request: TrainRequest
    run_id: int
    seconds: float = 1.0


def run_train_slice(host, slice_request: TrainSliceRequest, ctx: JobContext):
    """One slice of a run kept on the host: a TrainProgress, or the TrainResult at the end.

    A new run id replaces any earlier run; an error or Cancel drops the run."""
    runs = host.__dict__.setdefault("_sae_training", {})
    run = runs.get(slice_request.run_id)
    try:
        if run is None:
            runs.clear()
            run = TrainingRun(host, slice_request.request, ctx)
            runs[slice_request.run_id] = run
        if run.run_for(slice_request.seconds, ctx):
            result = run.finish(ctx)
            runs.pop(slice_request.run_id, None)
            return result
        return run.progress()
    except BaseException:
        runs.pop(slice_request.run_id, None)
        raise
