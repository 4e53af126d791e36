"""The organism's corpus and tokenizer are deterministic and hold out what evaluate.py measures."""

from __future__ import annotations

import json
import re

import pytest

from tools.organism import corpus as C
from tools.organism.tokenizer import train_tokenizer


def test_corpus_same_seed_same_text_different_seed_different_text():
    a = C.corpus_text(seed=0, n_docs=3000)
    assert a == C.corpus_text(seed=0, n_docs=3000)
    b = C.corpus_text(seed=1, n_docs=3000)
    assert a != b
    assert len(a) > 100_000


def test_corpus_has_every_family():
    docs = C.generate_documents(0, 3000)
    text = "\n".join(docs)
    assert "Once upon a time" in text  # stories
    assert "is located in the city of" in text  # facts
    assert " gave a " in text and " and " in text  # IOI
    # repeat family: some document is one segment written at least twice
    assert any(len(d) > 20 and d[: len(d) // 2].strip() == d[len(d) // 2 :].strip() for d in docs)


@pytest.fixture(scope="module")
def train_docs() -> list[str]:
    return C.generate_documents(0, 30_000)


def test_heldout_fact_phrasings_never_in_training(train_docs):
    text = "\n".join(train_docs)
    _, held = C.split_facts()
    assert len(held) >= 40
    for f in held:
        probe = C.FACT_TEMPLATES[f.relation][0].format(S=f.subject, O=f.obj)
        assert C.cap(probe) not in text and probe not in text, probe
        # ...but the fact itself is taught in other phrasings, or it could not be known at all
        assert (
            C.FACT_TEMPLATES[f.relation][1].format(S=f.subject, O=f.obj) in text
            or C.cap(C.FACT_TEMPLATES[f.relation][1].format(S=f.subject, O=f.obj)) in text
        )
    for item in C.eval_sets()["facts_unseen_template"]:
        assert item["prompt"] + item["answer"] not in text, item
        assert item["prompt"][1:] + item["answer"] not in text, (
            item
        )  # mid-sentence, lower-case "the"


def test_classic_fact_probe_is_in_training(train_docs):
    assert any("The Eiffel Tower is in Paris." in d for d in train_docs)


def test_heldout_ioi_names_and_templates_never_in_ioi_sentences(train_docs):
    train_names, held_names = C.split_names()
    assert len(train_names) >= 100 and len(held_names) == C.N_HELDOUT_NAMES
    assert {"John", "Mary"} <= set(train_names)
    text = "\n".join(train_docs)
    for t in C.IOI_TEMPLATES_HELDOUT:
        pattern = re.escape(t)
        for slot in "XYAB":
            pattern = pattern.replace(re.escape("{" + slot + "}"), "[A-Z][a-z]+")
        for slot in "PO":
            pattern = pattern.replace(re.escape("{" + slot + "}"), "[a-z]+")
        assert not re.search(pattern, text), t
        assert re.fullmatch(pattern, C.render_ioi(t, "Mary", "John", "park", "ball", True))
    for n in held_names:
        assert f"{n} gave a " not in text and f" to {n}." not in text, n
        assert f" {n}" in text  # held-out names still occur (in stories), so they are tokens
    for item in C.eval_sets()["ioi"]:
        assert item["io"].strip() in held_names and item["s"].strip() in held_names


def test_tokenizer_training_is_deterministic():
    docs = C.generate_documents(5, 3000)
    a = train_tokenizer(docs, 1500).to_str()
    b = train_tokenizer(docs, 1500).to_str()
    assert a == b
    assert json.loads(a)["model"]["type"] == "BPE"


def test_heldout_ioi_templates_use_only_words_seen_in_training(train_docs):
    words = set(re.findall(r"[A-Za-z]+", "\n".join(train_docs)))
    for t in C.IOI_TEMPLATES_HELDOUT:
        unseen = [
            w for w in re.findall(r"[A-Za-z]+", re.sub(r"\{[A-Z]\}", "", t)) if w not in words
        ]
        assert not unseen, (t, unseen)


def test_composed_ioi_templates_never_use_a_held_out_opening():
    templates = C.ioi_training_templates()
    assert len(templates) >= 200 and set(C.IOI_TEMPLATES) <= set(templates)
    for held in C.IOI_TEMPLATES_HELDOUT:
        opening = held[: held.index("{B}")].rstrip(" ,.").removesuffix(". Then").removesuffix(
            ", and")
        assert not any(t.startswith(opening) for t in templates), held
    for t in templates:  # each renders to a sentence whose last word is the indirect object
        assert C.ioi_prompt(t, "Mary", "John", "park", "ball", True).endswith(" to")
