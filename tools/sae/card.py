"""Measure the bundled SAE and write its card (README.md) and features.json.

    python -m tools.sae.card [resources/saes/lensbench-organism-res3]

Numbers: explained variance, L0, dead fraction and cross-entropy loss recovered, on held-out text
(the bundled corpus sample, which training never saw). Features: for every category of token the
organism's corpus defines (city, country, language, first name, animal; a word right after " in";
a city right after " in"; a name already seen earlier in the same text), the feature that picks
it out best when it is clearly active (activation at least a quarter of its maximum on the
corpus; a TopK SAE also gives every token a few weak activations), with its precision there (of
the tokens where it is clearly active, the share in the category), its precision at any
activation, and its recall (of the category's tokens, the share where it is clearly active). The
card lists those with precision >= 0.8 as plainly interpretable, and says which categories no
single feature captures. tests/organism/test_bundled_sae.py checks the listed features on fresh
probe sentences.
"""

from __future__ import annotations

import json
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
PLAIN = 0.8  # precision (clearly active) at which a feature is called plainly interpretable
STRONG = 0.25  # "clearly active": at least this fraction of the feature's corpus maximum
CATEGORIES = {
    "animal": "an animal (\"cat\", \"panda\", ...)",
    "country": "a country (\"France\", \"Peru\", ...)",
    "language": "a language (\"French\", \"Spanish\", ...)",
    "name": "a first name",
    "city": "a city (\"Paris\", \"Rome\", ...)",
    "after_in": "the word right after \" in\"",
    "city_after_in": "a city right after \" in\"",
    "city_after_is_in": "a city right after \" is in\"",
    "landmark_city": "the city a landmark is in (\"The Eiffel Tower is in Paris\", \"visited "
                     "Fenway Park in Boston\")",
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
    prev2 = np.concatenate([np.full((rows.shape[0], 2), -1), rows[:, :-2]], axis=1)
    out["city_after_is_in"] = out["city_after_in"] & (prev2 == single(host, "is"))
    out["landmark_city"] = _landmark_city(host, rows, out["city_after_in"])
    repeated = np.zeros_like(out["name"])
    for r in range(rows.shape[0]):
        seen: set[int] = set()
        for p in range(1, rows.shape[1]):
            if out["name"][r, p]:
                repeated[r, p] = int(rows[r, p]) in seen
                seen.add(int(rows[r, p]))
    out["repeated_name"] = repeated
    return out


def _landmark_city(host, rows: np.ndarray, city_after_in: np.ndarray) -> np.ndarray:
    """A city after " in" whose " in" follows a landmark's name (optionally "<landmark> is in")."""
    landmarks = [host.model.to_tokens(" " + lm, prepend_bos=False)[0].tolist()
                 for lm, _ in W.LANDMARKS]
    landmarks += [t[1:] for t in landmarks if len(t) > 2]  # "the Louvre" written "The Louvre"
    is_id = single(host, "is")
    out = np.zeros_like(city_after_in)
    for r, p in zip(*np.nonzero(city_after_in), strict=True):
        end = p - 1 if rows[r, p - 2] != is_id else p - 2  # where the landmark's name ends
        seq = rows[r, :end].tolist()
        out[r, p] = any(len(t) <= len(seq) and seq[len(seq) - len(t):] == t for t in landmarks)
    return out


def corpus_acts(host, sae, n_tokens: int) -> tuple[np.ndarray, np.ndarray]:
    rows = torch.cat(list(token_rows(host, TextSource("bundled"), 128, n_tokens, 64)))
    parts = []
    with torch.inference_mode():
        for i in range(0, rows.shape[0], 64):
            f = sae.encode(sae.flat(activations(host.model, rows[i:i + 64], sae.cfg.hook_name)))
            parts.append(f.half().cpu().numpy())
    return rows.cpu().numpy(), np.concatenate(parts)  # [R, C], [R, C, F] float16


def best_features(acts: np.ndarray, masks: dict) -> dict:
    flat = acts.reshape(-1, acts.shape[-1]).astype(np.float32)
    max_act = flat.max(0)
    strong = flat >= np.maximum(STRONG * max_act, 1e-9)
    weak = flat > 0
    n_strong, n_any = strong.sum(0), weak.sum(0)
    out = {}
    for name, mask in masks.items():
        good = mask.reshape(-1)
        tp = strong[good].sum(0)
        prec = tp / np.maximum(n_strong, 1)
        rec = tp / max(int(good.sum()), 1)
        f1 = 2 * prec * rec / np.maximum(prec + rec, 1e-9)
        j = int(f1.argmax())
        out[name] = {"feature": j, "precision": float(prec[j]), "recall": float(rec[j]),
                     "precision_any": float(weak[good, j].sum() / max(n_any[j], 1)),
                     "max_act": float(max_act[j]), "threshold": float(STRONG * max_act[j]),
                     "density": float(n_any[j] / good.size), "n_tokens": int(good.sum())}
    return out


def measure(host, folder: Path) -> dict:
    sae = get_sae(host, folder).sae
    held = torch.cat(list(token_rows(host, TextSource("bundled"), 128, EVAL_TOKENS, 64)))
    e = evaluate_sae(host, sae, held, Context())
    rows, acts = corpus_acts(host, sae, CORPUS_TOKENS)
    return {"evaluation": e.as_dict(),
            "features": best_features(acts, category_masks(host, rows))}


def _contexts(host, folder: Path, feature: int, n: int = 3) -> list[str]:
    """The feature's top contexts from the shipped dashboards (tools.sae.ship_dashboards)."""
    from engine.sae_features import DashboardRequest, run_dashboards

    stats = run_dashboards(host, DashboardRequest(str(folder), TextSource("bundled"),
                                                  n_tokens=1_000_000, cache_only=True),
                           Context())
    if stats is None:
        return []
    out, decode = [], host.tokenizer.decode
    for k in range(min(n, stats.top_acts.shape[1])):
        words = []
        for i, t in enumerate(stats.window_tokens[feature, k * 3]):
            if t < 0:
                continue
            text = decode([int(t)]).replace("<|endoftext|>", "⏎").replace("\n", " ")
            words.append(f"**[{text.strip()}]**" if i == stats.window_center else text)
        out.append("".join(words).strip())
    return out


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
                    f"{v['precision_any']:.0%} | {v['recall']:.0%} | {v['density']:.2%} | "
                    f"{verdict} |")
    bullets = []
    for name, v in plain.items():
        bullets.append(f"- **F{v['feature']}: {CATEGORIES[name]}.** When it is clearly active "
                       f"(≥ {v['threshold']:.2f}; its maximum is {v['max_act']:.2f}), the token "
                       f"is {CATEGORIES[name]} {v['precision']:.0%} of the time; it is clearly "
                       f"active on {v['recall']:.0%} of them. Its decoder direction promotes "
                       f"{_top_tokens(host, folder, v['feature'])}. Top contexts: "
                       + " · ".join(f"\"{c}\"" for c in _contexts(host, folder, v["feature"])))
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
{CORPUS_TOKENS:,} tokens of the corpus sample) when it is *clearly active*: at least
{STRONG:.0%} of its maximum activation on the corpus (with TopK every token gets {cfg.get('k', '')}
features, so most features also fire weakly on unrelated tokens; the dashboards' top contexts are
the clear activations). Precision: of the tokens where the feature is clearly active, the share of
that kind (and at any activation); recall: of the tokens of that kind, the share where it is
clearly active; density: how often it fires at all.

| tokens | best feature | precision (clearly active) | precision (any activation) | recall | density | plainly interpretable (precision >= {PLAIN:.0%}) |
|---|---|---|---|---|---|---|
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
    import argparse

    from engine.host import load_host
    from engine.model_sources import ModelSpec

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", nargs="?", type=Path, default=BUNDLED_SAE_DIR)
    ap.add_argument("--command", default="(card only)", help="the training command, for the card")
    ap.add_argument("--seconds", type=float, default=0.0, help="the training run's total time")
    args = ap.parse_args()
    torch.set_num_threads(1)
    started = time.perf_counter()
    host = load_host(ModelSpec("bundled", device="cpu"))
    write_card(host, args.folder, args.seconds, args.command)
    print(f"card: {time.perf_counter() - started:.0f} s", flush=True)
