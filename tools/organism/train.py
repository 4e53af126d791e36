"""Train the Lensbench model organism (a small GPT-2) on CPU, deterministically.

    nice -n 10 python -m tools.organism.train --out resources/models/lensbench-organism

Sequences are 256 tokens, each starting with <|endoftext|> as BOS. A fraction of them
(``--random-frac``) are repeated random-token segments, which is what makes induction heads form
quickly; the rest are the seeded text corpus (stories, facts, IOI, repeated text) packed with
<|endoftext|> between documents. The output folder is rewritten at every checkpoint (atomically), so
if the run is stopped the last checkpoint is a complete, loadable model.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from tools.organism import corpus as C
from tools.organism import wordlists as W
from tools.organism.corpus import CLASSIC_EXAMPLES, eval_sets, generate_documents
from tools.organism.tokenizer import save_hf_tokenizer, train_tokenizer


def build_config(vocab_size: int, args: argparse.Namespace):
    from transformers import GPT2Config

    return GPT2Config(
        vocab_size=vocab_size,
        n_positions=args.n_positions,
        n_embd=args.d_model,
        n_layer=args.n_layer,
        n_head=args.n_head,
        n_inner=4 * args.d_model,
        activation_function="gelu_new",
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=0,
        eos_token_id=0,
        tie_word_embeddings=True,
    )


class NameSwapIOI:
    """IOI sentences of the training templates whose two names are random whole-word tokens.

    The model cannot answer them from a prior over names: it has to copy the token that occurred
    once. Held-out names (``corpus.split_names``) are never drawn, so the IOI evaluation on
    held-out names still measures generalisation."""

    def __init__(self, tok_raw, seed: int, n_sentences: int = 2000) -> None:
        rng = random.Random(seed)
        vocab = tok_raw.get_vocab()
        _, held = C.split_names()
        banned = {vocab.get("\u0120" + n) for n in held} | {vocab.get(n) for n in held}
        self.pool = sorted(i for t, i in vocab.items() if t.startswith("\u0120")
                           and t[1:].isalpha() and len(t) > 2 and i not in banned)
        self.io, self.s = vocab["\u0120John"], vocab["\u0120Mary"]
        self.sentences = []
        templates = C.ioi_training_templates()
        for _ in range(n_sentences):
            text = " " + C.render_ioi(rng.choice(templates), "John", "Mary",
                                      rng.choice(W.IOI_PLACES), rng.choice(W.IOI_OBJECTS),
                                      rng.random() < 0.5)
            ids = tok_raw.encode(text).ids
            if ids.count(self.io) == 2 and ids.count(self.s) == 2:
                self.sentences.append(ids)
        self.rng = random.Random(seed + 1)

    def tokens(self, n: int) -> list[int]:
        out: list[int] = []
        while len(out) < n:
            a, b = self.rng.sample(self.pool, 2)
            out.extend(a if t == self.io else b if t == self.s else t
                       for t in self.rng.choice(self.sentences))
        return out[:n]


class Batches:
    """Deterministic stream of (batch, seq) token tensors."""

    def __init__(
        self,
        doc_ids: list[list[int]],
        vocab_size: int,
        seq_len: int,
        batch: int,
        random_frac: float,
        seed: int,
        cycle_frac: float = 0.0,
        seg: tuple[int, int] = (8, 60),
        repeats: tuple[int, int] = (2, 3),
        name_swap: NameSwapIOI | None = None,
        name_swap_frac: float = 0.0,
    ) -> None:
        self.name_swap = name_swap
        self.name_swap_frac = name_swap_frac
        self.docs = doc_ids
        self.vocab = vocab_size
        self.seq_len = seq_len
        self.batch = batch
        self.random_frac = random_frac
        self.cycle_frac = cycle_frac
        self.seg = seg
        self.repeats = repeats
        self.rng = random.Random(seed)
        self.buf: list[int] = []
        self.order: list[int] = []
        self.epoch = 0

    def _text_tokens(self, n: int) -> list[int]:
        while len(self.buf) < n:
            if not self.order:
                self.order = list(range(len(self.docs)))
                self.rng.shuffle(self.order)
                self.epoch += 1
            self.buf.extend(self.docs[self.order.pop()])
            self.buf.append(0)  # <|endoftext|> between documents
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _random_tokens(self, n: int) -> list[int]:
        if self.cycle_frac and self.rng.random() < self.cycle_frac:
            return self._cycle_tokens(n)
        out: list[int] = []
        while len(out) < n:
            seg = [self.rng.randrange(1, self.vocab) for _ in range(self.rng.randint(*self.seg))]
            out.extend(seg * self.rng.randint(*self.repeats))
        return out[:n]

    def _cycle_tokens(self, n: int) -> list[int]:
        """Random token pairs repeated ("a b a b a b"): next token = the one before the current.

        The direct, position-based signal trains a previous-token head with a copying OV circuit
        within a few hundred steps, which the content-based induction head then composes with.
        """
        out: list[int] = []
        while len(out) < n:
            pair = [self.rng.randrange(1, self.vocab) for _ in range(2)]
            out.extend(pair * self.rng.randint(3, 10))
        return out[:n]

    def next(self) -> torch.Tensor:
        rows = []
        self.last_random = []  # which rows of this batch are random-token rows
        for _ in range(self.batch):
            draw = self.rng.random()
            is_random = draw < self.random_frac
            if is_random:
                body = self._random_tokens(self.seq_len - 1)
            elif self.name_swap is not None and draw < self.random_frac + self.name_swap_frac:
                body = self.name_swap.tokens(self.seq_len - 1)
            else:
                body = self._text_tokens(self.seq_len - 1)
            rows.append([0] + body)
            self.last_random.append(is_random)
        return torch.tensor(rows, dtype=torch.long)


def induction_hint_loss(x: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
    """Cross-entropy between one head's attention [batch, q, k] and the induction target: from each
    token, uniform attention over the positions right after its earlier occurrences (rows with
    no earlier occurrence are skipped). Used for a short first phase only (``--hint-steps``)."""
    prev = torch.cat([torch.full_like(x[:, :1], -1), x[:, :-1]], dim=1)  # prev[:, j] = x[:, j-1]
    causal = torch.ones(x.shape[1], x.shape[1], dtype=torch.bool, device=x.device).tril()
    target = (x[:, :, None] == prev[:, None, :]) & causal
    has = target.any(-1)
    if not bool(has.any()):
        return attn.sum() * 0.0
    target = target.float() / target.float().sum(-1, keepdim=True).clamp(min=1.0)
    return -(target * (attn + 1e-9).log()).sum(-1)[has].mean()


def prev_token_hint_loss(attn: torch.Tensor) -> torch.Tensor:
    """Cross-entropy between one head's attention [batch, q, k] and the previous-token pattern
    (position j attends to j - 1; position 0 is skipped)."""
    n = attn.shape[-1]
    idx = torch.arange(1, n, device=attn.device)
    return -(attn[:, idx, idx - 1] + 1e-9).log().mean()


def lr_at(step: int, args: argparse.Namespace) -> float:
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    p = (step - args.warmup) / max(1, args.steps - args.warmup)
    return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, p))))


@torch.no_grad()
def quick_eval(model, tok) -> dict:
    """Cheap HF-side monitoring (the real evaluation is evaluate.py through TransformerLens)."""
    model.eval()
    sets = eval_sets()

    def last_logits(prompts: list[str]) -> torch.Tensor:
        out = []
        for p in prompts:
            ids = torch.tensor([[0] + tok.encode(p)])
            out.append(model(ids).logits[0, -1])
        return torch.stack(out)

    def tid(w: str) -> int:
        ids = tok.encode(w)
        assert len(ids) == 1, w
        return ids[0]

    res = {}
    lg = last_logits([c[0] for c in CLASSIC_EXAMPLES])
    res["classic"] = [
        tok.decode([int(i)]) == a for i, (_, a) in zip(lg.argmax(-1), CLASSIC_EXAMPLES, strict=True)
    ]
    facts = sets["facts"]
    lg = last_logits([f["prompt"] for f in facts])
    res["facts_top1"] = sum(
        int(i) == tid(f["answer"]) for i, f in zip(lg.argmax(-1), facts, strict=True)
    ) / len(facts)
    ioi = sets["ioi"][:100]
    lg = last_logits([x["prompt"] for x in ioi])
    io = torch.tensor([tid(x["io"]) for x in ioi])
    s = torch.tensor([tid(x["s"]) for x in ioi])
    ar = torch.arange(len(ioi))
    res["ioi_top1"] = (lg.argmax(-1) == io).float().mean().item()
    res["ioi_logit_diff"] = (lg[ar, io] - lg[ar, s]).mean().item()
    # Repeated random tokens (50, twice): loss on each half and the best induction attention.
    g = torch.Generator().manual_seed(0)
    rand = torch.randint(1, model.config.vocab_size, (8, 50), generator=g)
    toks = torch.cat([torch.zeros(8, 1, dtype=torch.long), rand, rand], dim=1)
    out = model(toks, output_attentions=True)
    nll = F.cross_entropy(out.logits[:, :-1].transpose(1, 2), toks[:, 1:], reduction="none")
    res["rep_loss_first"] = nll[:, 1:50].mean().item()
    res["rep_loss_second"] = nll[:, 51:].mean().item()
    if out.attentions:  # empty under sdpa: only eager attention returns weights
        res["induction"] = max(a.diagonal(-49, dim1=-2, dim2=-1).mean((0, -1)).max().item()
                               for a in out.attentions)
        res["prev_token"] = max(a.diagonal(-1, dim1=-2, dim2=-1).mean((0, -1)).max().item()
                                for a in out.attentions)
    model.train()
    return res


def save_model(model, tok_folder: Path, out: Path, meta: dict) -> None:
    """Write config + safetensors + tokenizer into ``out`` atomically (temp dir, then rename)."""
    tmp = out.parent / (out.name + ".tmp")
    old = out.parent / (out.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp), safe_serialization=True)
    for f in tok_folder.iterdir():
        shutil.copy2(f, tmp / f.name)
    if (out / "README.md").exists():
        shutil.copy2(out / "README.md", tmp / "README.md")
    (tmp / "training_state.json").write_text(json.dumps(meta, indent=1))
    for f in tmp.iterdir():
        f.chmod(0o644)  # save_pretrained writes weights 0600; the bundled model must be readable
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-docs", type=int, default=200_000)
    ap.add_argument("--vocab-size", type=int, default=4096)
    ap.add_argument("--n-layer", type=int, default=4)
    ap.add_argument("--d-model", type=int, default=192)
    ap.add_argument("--n-head", type=int, default=6)
    ap.add_argument("--n-positions", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16, help="sequences per step")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=150)
    ap.add_argument("--weight-decay", type=float, default=0.05)
    ap.add_argument("--random-frac", type=float, default=0.3)
    ap.add_argument(
        "--cycle-frac",
        type=float,
        default=0.0,
        help="of the random-token sequences, the fraction that are repeated random pairs",
    )
    ap.add_argument("--seg", type=int, nargs=2, default=(8, 60), metavar=("MIN", "MAX"),
                    help="length range of a repeated random segment")
    ap.add_argument("--repeats", type=int, nargs=2, default=(2, 3), metavar=("MIN", "MAX"),
                    help="how many times a random segment is written (more: a stronger "
                         "in-context copying signal per sequence)")
    ap.add_argument("--name-swap-frac", type=float, default=0.0,
                    help="fraction of rows of IOI sentences with random whole-word tokens as names")
    ap.add_argument("--hint-weight", type=float, default=0.0,
                    help="weight of the induction attention hint on the random-token rows")
    ap.add_argument("--hint-steps", type=int, default=0,
                    help="apply the induction hint for this many first steps only")
    ap.add_argument("--hint-head", type=int, nargs=2, default=(1, 1), metavar=("LAYER", "HEAD"),
                    help="the head the hint is applied to")
    ap.add_argument("--prev-hint-head", type=int, nargs=2, default=None, metavar=("LAYER", "HEAD"),
                    help="also pull this head toward previous-token attention during the hint "
                         "steps (same weight): the head the induction head composes with")
    ap.add_argument(
        "--init-from",
        type=Path,
        default=None,
        help="start from the weights in this folder (a second training stage)",
    )
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--ckpt-every", type=int, default=250)
    ap.add_argument("--log-every", type=int, default=25)
    ap.add_argument(
        "--max-minutes", type=float, default=0, help="safety stop: save and exit after this"
    )
    ap.add_argument(
        "--stop-after",
        type=int,
        default=0,
        help="stop after this many steps (the schedule still spans --steps): a first stage",
    )
    ap.add_argument(
        "--batch-seed",
        type=int,
        default=None,
        help="seed of data order and random tokens (default: --seed + 1)",
    )
    ap.add_argument("--eval", action=argparse.BooleanOptionalAction, default=True)
    args = ap.parse_args(argv)

    from transformers import GPT2LMHeadModel

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    t0 = time.time()
    print(
        "command:",
        "python -m tools.organism.train " + " ".join(argv if argv is not None else sys.argv[1:]),
        flush=True,
    )

    docs = generate_documents(args.seed, args.n_docs)
    tok_raw = train_tokenizer(docs, args.vocab_size)
    tok_folder = args.out.parent / (args.out.name + ".tokenizer")
    shutil.rmtree(tok_folder, ignore_errors=True)
    tok = save_hf_tokenizer(tok_raw, tok_folder, args.n_positions)
    doc_ids = [e.ids for e in tok_raw.encode_batch(docs)]
    n_tok = sum(map(len, doc_ids))
    vocab = tok_raw.get_vocab_size()
    print(
        f"corpus: {len(docs)} docs, {n_tok} tokens, vocab {vocab}; {time.time() - t0:.1f}s",
        flush=True,
    )

    if args.init_from:
        model = GPT2LMHeadModel.from_pretrained(str(args.init_from), attn_implementation="eager")
        if model.config.vocab_size != vocab:
            raise SystemExit(
                f"{args.init_from} has vocab {model.config.vocab_size}, corpus {vocab}"
            )
        same = (args.init_from / "tokenizer.json").read_text() == (
            tok_folder / "tokenizer.json"
        ).read_text()
        if not same:
            raise SystemExit(f"{args.init_from} was trained with a different tokenizer")
        print(f"initialised from {args.init_from}", flush=True)
    else:
        config = build_config(vocab, args)
        config._attn_implementation = "eager"  # monitoring reads attention weights
        model = GPT2LMHeadModel(config)
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"model: {args.n_layer} layers, d_model {args.d_model}, {args.n_head} heads, {n_params} params",
        flush=True,
    )
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": args.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=args.lr,
        betas=(0.9, 0.95),
        eps=1e-8,
    )
    batches = Batches(
        doc_ids,
        vocab,
        args.n_positions,
        args.batch,
        args.random_frac,
        args.seed + 1 if args.batch_seed is None else args.batch_seed,
        args.cycle_frac,
        tuple(args.seg),
        tuple(args.repeats),
        NameSwapIOI(tok_raw, args.seed + 7) if args.name_swap_frac > 0 else None,
        args.name_swap_frac,
    )
    model.train()
    t_train = time.time()
    ema = None
    step = 0

    def checkpoint(done: int, final: bool) -> None:
        meta = {
            "step": done,
            "steps": args.steps,
            "final": final,
            "minutes": (time.time() - t0) / 60,
            "cpu_minutes": time.process_time() / 60,
            "args": {k: str(v) for k, v in vars(args).items()},
        }
        if args.eval:
            q = quick_eval(model, tok)
            meta["quick_eval"] = q
            print(f"eval step {done}: {json.dumps(q)}", flush=True)
        save_model(model, tok_folder, args.out, meta)
        print(f"saved checkpoint step {done} to {args.out}", flush=True)

    for step in range(args.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args)
        x = batches.next()
        hint_on = args.hint_weight > 0 and step < args.hint_steps and any(batches.last_random)
        out = model(x, output_attentions=hint_on)
        logits = out.logits
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1))
        hint = None
        if hint_on:
            layer, head = args.hint_head
            rows = torch.tensor(batches.last_random)
            hint = induction_hint_loss(x[rows], out.attentions[layer][rows, head])
            if args.prev_hint_head is not None:
                pl, ph = args.prev_hint_head
                hint = hint + prev_token_hint_loss(out.attentions[pl][rows, ph])
            loss_total = loss + args.hint_weight * hint
        else:
            loss_total = loss
        opt.zero_grad(set_to_none=True)
        loss_total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        ema = loss.item() if ema is None else 0.95 * ema + 0.05 * loss.item()
        if step % args.log_every == 0 or step == args.steps - 1:
            el = time.time() - t_train
            tps = (step + 1) * x.numel() / el
            print(
                f"step {step} loss {loss.item():.4f} ema {ema:.4f} lr {lr_at(step, args):.2e} "
                f"tok/s {tps:.0f} elapsed {el / 60:.1f}m epoch {batches.epoch}"
                + (f" hint {hint.item():.3f}" if hint is not None else ""),
                flush=True,
            )
        if (step + 1) % args.ckpt_every == 0 and step + 1 < args.steps:
            checkpoint(step + 1, final=False)
        if args.stop_after and step + 1 >= args.stop_after:
            print(f"stop-after reached at step {step + 1}", flush=True)
            break
        if args.max_minutes and (time.time() - t0) / 60 > args.max_minutes:
            print(f"max-minutes reached at step {step}: stopping early", flush=True)
            break
    step += 1
    checkpoint(step, final=step >= args.steps)
    shutil.rmtree(tok_folder, ignore_errors=True)
    print(f"done: {step} steps in {(time.time() - t0) / 60:.1f} min", flush=True)


if __name__ == "__main__":
    main()
