"""The bundled SAE: loads on the organism, its card's numbers hold, its features mean what the
card says (on probe sentences never used to pick them and on held-out corpus text)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from engine.jobs import Context
from engine.sae_eval import evaluate_sae
from engine.sae_io import BUNDLED_SAE_DIR, get_sae, load_sae
from engine.text_source import TextSource, token_rows

pytestmark = pytest.mark.skipif(not (BUNDLED_SAE_DIR / "cfg.json").is_file(),
                                reason="bundled SAE not trained")
CARD = BUNDLED_SAE_DIR / "README.md"


def card_numbers() -> dict:
    return json.loads((BUNDLED_SAE_DIR / "features.json").read_text())


def test_folder_is_saelens_layout_small_and_fits_the_organism(bundled_host):
    names = {p.name for p in BUNDLED_SAE_DIR.iterdir()}
    assert {"cfg.json", "sae_weights.safetensors", "sparsity.safetensors", "README.md",
            "features.json"} <= names
    size = sum(p.stat().st_size for p in BUNDLED_SAE_DIR.rglob("*") if p.is_file())
    assert size <= 10 * 2**20
    cfg = json.loads((BUNDLED_SAE_DIR / "cfg.json").read_text())
    assert cfg["metadata"]["hook_name"] == "blocks.3.hook_resid_pre"
    assert cfg["d_in"] == 128 and cfg["d_sae"] == 2048 and cfg["k"] == 16
    sae = load_sae(BUNDLED_SAE_DIR)
    assert torch.allclose(sae.W_dec.norm(dim=-1), torch.ones(2048), atol=1e-4)
    get_sae(bundled_host, BUNDLED_SAE_DIR)  # checked against the model


def test_card_numbers_hold_on_held_out_text(bundled_host):
    """L0, explained variance and CE loss recovered on the first 16k tokens of the bundled
    corpus sample (the card's 200k include them) agree with the card."""
    card = card_numbers()["evaluation"]
    text = CARD.read_text()
    assert f"{card['explained_variance']:.3f}" in text and f"{card['l0']:.1f}" in text
    assert f"{card['ce_loss_recovered']:.1%}" in text
    sae = get_sae(bundled_host, BUNDLED_SAE_DIR).sae
    rows = torch.cat(list(token_rows(bundled_host, TextSource("bundled"), 128, 16_384, 64)))
    e = evaluate_sae(bundled_host, sae, rows, Context())
    assert e.l0 == pytest.approx(card["l0"], abs=1.0)
    assert e.explained_variance == pytest.approx(card["explained_variance"], abs=0.02)
    assert e.ce_recovered == pytest.approx(card["ce_loss_recovered"], abs=0.02)
    assert e.explained_variance > 0.9 and e.ce_recovered > 0.95


def _acts(host, sae, text: str) -> tuple[list[str], np.ndarray]:
    tokens = host.model.to_tokens(text)
    with torch.inference_mode():
        _, cache = host.model.run_with_cache(tokens, names_filter=sae.cfg.hook_name)
        f = sae.encode(cache[sae.cfg.hook_name])[0]
    return [host.tokenizer.decode([t]) for t in tokens[0].tolist()], f.numpy()


def probes(category: str) -> list[tuple[str, str, int]]:
    """Fresh sentences (not the card's corpus text) as (text, target word, which occurrence):
    the feature should fire on that occurrence of the word."""
    from tools.organism import wordlists as W
    from tools.organism.corpus import split_names

    rng = np.random.default_rng(0)
    _, held_names = split_names()
    out = []
    if category == "animal":
        out = [(f"Yesterday I saw a happy {a} near the river.", a, 0) for a in W.ANIMALS[:40]]
    elif category == "country":
        out = [(f"Last year my family flew to {c} in {k}.", k, 0) for c, k in W.CITIES[:40]]
    elif category == "language":
        out = [(f"People in {k} speak {lang}.", lang, 0) for k, lang in W.LANGUAGES]
    elif category == "name":
        out = [(f"Yesterday {n} had a blue kite.", n, 0) for n in W.NAMES[:40]]
    elif category == "city":
        out = [(f"We liked {c} very much.", c, 0) for c, _ in W.CITIES[:40]]
    elif category in ("after_in", "city_after_in"):
        out = [(f"My friend said that {lm} is in {c}.", c, 0) for lm, c in W.LANDMARKS[:40]]
    elif category == "repeated_name":
        out = [(f"Then {a} met {b} near the lake. Later, {a} saw a bird.", a, 1)
               for a, b in zip(held_names, np.roll(held_names, 1), strict=True)]
    rng.shuffle(out)
    return out


def test_plain_features_fire_on_fresh_probes_and_not_around_them(bundled_host):
    """Every feature the card calls plainly interpretable fires on its kind of token in fresh
    sentences, and rarely on the other tokens of those sentences."""
    card = card_numbers()
    sae = get_sae(bundled_host, BUNDLED_SAE_DIR).sae
    assert len(card["plain"]) >= 2
    text = CARD.read_text()
    for category in card["plain"]:
        j = card["features"][category]["feature"]
        assert f"**F{j}:" in text
        hits, others = [], []
        for sentence, word, occurrence in probes(category):
            toks, f = _acts(bundled_host, sae, sentence)
            where = [i for i, t in enumerate(toks) if t.strip() == word.split()[-1]]
            target = where[occurrence]
            hits.append(f[target, j] > 0)
            others += [f[i, j] > 0 for i in range(1, len(toks)) if toks[i].strip() != word]
        assert np.mean(hits) >= 0.7, (category, j, np.mean(hits))
        assert np.mean(others) <= 0.15, (category, j, np.mean(others))


def test_card_states_the_training_command_and_time():
    text = CARD.read_text()
    assert "python -m tools.sae.train_bundled" in text
    assert re.search(r"\d+ minutes in all", text)
    assert "tools/sae/train.log" in text
