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
    """Fresh sentences in the shape of a feature's top contexts, as (text, target word, which
    occurrence of it): the feature should be clearly active there and nowhere else in the
    sentence (for a repeated mention, not on the first)."""
    from tools.organism import wordlists as W
    from tools.organism.corpus import split_names

    _, held_names = split_names()
    if category == "animal":  # the story's animal, named again as "The <animal>"
        return [(f"Once upon a time, there was a gentle {a}. The {a} liked to play.", a, 1)
                for a in W.ANIMALS[:40]]
    if category == "after_in":
        return [(f"My friend said that {lm} is in {c}.", c, -1) for lm, c in W.LANDMARKS[:40]]
    if category == "repeated_name":  # held-out names: they occur only in stories
        return [(f"One day, {n} went to the park. {n} found a red ball.", n, 1)
                for n in held_names]
    return []


def test_plain_features_on_fresh_text(bundled_host):
    """Each plainly interpretable feature, measured again on corpus-sample text the card did not
    use (tokens 700k-900k): as precise and as frequent as the card says."""
    from tools.sae.card import category_masks

    card = card_numbers()
    assert len(card["plain"]) >= 3
    sae = get_sae(bundled_host, BUNDLED_SAE_DIR).sae
    rows = torch.cat(list(token_rows(bundled_host, TextSource("bundled"), 128, 900_000, 64)))
    rows = rows[700_000 // 128:]
    with torch.inference_mode():
        acts = torch.cat([sae.encode(bundled_host.model.run_with_cache(
            rows[i:i + 64], names_filter=sae.cfg.hook_name)[1][sae.cfg.hook_name])
            for i in range(0, rows.shape[0], 64)]).numpy()
    masks = category_masks(bundled_host, rows.numpy())
    text = CARD.read_text()
    for category in card["plain"]:
        entry = card["features"][category]
        j = entry["feature"]
        assert f"**F{j}:" in text
        strong = acts[..., j] >= entry["threshold"]
        good = masks[category]
        precision = (strong & good).sum() / max(strong.sum(), 1)
        recall = (strong & good).sum() / max(good.sum(), 1)
        assert precision >= 0.75, (category, j, precision)
        assert recall == pytest.approx(entry["recall"], abs=0.1), (category, j, recall)


def test_plain_features_on_probe_sentences(bundled_host):
    card = card_numbers()
    sae = get_sae(bundled_host, BUNDLED_SAE_DIR).sae
    checked = 0
    for category in card["plain"]:
        sentences = probes(category)
        if not sentences:
            continue
        entry = card["features"][category]
        j, threshold = entry["feature"], entry["threshold"]
        hits, others = [], []
        for sentence, word, occurrence in sentences:
            toks, f = _acts(bundled_host, sae, sentence)
            where = [i for i, t in enumerate(toks) if t.strip() == word.split()[-1]]
            target = where[occurrence]
            hits.append(f[target, j] >= threshold)
            others += [f[i, j] >= threshold for i in range(1, len(toks)) if i != target]
        assert np.mean(hits) >= 0.8, (category, j, np.mean(hits))
        assert np.mean(others) <= 0.05, (category, j, np.mean(others))
        checked += 1
    assert checked >= 2


def test_card_states_the_training_command_and_time():
    text = CARD.read_text()
    assert "python -m tools.sae.train_bundled" in text
    assert re.search(r"\d+ minutes\s+in all", text)
    assert "tools/sae/train.log" in text
