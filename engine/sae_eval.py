"""How good an SAE is, on held-out text: the numbers SAELens and the papers report.

- explained variance: ``1 - sum |x - x_hat|^2 / sum |x - mean(x)|^2`` over every token;
- L0: the mean number of features active per token;
- dead fraction: features that never fire on the evaluation tokens;
- cross-entropy loss recovered: ``(CE_zero - CE_sae) / (CE_zero - CE_clean)``, where CE_sae is the
  model's next-token loss with the SAE's reconstruction spliced in at its hook and CE_zero with
  the activation there zero-ablated (1 = the SAE loses nothing, 0 = as bad as deleting it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from engine.jobs import JobContext
from engine.sae import SparseAutoencoder
from engine.sae_splice import capture_hook, reconstruction_hook, zero_hook


@dataclass(frozen=True)
class SAEEvaluation:
    n_tokens: int
    explained_variance: float
    mse: float  # mean over tokens of |x - x_hat|^2
    l0: float
    dead_fraction: float
    ce_clean: float
    ce_sae: float
    ce_zero: float
    feature_density: np.ndarray  # [d_sae] float32: fraction of tokens where each fires

    @property
    def ce_recovered(self) -> float:
        gap = self.ce_zero - self.ce_clean
        return float((self.ce_zero - self.ce_sae) / gap) if abs(gap) > 1e-9 else float("nan")

    def as_dict(self) -> dict:
        return {"n_tokens": self.n_tokens, "explained_variance": self.explained_variance,
                "mse": self.mse, "l0": self.l0, "dead_fraction": self.dead_fraction,
                "ce_clean": self.ce_clean, "ce_with_sae": self.ce_sae,
                "ce_zero_ablation": self.ce_zero, "ce_loss_recovered": self.ce_recovered}


def _ce(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Summed next-token cross-entropy over all positions of all rows (float64)."""
    lp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    return -lp.gather(-1, tokens[:, 1:, None])[..., 0].double().sum()


@torch.inference_mode()
def evaluate_sae(host, sae: SparseAutoencoder, rows: torch.Tensor, ctx: JobContext,
                 rows_per_batch: int = 16, progress: tuple[float, float] = (0.9, 1.0)
                 ) -> SAEEvaluation:
    model = host.model
    hook_name = sae.cfg.hook_name
    d_sae = sae.cfg.d_sae
    sums = {"sse": 0.0, "sq": 0.0, "l0": 0.0, "clean": 0.0, "sae": 0.0, "zero": 0.0}
    total = torch.zeros(sae.cfg.d_in, dtype=torch.float64, device=sae.device)
    fires = torch.zeros(d_sae, dtype=torch.float64, device=sae.device)
    n_tok = n_pred = 0
    n_rows = rows.shape[0]
    for i in range(0, n_rows, rows_per_batch):
        ctx.check_cancelled()
        ctx.progress(progress[0] + (progress[1] - progress[0]) * i / n_rows,
                     f"Evaluating the SAE: {i}/{n_rows} rows…")
        tokens = rows[i:i + rows_per_batch].to(host.device)
        store: dict = {}
        with model.hooks(fwd_hooks=[(hook_name, capture_hook(store))]):
            logits = model(tokens, return_type="logits")
        sums["clean"] += float(_ce(logits, tokens))
        x = sae.flat(store["act"]).reshape(-1, sae.cfg.d_in)
        f, state = sae.encode_with_state(x)
        x_hat = sae.decode(f, state)
        sums["sse"] += float((x - x_hat).double().pow(2).sum())
        sums["sq"] += float(x.double().pow(2).sum())
        total += x.double().sum(0)
        active = f > 0
        sums["l0"] += float(active.sum())
        fires += active.double().sum(0)
        n_tok += x.shape[0]
        n_pred += tokens.shape[0] * (tokens.shape[1] - 1)
        with model.hooks(fwd_hooks=[(hook_name, reconstruction_hook(sae))]):
            sums["sae"] += float(_ce(model(tokens, return_type="logits"), tokens))
        with model.hooks(fwd_hooks=[(hook_name, zero_hook)]):
            sums["zero"] += float(_ce(model(tokens, return_type="logits"), tokens))
    mean = total / n_tok
    variance = sums["sq"] - n_tok * float(mean.pow(2).sum())
    density = (fires / n_tok).float().cpu().numpy()
    return SAEEvaluation(
        n_tokens=n_tok,
        explained_variance=1.0 - sums["sse"] / variance if variance > 0 else float("nan"),
        mse=sums["sse"] / n_tok,
        l0=sums["l0"] / n_tok,
        dead_fraction=float((density == 0).mean()),
        ce_clean=sums["clean"] / n_pred,
        ce_sae=sums["sae"] / n_pred,
        ce_zero=sums["zero"] / n_pred,
        feature_density=density,
    )
