"""Evaluate the model organism through TransformerLens 4, the way the app loads it.

    python -m tools.organism.evaluate resources/models/lensbench-organism [--json out.json]

Loads the folder with ``engine.host.load_host`` when the engine is importable (else directly with
``TransformerBridge.boot_transformers`` + ``enable_compatibility_mode``) and prints a table of the
issue-3 targets, all on held-out items (see corpus.py for what is held out).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import warnings
from pathlib import Path

import torch

from tools.organism.corpus import CLASSIC_EXAMPLES, eval_sets

DEFAULT_FOLDER = Path(__file__).resolve().parents[2] / "resources" / "models" / "lensbench-organism"
TARGETS = {
    "facts_heldout_top1": 0.95,
    "ioi_heldout_top1": 0.90,
    "repeat_loss_ratio": 0.25,
    "best_induction_score": 0.5,
    "best_prev_token_score": 0.5,
}


def load_bridge(folder: Path):
    """The compatibility-mode bridge, loaded as the engine does (CPU, float32)."""
    logging.getLogger("transformers").setLevel(logging.ERROR)
    try:
        from engine.host import load_host
        from engine.model_sources import ModelSpec
    except ImportError:
        load_host = None
    if load_host is not None:
        return load_host(ModelSpec("folder", str(Path(folder).resolve()), "cpu", "float32")).model
    from transformer_lens.model_bridge import TransformerBridge

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        b = TransformerBridge.boot_transformers(str(folder), device="cpu")
        b.enable_compatibility_mode(disable_warnings=True)
    return b


def single_token(model, word: str) -> int:
    ids = model.to_tokens(word, prepend_bos=False)[0]
    if len(ids) != 1:
        raise ValueError(f"{word!r} is {len(ids)} tokens")
    return int(ids[0])


@torch.no_grad()
def last_logits(model, prompt: str) -> torch.Tensor:
    return model(model.to_tokens(prompt))[0, -1].float()


@torch.no_grad()
def classic_examples(model) -> list[dict]:
    rows = []
    for prompt, answer in CLASSIC_EXAMPLES:
        lg = last_logits(model, prompt)
        probs = lg.softmax(-1)
        top = probs.topk(3)
        rows.append(
            {
                "prompt": prompt,
                "expected": answer,
                "top1": model.to_string(top.indices[0:1]),
                "p_expected": probs[single_token(model, answer)].item(),
                "top3": [
                    (model.to_string(i.view(1)), round(p.item(), 3))
                    for p, i in zip(top.values, top.indices, strict=True)
                ],
                "correct": int(top.indices[0]) == single_token(model, answer),
            }
        )
    return rows


@torch.no_grad()
def fact_accuracy(model, items: list[dict]) -> dict:
    hits: dict[str, list[bool]] = {}
    for it in items:
        ok = int(last_logits(model, it["prompt"]).argmax()) == single_token(model, it["answer"])
        hits.setdefault(it["relation"], []).append(ok)
    allh = [h for v in hits.values() for h in v]
    out = {"n": len(allh), "top1": sum(allh) / len(allh)}
    out.update({f"top1_{k}": sum(v) / len(v) for k, v in hits.items()})
    return out


@torch.no_grad()
def ioi_metrics(model, items: list[dict]) -> dict:
    top1, io_gt_s, diffs = [], [], []
    for it in items:
        lg = last_logits(model, it["prompt"])
        io, s = single_token(model, it["io"]), single_token(model, it["s"])
        top1.append(int(lg.argmax()) == io)
        io_gt_s.append(bool(lg[io] > lg[s]))
        diffs.append((lg[io] - lg[s]).item())
    n = len(items)
    return {
        "n": n,
        "top1": sum(top1) / n,
        "io_gt_s": sum(io_gt_s) / n,
        "logit_diff": sum(diffs) / n,
    }


def word_tokens(model) -> list[int]:
    """Vocabulary ids of whole words with a leading space (they survive decode -> re-encode)."""
    vocab = model.tokenizer.get_vocab()
    return sorted(
        i for t, i in vocab.items() if t.startswith("\u0120") and t[1:].isalpha() and len(t) > 2
    )


@torch.no_grad()
def induction_metrics(model, seq_len: int = 50, batch: int = 10, seed: int = 0) -> dict:
    """ARENA's repeated-random-tokens test plus TransformerLens's head_detector."""
    from transformer_lens.head_detector import detect_head

    g = torch.Generator().manual_seed(seed)
    vocab = model.cfg.d_vocab
    rand = torch.randint(1, vocab, (batch, seq_len), generator=g)
    bos = torch.zeros(batch, 1, dtype=torch.long)
    toks = torch.cat([bos, rand, rand], dim=1)
    logits, cache = model.run_with_cache(toks)
    logp = logits.float().log_softmax(-1)
    nll = -logp[:, :-1].gather(-1, toks[:, 1:, None])[..., 0]  # nll[:, i] predicts token i+1
    first = nll[:, 1:seq_len].mean().item()  # tokens 2..seq_len of the first copy
    second = nll[:, seq_len + 1 :].mean().item()  # tokens 2..seq_len of the second copy
    L, H = model.cfg.n_layers, model.cfg.n_heads
    ind = torch.zeros(L, H)
    prev = torch.zeros(L, H)
    for layer in range(L):
        pat = cache["pattern", layer].float()  # [batch, head, q, k]
        ind[layer] = pat.diagonal(-seq_len + 1, dim1=-2, dim2=-1).mean((0, -1))
        prev[layer] = pat.diagonal(-1, dim1=-2, dim2=-1).mean((0, -1))

    # head_detector needs a string: whole-word tokens that round-trip, repeated 4 times.
    words = word_tokens(model)
    perm = torch.randperm(len(words), generator=g)[:30]
    seg = model.to_string(torch.tensor([words[i] for i in perm]))
    text = " ".join([seg.strip()] * 4)
    text = " " + text if seg.startswith(" ") else text
    n_tok = model.to_tokens(text).shape[-1]
    assert n_tok == 1 + 4 * 30, f"random-word sequence did not round-trip ({n_tok} tokens)"
    story = (
        "Once upon a time, there was a little cat named Tom. Tom liked to play with his red ball in "
        "the garden. One day, Tom saw a big dog near the house. The dog was friendly and they played "
        "together. In the end, Tom was very happy."
    )
    det_ind = detect_head(model, text, "induction_head")
    det_prev_rand = detect_head(model, text, "previous_token_head")
    det_prev_story = detect_head(model, story, "previous_token_head")

    def best(t: torch.Tensor) -> tuple[float, str]:
        i = int(t.argmax())
        return float(t.flatten()[i]), f"L{i // H}H{i % H}"

    return {
        "loss_first_half": first,
        "loss_second_half": second,
        "loss_ratio": second / first,
        "arena_induction": best(ind),
        "arena_prev_token": best(prev),
        "detect_induction": best(det_ind),
        "detect_prev_token_random": best(det_prev_rand),
        "detect_prev_token_story": best(det_prev_story),
        "arena_induction_all": ind.tolist(),
        "arena_prev_token_all": prev.tolist(),
    }


def evaluate(folder: Path) -> dict:
    torch.manual_seed(0)
    model = load_bridge(folder)
    sets = eval_sets()
    return {
        "folder": str(folder),
        "classic": classic_examples(model),
        "facts_heldout": fact_accuracy(model, sets["facts"]),
        "facts_unseen_template": fact_accuracy(model, sets["facts_unseen_template"]),
        "ioi_heldout": ioi_metrics(model, sets["ioi"]),
        "ioi_parts": {k: ioi_metrics(model, v) for k, v in sets["ioi_parts"].items()},
        "induction": induction_metrics(model),
    }


def table(r: dict) -> str:
    """Markdown table of the measured numbers against the issue-3 targets."""
    f, fu, ioi, ind = (
        r["facts_heldout"],
        r["facts_unseen_template"],
        r["ioi_heldout"],
        r["induction"],
    )
    ok = lambda b: "yes" if b else "**no**"  # noqa: E731
    lines = [
        "| Metric | Measured | Target | Met |",
        "|---|---|---|---|",
        f"| Held-out facts, top-1 (probe phrasing never seen for these {f['n']} facts) | {f['top1']:.1%} | >= 95% | {ok(f['top1'] >= 0.95)} |",
    ]
    for k in sorted(f):
        if k.startswith("top1_"):
            lines.append(f"| &nbsp;&nbsp;{k[5:]} | {f[k]:.1%} | | |")
    lines += [
        f"| All {fu['n']} facts in a phrasing never seen for any fact, top-1 | {fu['top1']:.1%} | (info) | |",
        f"| IOI held-out names x held-out templates: IO is top-1 (n={ioi['n']}) | {ioi['top1']:.1%} | >= 90% | {ok(ioi['top1'] >= 0.9)} |",
        f"| IOI held-out: logit(IO) > logit(S) | {ioi['io_gt_s']:.1%} | (info) | |",
        f"| IOI held-out: mean logit diff IO - S | {ioi['logit_diff']:.2f} | > 0 | {ok(ioi['logit_diff'] > 0)} |",
    ]
    for name, m in r.get("ioi_parts", {}).items():
        lines.append(
            f"| IOI {name} (n={m['n']}): IO top-1 / IO > S / logit diff | "
            f"{m['top1']:.1%} / {m['io_gt_s']:.1%} / {m['logit_diff']:.2f} | (info) | |"
        )
    lines += [
        f"| Repeated random tokens: loss on first half | {ind['loss_first_half']:.3f} | | |",
        f"| Repeated random tokens: loss on second half | {ind['loss_second_half']:.3f} | | |",
        f"| Second/first half loss ratio | {ind['loss_ratio']:.1%} | < 25% | {ok(ind['loss_ratio'] < 0.25)} |",
        f"| Best induction score, ARENA repeated random tokens | {ind['arena_induction'][0]:.3f} ({ind['arena_induction'][1]}) | >= 0.5 | {ok(ind['arena_induction'][0] >= 0.5)} |",
        f"| Best induction score, head_detector (4 x 30 random words; max possible 0.75) | {ind['detect_induction'][0]:.3f} ({ind['detect_induction'][1]}) | (info) | |",
        f"| Best previous-token score, ARENA repeated random tokens | {ind['arena_prev_token'][0]:.3f} ({ind['arena_prev_token'][1]}) | >= 0.5 | {ok(ind['arena_prev_token'][0] >= 0.5)} |",
        f"| Best previous-token score, head_detector on random words | {ind['detect_prev_token_random'][0]:.3f} ({ind['detect_prev_token_random'][1]}) | (info) | |",
        f"| Best previous-token score, head_detector on a story | {ind['detect_prev_token_story'][0]:.3f} ({ind['detect_prev_token_story'][1]}) | (info) | |",
    ]
    for c in r["classic"]:
        lines.append(
            f"| `{c['prompt']}` -> `{c['expected']}` | top-1 `{c['top1']}` (p={c['p_expected']:.2f}) | top-1 | {ok(c['correct'])} |"
        )
    return "\n".join(lines)


def passed(r: dict) -> bool:
    ind = r["induction"]
    return (
        all(c["correct"] for c in r["classic"])
        and r["facts_heldout"]["top1"] >= 0.95
        and r["ioi_heldout"]["top1"] >= 0.9
        and ind["loss_ratio"] < 0.25
        and ind["arena_induction"][0] >= 0.5
        and ind["arena_prev_token"][0] >= 0.5
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path, nargs="?", default=DEFAULT_FOLDER)
    ap.add_argument("--json", type=Path, default=None, help="also write all numbers here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    r = evaluate(args.folder)
    print(table(r))
    if args.json:
        args.json.write_text(json.dumps(r, indent=1))
    print("\nall targets met" if passed(r) else "\nsome targets NOT met")
    sys.exit(0)


if __name__ == "__main__":
    main()
