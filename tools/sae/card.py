"""Measure the bundled SAE and write its card (README.md) and features.json.

    python -m tools.sae.card [resources/saes/lensbench-organism-res3]

Numbers: explained variance, L0, dead fraction and cross-entropy loss recovered, on held-out text
(the bundled corpus sample, which training never saw). Features: for every category of token the
organism's corpus defines (city, country, language, first name, animal; a word right after " in";
a city right after " in"; a name already seen earlier in the same text), the feature that picks
it out best (F1 over the corpus sample) with its precision (of the tokens where the feature fires,
the share in the category) and recall (of the category's tokens, the share where it fires). The
card lists those with precision >= 0.7 as plainly interpretable, and says which categories no
single feature captures. tests/organism/test_bundled_sae.py checks the listed features on fresh
probe sentences.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from engine.jobs import Context
from engine.sae_eval import evaluate_sae
from engine.sae_io import BUNDLED_SAE_DIR, get_sae
from engine.sae_splice import activations
from engine.text_source import TextSource, token_rows
from tools.organism import wordlists as W

EVAL_TOKENS = 200_000
CORPUS_TOKENS = 300_000
PLAIN = 0.7  # precision at which a feature is called plainly interpretable
CATEGORIES = {
    "animal": "an animal (\"cat\", \"panda\", ...)",
    "country": "a country (\"France\", \"Peru\", ...)",
    "language": "a language (\"French\", \"Spanish\", ...)",
    "name": "a first name",
    "city": "a city (\"Paris\", \"Rome\", ...)",
    "after_in": "the word right after \" in\"",
    "city_after_in": "a city right after \" in\" (\"The Eiffel Tower is in Paris\")",
    "repeated_name": "the second (or later) occurrence of a name in the same text",
}


def single(host, word: str) -> int | None:
    ids = host.model.to_tokens(" " + word, prepend_bos=False)[0].tolist()
    return ids[0] if len(ids) == 1 else None


def _ids(host, words) -> list[int]:
    return sorted({single(host, w) for w in words} - {None})


def category_masks(host, rows: np.ndarray) -> dict[str, np.ndarray]:
    """Boolean [R, C] masks of the token categories on rows of token ids."""
    cities = _ids(host, [c for c, _ in W.CITIES] + [c for _, c in W.LANDMARKS])
    out = {"animal": np.isin(rows, _ids(host, W.ANIMALS)),
           "country": np.isin(rows, _ids(host, [k for _, k in W.CITIES]
                                         + [k for k, _ in W.LANGUAGES])),
           "language": np.isin(rows, _ids(host, [lang for _, lang in W.LANGUAGES])),
           "name": np.isin(rows, _ids(host, W.NAMES)),
           "city": np.isin(rows, cities)}
    prev = np.concatenate([np.full((rows.shape[0], 1), -1), rows[:, :-1]], axis=1)
    out["after_in"] = prev == single(host, "in")
    out["city_after_in"] = out["city"] & out["after_in"]
    repeated = np.zeros_like(out["name"])
    for r in range(rows.shape[0]):
        seen: set[int] = set()
        for p in range(1, rows.shape[1]):
            if out["name"][r, p]:
                repeated[r, p] = int(rows[r, p]) in seen
                seen.add(int(rows[r, p]))
    out["repeated_name"] = repeated
    return out


def corpus_fires(host, sae, n_tokens: int) -> tuple[np.ndarray, np.ndarray]:
    rows = torch.cat(list(token_rows(host, TextSource("bundled"), 128, n_tokens, 64)))
    parts = []
    with torch.inference_mode():
        for i in range(0, rows.shape[0], 64):
            f = sae.encode(sae.flat(activations(host.model, rows[i:i + 64], sae.cfg.hook_name)))
            parts.append((f > 0).cpu().numpy())
    return rows.cpu().numpy(), np.concatenate(parts)  # [R, C], [R, C, F] bool


def best_features(rows: np.ndarray, fires: np.ndarray, masks: dict) -> dict:
    flat = fires.reshape(-1, fires.shape[-1])
    n = flat.sum(0)
    out = {}
    for name, mask in masks.items():
        good = mask.reshape(-1)
        tp = flat[good].sum(0)
        prec = tp / np.maximum(n, 1)
        rec = tp / max(int(good.sum()), 1)
        f1 = 2 * prec * rec / np.maximum(prec + rec, 1e-9)
        j = int(f1.argmax())
        out[name] = {"feature": j, "precision": float(prec[j]), "recall": float(rec[j]),
                     "density": float(n[j] / good.size), "n_tokens": int(good.sum())}
    return out


def measure(host, folder: Path) -> dict:
    sae = get_sae(host, folder).sae
    held = torch.cat(list(token_rows(host, TextSource("bundled"), 128, EVAL_TOKENS, 64)))
    e = evaluate_sae(host, sae, held, Context())
    rows, fires = corpus_fires(host, sae, CORPUS_TOKENS)
    return {"evaluation": e.as_dict(), "features": best_features(rows, fires,
                                                                 category_masks(host, rows))}


def _top_tokens(host, folder: Path, feature: int, n: int = 4) -> str:
    from engine.sae_features import logit_effects

    eff = logit_effects(host, get_sae(host, folder), n)
    return ", ".join(f"`{host.tokenizer.decode([int(i)])}`" for i in eff.top_ids[feature])


def write_card(host, folder: Path, train_seconds: float, command: str) -> dict:
    folder = Path(folder)
    m = measure(host, folder)
    cfg = json.loads((folder / "cfg.json").read_text())
    t = cfg["metadata"]["lensbench_training"]
    e, feats = m["evaluation"], m["features"]
    plain = {k: v for k, v in feats.items() if v["precision"] >= PLAIN}
    (folder / "features.json").write_text(json.dumps(
        {"plain": sorted(plain), "features": feats, "evaluation": e}, indent=2))
    if cfg["architecture"] == "topk":
        arch = f"TopK with k = {cfg['k']} (exactly k features active per token)"
        sparsity = ("sparsity from TopK itself, dead features trained by the auxiliary loss of "
                    "Gao et al. (2024)")
    else:
        arch = "ReLU, trained with an L1 penalty (the tutorial's SAE)"
        sparsity = (f"L1 coefficient {t['l1_coefficient']:g}, dead features resampled at "
                    f"25/50/75% of training ({t['resampled']} resampled)")
    rows = []
    for name, v in feats.items():
        verdict = "**yes**" if name in plain else "no single feature"
        rows.append(f"| {CATEGORIES[name]} | F{v['feature']} | {v['precision']:.0%} | "
                    f"{v['recall']:.0%} | {v['density']:.2%} | {verdict} |")
    bullets = []
    for name, v in plain.items():
        bullets.append(f"- **F{v['feature']}: {CATEGORIES[name]}.** When it fires, the token is "
                       f"{CATEGORIES[name]} {v['precision']:.0%} of the time; it fires on "
                       f"{v['recall']:.0%} of them. Its decoder direction promotes "
                       f"{_top_tokens(host, folder, v['feature'])}.")
    missing = [CATEGORIES[k] for k in feats if k not in plain]
    text = f"""# Bundled SAE: lensbench-organism, residual stream before layer {cfg['metadata']['hook_name'].split('.')[1]}

A sparse autoencoder on `{cfg['metadata']['hook_name']}` of the bundled model organism
(`resources/models/lensbench-organism`), in SAELens's folder layout (`cfg.json` +
`sae_weights.safetensors` + `sparsity.safetensors`): {cfg['d_sae']} features ({cfg['d_sae'] // cfg['d_in']}x
d_model {cfg['d_in']}), {arch}. Lensbench loads it by itself when the organism is the loaded model
(Features panel), with its dashboards (`dashboards/`: top contexts, histograms and densities over
the bundled corpus sample, precomputed so the panel is ready at once). SAELens 6 reads the folder
too.

## Training

```
{command}
```

{t['tokens']:,} activations ({t['steps']:,} steps of {t['batch_size']}), Adam at learning rate
{t['lr']:g} (5% warm-up, linear decay over the last 20%), {sparsity}; activations scaled to mean
norm √d_in for training (SAELens's convention; the scale is folded into the saved weights),
decoder rows kept at unit norm. Training data: {t['source']}, i.e. fresh documents of the
organism's synthetic corpus, 128-token rows each starting with BOS. {train_seconds / 60:.0f} minutes
in all (training text, training, evaluation and this card) on one thread of a shared 2-core CPU.
The log is `tools/sae/train.log`.

## Evaluation

On {e['n_tokens']:,} tokens of the bundled corpus sample (`resources/corpus`, seed 1: text the SAE
never saw), measured by `tools/sae/card.py` through the app's own evaluation
(`engine.sae_eval`):

| metric | value |
|---|---|
| explained variance | {e['explained_variance']:.3f} |
| L0 (features active per token) | {e['l0']:.1f} |
| dead features (never fire on this text) | {e['dead_fraction']:.1%} |
| cross-entropy loss recovered (vs zero-ablation) | {e['ce_loss_recovered']:.1%} |
| next-token loss: clean / SAE spliced in / zero-ablated | {e['ce_clean']:.3f} / {e['ce_with_sae']:.3f} / {e['ce_zero_ablation']:.3f} |

## Features

For each kind of token the corpus defines, the feature that picks it out best (F1 over
{CORPUS_TOKENS:,} tokens of the corpus sample). Precision: of the tokens where the feature fires,
the share of that kind; recall: of the tokens of that kind, the share where it fires.

| tokens | best feature | precision | recall | density | plainly interpretable (precision >= {PLAIN:.0%}) |
|---|---|---|---|---|---|
{chr(10).join(rows)}

{chr(10).join(bullets)}

{"No single feature captures " + "; ".join(missing) + ": those are spread over several features (each fires on part of them, or also on other tokens)." if missing else ""}
The plainly interpretable ones are checked on fresh probe sentences by
`tests/organism/test_bundled_sae.py`.
"""
    (folder / "README.md").write_text(text)
    print(json.dumps(m, indent=2), flush=True)
    return m


if __name__ == "__main__":
    from engine.host import load_host
    from engine.model_sources import ModelSpec

    torch.set_num_threads(1)
    started = time.perf_counter()
    host = load_host(ModelSpec("bundled", device="cpu"))
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else BUNDLED_SAE_DIR
    write_card(host, target, 0.0, "(card only)")
    print(f"{time.perf_counter() - started:.0f} s")
