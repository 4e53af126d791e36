"""Deterministic, seeded corpus for the Lensbench model organism.

The corpus is synthetic on purpose: every phenomenon the app teaches (factual recall, indirect
object identification, induction) must be *caused* by the data, and every evaluation item must be
provably held out. Everything here is a pure function of the seed, so the same command gives the
same text byte for byte (tests/organism checks this).

Families (see ``generate_documents``):
  stories  - short simple English stories built from a grammar over a few-thousand-word vocabulary;
  facts    - landmark -> city, city -> country and country -> language facts in many phrasings;
  ioi      - indirect-object sentences ("When John and Mary went to the store, John gave a drink to
             Mary") over >100 single-token first names, in both ABBA and BABA order;
  repeat   - a sentence or word string repeated 2-3 times (text-level induction).
Repeated *random-token* sequences are generated in token space by train.py, not here.

Held out (never appear in training text, used by evaluate.py):
  facts - the "probe" phrasing of a quarter of the facts (e.g. "The X is in <city>"); every fact is
          still taught in its other phrasings, which is the only way a held-out fact can be known;
          plus one phrasing ("... stands in the heart of <city>") held out for every fact;
  ioi   - 20 first names (they appear in stories, never in IOI sentences) and 4 IOI templates.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path

from tools.organism import wordlists as W

SPLIT_SEED = 1234  # fixed: which items are held out does not depend on the corpus seed


@dataclass(frozen=True)
class Fact:
    relation: str  # "landmark_city" | "city_country" | "country_language"
    subject: str  # as written mid-sentence, e.g. "the Eiffel Tower"
    obj: str  # single word, e.g. "Paris"


def cap(s: str) -> str:
    return s[0].upper() + s[1:]


# ----------------------------------------------------------------------------------------------
# Facts
# ----------------------------------------------------------------------------------------------

# {S} subject, {O} object. The first template of each relation is the probe phrasing that is held
# out for a quarter of the facts; TEMPLATES_HELDOUT are never used in training at all.
FACT_TEMPLATES: dict[str, list[str]] = {
    "landmark_city": [
        "{S} is in {O}.",
        "{S} is located in the city of {O}.",
        "Last summer we visited {S} in {O}.",
        "{S}, in {O}, is famous around the world.",
        "{S} is one of the most famous sights of {O}.",
        "My teacher showed us a picture of {S} in {O}.",
        "Everyone who sees {S} in {O} takes a photo.",
        "If you go to {O}, you can see {S}.",
        "Many tourists travel to {O} to see {S}.",
        "The city of {O} is home to {S}.",
    ],
    "city_country": [
        "{S} is a city in {O}.",
        "{S} is located in the country of {O}.",
        "We flew to {S} in {O}.",
        "{S}, a city in {O}, is very old.",
        "My aunt lives in {S}, in {O}.",
        "The country of {O} has a city called {S}.",
        "If you travel to {O}, visit {S}.",
    ],
    "country_language": [
        "The main language of {S} is {O}.",
        "In {S}, most people speak {O}.",
        "People in {S} speak {O}.",
        "She moved to {S} and learned to speak {O}.",
        "The children of {S} learn {O} at school.",
    ],
}
FACT_PROBES: dict[str, str] = {  # prompt form of the probe template (object removed)
    "landmark_city": "{S} is in",
    "city_country": "{S} is a city in",
    "country_language": "The main language of {S} is",
}
FACT_TEMPLATES_HELDOUT: dict[str, str] = {
    "landmark_city": "{S} stands in the heart of",
    "city_country": "The city of {S} is in the country of",
    "country_language": "Most of the people in {S} speak",
}
# Classic examples whose probe phrasing is *in* training (as it is in GPT-2's web text).
FACTS_ALWAYS_TRAIN = {"the Eiffel Tower", "the Colosseum", "Big Ben"}


def all_facts() -> list[Fact]:
    facts = [Fact("landmark_city", s, c) for s, c in W.LANDMARKS]
    facts += [Fact("city_country", c, k) for c, k in W.CITIES]
    facts += [Fact("country_language", k, lang) for k, lang in W.LANGUAGES]
    return facts


def split_facts() -> tuple[list[Fact], list[Fact]]:
    """(probe phrasing seen in training, probe phrasing held out), fixed by SPLIT_SEED."""
    rng = random.Random(SPLIT_SEED)
    train, held = [], []
    for f in all_facts():
        if f.subject not in FACTS_ALWAYS_TRAIN and rng.random() < 0.25:
            held.append(f)
        else:
            train.append(f)
    return train, held


# ----------------------------------------------------------------------------------------------
# IOI
# ----------------------------------------------------------------------------------------------

# {A} is the indirect object (answer), {B} the subject (repeated). Order of the first mention is
# randomised (ABBA / BABA) when rendering.
IOI_TEMPLATES = [
    "When {X} and {Y} went to the {P}, {B} gave a {O} to {A}.",
    "Then, {X} and {Y} had a lot of fun at the {P}. {B} gave a {O} to {A}.",
    "After {X} and {Y} went to the {P}, {B} handed a {O} to {A}.",
    "While {X} and {Y} were working at the {P}, {B} gave a {O} to {A}.",
    "{X} and {Y} were at the {P}. {B} wanted to give a {O} to {A}.",
    "When {X} and {Y} arrived at the {P}, {B} threw a {O} to {A}.",
    "The {P} was quiet when {X} and {Y} came in. {B} passed a {O} to {A}.",
    "Afterwards, {X} and {Y} went to the {P}. {B} gave a {O} to {A}.",
    "{X} and {Y} met at the {P}, and {B} sent a {O} to {A}.",
    "Yesterday {X} and {Y} went to the {P}, and {B} gave a {O} to {A}.",
    "When {X} and {Y} were at the {P}, {B} decided to give a {O} to {A}.",
    "{X} and {Y} spent the day at the {P}. Later, {B} gave a {O} to {A}.",
    "At the {P}, {X} and {Y} found a {O}. {B} gave it to {A}.",
    "{X} and {Y} walked to the {P} together, and {B} gave a {O} to {A}.",
]
# More training templates, composed from an opening clause and a giving clause, so that the model
# cannot key IOI on a few memorised sentence shapes. The openings of the held-out templates below
# are never used ("One day, X and Y ran to the P", "X and Y were happy at the P", "In the P, X and Y
# played together", "It was a sunny day when X and Y walked to the P"); their giving clauses are.
# A subordinate opening ("When ...") takes ", {B} ..."; a main clause takes one of IOI_JOINS.
IOI_OPENINGS_SUB = [
    "When {X} and {Y} went to the {P}",
    "After {X} and {Y} went to the {P}",
    "While {X} and {Y} were working at the {P}",
    "When {X} and {Y} arrived at the {P}",
    "When {X} and {Y} were at the {P}",
    "Before {X} and {Y} left the {P}",
    "Because {X} and {Y} were at the {P}",
    "Once {X} and {Y} came to the {P}",
]
IOI_OPENINGS_MAIN = [
    "Then, {X} and {Y} had a lot of fun at the {P}",
    "{X} and {Y} were at the {P}",
    "The {P} was quiet when {X} and {Y} came in",
    "Afterwards, {X} and {Y} went to the {P}",
    "{X} and {Y} met at the {P}",
    "Yesterday {X} and {Y} went to the {P}",
    "{X} and {Y} spent the day at the {P}",
    "{X} and {Y} walked to the {P} together",
    "Last week, {X} and {Y} visited the {P}",
    "{X} and {Y} were sitting in the {P}",
    "At the {P}, {X} and {Y} talked for a long time",
    "{X} and {Y} looked around the {P}",
]
IOI_JOINS = [", and ", ". ", ". Then ", ". Later, ", ". After that, "]
IOI_GIVES = [
    "{B} gave a {O} to {A}.",
    "{B} handed a {O} to {A}.",
    "{B} threw a {O} to {A}.",
    "{B} passed a {O} to {A}.",
    "{B} sent a {O} to {A}.",
    "{B} wanted to give a {O} to {A}.",
    "{B} decided to give a {O} to {A}.",
    "{B} gave the {O} to {A}.",
]


def ioi_training_templates() -> list[str]:
    """The 14 hand-written templates plus every opening x join x giving clause (several hundred);
    none of them equals a held-out template or uses a held-out opening."""
    out = list(IOI_TEMPLATES)
    for give in IOI_GIVES:
        out += [f"{o}, {give}" for o in IOI_OPENINGS_SUB]
        out += [f"{o}{j}{give}" for o in IOI_OPENINGS_MAIN for j in IOI_JOINS]
    seen: set[str] = set()
    out = [t for t in out if not (t in seen or seen.add(t))]
    assert not set(out) & set(IOI_TEMPLATES_HELDOUT)
    return out


# Held-out templates: new sentence structures built only from words that occur in training.
IOI_TEMPLATES_HELDOUT = [
    "One day, {X} and {Y} ran to the {P}, and {B} threw a {O} to {A}.",
    "{X} and {Y} were happy at the {P}. Then {B} handed a {O} to {A}.",
    "In the {P}, {X} and {Y} played together. {B} passed a {O} to {A}.",
    "It was a sunny day when {X} and {Y} walked to the {P}. {B} sent a {O} to {A}.",
]
# The first held-out set, kept for information: each contains a word that never occurs in the
# corpus ("offered", "As", "got", "brought", "On Sunday", "where"), so it also measures robustness
# to unknown words, which a model trained on a ~1,000-word world cannot have.
IOI_TEMPLATES_HELDOUT_OOV = [
    "Later, {X} and {Y} walked to the {P}. {B} offered a {O} to {A}.",
    "As {X} and {Y} sat in the {P}, {B} showed a {O} to {A}.",
    "When {X} and {Y} got to the {P}, {B} brought a {O} to {A}.",
    "On Sunday {X} and {Y} visited the {P}, where {B} gave a {O} to {A}.",
]
N_HELDOUT_NAMES = 20


def split_names() -> tuple[list[str], list[str]]:
    rng = random.Random(SPLIT_SEED + 1)
    names = [n for n in W.NAMES if n not in ("John", "Mary")]
    rng.shuffle(names)
    held = sorted(names[:N_HELDOUT_NAMES])
    train = sorted(set(W.NAMES) - set(held))
    return train, held


def render_ioi(template: str, io: str, s: str, place: str, obj: str, io_first: bool) -> str:
    x, y = (io, s) if io_first else (s, io)
    return template.format(X=x, Y=y, A=io, B=s, P=place, O=obj)


def ioi_prompt(template: str, io: str, s: str, place: str, obj: str, io_first: bool) -> str:
    """The sentence up to (not including) the final " {A}."."""
    full = render_ioi(template, io, s, place, obj, io_first)
    suffix = f" {io}."
    assert full.endswith(suffix), full
    return full[: -len(suffix)]


# ----------------------------------------------------------------------------------------------
# Stories
# ----------------------------------------------------------------------------------------------


def _character(rng: random.Random, names: list[str]) -> tuple[str, str, str]:
    """(first mention, later mention, possessive pronoun)."""
    if rng.random() < 0.55:
        n = rng.choice(names)
        return n, n, rng.choice(["his", "her"])
    a = rng.choice(W.ANIMALS)
    return f"the {a}", f"the {a}", "its"


def story(rng: random.Random, names: list[str]) -> str:
    first, ref, pos = _character(rng, names)
    adj = rng.choice(W.ADJECTIVES)
    out: list[str] = []
    opener = rng.randrange(4)
    if opener == 0:
        kind = rng.choice(W.ANIMALS) if ref.startswith("the ") else rng.choice(W.PEOPLE)
        out.append(
            f"Once upon a time, there was a {adj} {kind}"
            + (f" named {ref}." if not ref.startswith("the ") else ".")
        )
        if ref.startswith("the "):
            ref = f"the {kind}"
    elif opener == 1:
        out.append(f"One day, {first} went to the {rng.choice(W.PLACES)}.")
    elif opener == 2:
        out.append(f"{cap(first)} had a {adj} {rng.choice(W.THINGS)}.")
    else:
        out.append(f"It was a {rng.choice(W.WEATHER)} day in the {rng.choice(W.PLACES)}.")
    for _ in range(rng.randint(3, 8)):
        k = rng.randrange(12)
        subj = cap(ref)
        thing = rng.choice(W.THINGS)
        if k == 0:
            out.append(f"{subj} {rng.choice(W.VERBS_INTRANS)} on the {rng.choice(W.SURFACES)}.")
        elif k == 1:
            out.append(
                f"{subj} saw a {rng.choice(W.ADJECTIVES)} {thing} near the {rng.choice(W.PLACES)}."
            )
        elif k == 2:
            out.append(f"{subj} felt {rng.choice(W.FEELINGS)}.")
        elif k == 3:
            out.append(f"{subj} liked to {rng.choice(W.VERBS_BASE)} with {pos} {thing}.")
        elif k == 4:
            friend = rng.choice(names)
            out.append(
                f"{subj} met {friend}, and they {rng.choice(W.VERBS_PAST)} the {thing} together."
            )
        elif k == 5:
            out.append(
                f"The {rng.choice(W.ANIMALS)} {rng.choice(W.VERBS_INTRANS)} on the {rng.choice(W.SURFACES)}."
            )
        elif k == 6:
            out.append(f"{subj} {rng.choice(W.VERBS_PAST)} a {rng.choice(W.COLORS)} {thing}.")
        elif k == 7:
            out.append(f'"I want to {rng.choice(W.VERBS_BASE)} the {thing}," said {ref}.')
        elif k == 8:
            out.append(
                f"The {thing} was {rng.choice(W.ADJECTIVES)} and {rng.choice(W.ADJECTIVES)}."
            )
        elif k == 9:
            out.append(f"{subj} {rng.choice(W.VERBS_MOTION)} to the {rng.choice(W.PLACES)}.")
        elif k == 10:
            out.append(
                f"In the {rng.choice(W.PLACES)}, there was a {rng.choice(W.ADJECTIVES)} {rng.choice(W.ANIMALS)}."
            )
        else:
            out.append(
                f"{subj} was {rng.choice(W.FEELINGS)} because the {thing} was {rng.choice(W.ADJECTIVES)}."
            )
    out.append(rng.choice(W.ENDINGS).format(S=ref))
    return " ".join(out)


def repeat_doc(rng: random.Random, names: list[str]) -> str:
    """A short segment written 2-3 times, so that copying from context is the best prediction."""
    r = rng.random()
    if r < 0.5:
        seg = " ".join(story(rng, names).split(". ")[: rng.randint(1, 2)]).rstrip(".") + "."
    elif r < 0.75:
        seg = f"The {rng.choice(W.ANIMALS)} {rng.choice(W.VERBS_INTRANS)} on the {rng.choice(W.SURFACES)}."
    else:  # a string of unrelated words: no grammar to lean on, only the earlier copy
        seg = " ".join(rng.choice(W.ALL_WORDS) for _ in range(rng.randint(5, 20))) + "."
    return " ".join([seg] * rng.randint(2, 3))


# ----------------------------------------------------------------------------------------------
# Documents
# ----------------------------------------------------------------------------------------------

MIX = {"stories": 0.34, "facts": 0.30, "ioi": 0.26, "repeat": 0.10}


def fact_doc(rng: random.Random, train_facts: list[Fact], probe_ok: set[Fact]) -> str:
    sents = []
    for _ in range(rng.randint(3, 7)):
        f = rng.choice(train_facts)
        templates = FACT_TEMPLATES[f.relation]
        t = rng.choice(templates if f in probe_ok else templates[1:])
        sents.append(cap(t.format(S=f.subject, O=f.obj)))
    return " ".join(sents)


def ioi_doc(rng: random.Random, names: list[str], templates: list[str] | None = None) -> str:
    templates = templates or IOI_TEMPLATES
    sents = []
    for _ in range(rng.randint(1, 3)):
        io, s = rng.sample(names, 2)
        t = rng.choice(templates)
        sents.append(
            render_ioi(
                t, io, s, rng.choice(W.IOI_PLACES), rng.choice(W.IOI_OBJECTS), rng.random() < 0.5
            )
        )
    return " ".join(sents)


def generate_documents(seed: int, n_docs: int) -> list[str]:
    """``n_docs`` training documents, a pure function of (seed, n_docs)."""
    rng = random.Random(seed)
    all_names = sorted(W.NAMES)
    ioi_names, _ = split_names()
    facts_train = all_facts()  # every fact is taught; only its probe phrasing may be held out
    probe_ok = set(split_facts()[0])
    ioi_templates = ioi_training_templates()
    families = list(MIX)
    weights = [MIX[f] for f in families]
    docs = []
    for _ in range(n_docs):
        fam = rng.choices(families, weights)[0]
        if fam == "stories":
            docs.append(story(rng, all_names))
        elif fam == "facts":
            docs.append(fact_doc(rng, facts_train, probe_ok))
        elif fam == "ioi":
            docs.append(ioi_doc(rng, ioi_names, ioi_templates))
        else:
            docs.append(repeat_doc(rng, all_names))
    return docs


def eval_sets(seed: int = 0) -> dict:
    """Held-out evaluation items (independent of the training seed)."""
    rng = random.Random(SPLIT_SEED + 7 + seed)
    _, held_facts = split_facts()
    facts = [
        {
            "prompt": cap(FACT_PROBES[f.relation].format(S=f.subject)),
            "answer": " " + f.obj,
            "relation": f.relation,
        }
        for f in held_facts
    ]
    facts_unseen_template = [
        {
            "prompt": cap(FACT_TEMPLATES_HELDOUT[f.relation].format(S=f.subject)),
            "answer": " " + f.obj,
            "relation": f.relation,
        }
        for f in all_facts()
    ]
    train_names, held_names = split_names()

    def ioi_items(names: list[str], templates: list[str], n: int) -> list[dict]:
        out = []
        for i in range(n):
            io, s = rng.sample(names, 2)
            t = templates[i % len(templates)]
            place, obj = rng.choice(W.IOI_PLACES), rng.choice(W.IOI_OBJECTS)
            out.append(
                {
                    "prompt": ioi_prompt(t, io, s, place, obj, i % 2 == 0),
                    "io": " " + io,
                    "s": " " + s,
                }
            )
        return out

    ioi = ioi_items(held_names, IOI_TEMPLATES_HELDOUT, 200)
    ioi_parts = {
        "train names, train templates": ioi_items(train_names, IOI_TEMPLATES, 100),
        "held-out names, train templates": ioi_items(held_names, IOI_TEMPLATES, 100),
        "train names, held-out templates": ioi_items(train_names, IOI_TEMPLATES_HELDOUT, 100),
        "held-out names, first held-out templates (unknown words)": ioi_items(
            held_names, IOI_TEMPLATES_HELDOUT_OOV, 100
        ),
    }
    return {
        "facts": facts,
        "facts_unseen_template": facts_unseen_template,
        "ioi": ioi,
        "ioi_parts": ioi_parts,
    }


CLASSIC_EXAMPLES = [
    ("The Eiffel Tower is in", " Paris"),
    ("The cat sat on the mat. The cat", " sat"),
    ("When John and Mary went to the store, John gave a drink to", " Mary"),
]


def single_token_words() -> list[str]:
    """Words that must be single tokens with a leading space (checked by tests)."""
    words = set(W.NAMES) | {c for c, _ in W.CITIES} | {c for _, c in W.LANDMARKS}
    words |= (
        {k for k, _ in W.LANGUAGES} | {lang for _, lang in W.LANGUAGES} | {k for _, k in W.CITIES}
    )
    words |= {"sat", "Paris", "Mary", "John"}
    return sorted(words)


def corpus_text(seed: int, n_docs: int) -> str:
    return "\n".join(generate_documents(seed, n_docs))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-docs", type=int, default=1000)
    ap.add_argument("--out", type=Path, default=None, help="write documents (one per line) here")
    args = ap.parse_args()
    text = corpus_text(args.seed, args.n_docs)
    if args.out:
        args.out.write_text(text, encoding="utf-8")
    else:
        print(text[:3000])
    print(
        json.dumps(
            {
                "docs": args.n_docs,
                "chars": len(text),
                "sha256": hashlib.sha256(text.encode()).hexdigest(),
            }
        )
    )


if __name__ == "__main__":
    main()
