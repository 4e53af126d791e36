"""Write the bundled corpus sample: organism documents from a seed other than training's.

    python -m tools.sae.make_corpus            # resources/corpus/lensbench-organism-sample.txt.gz

One document per line, gzip-compressed (deterministic: no timestamp in the gzip header). The
organism was trained on seed 0; this sample is seed 1, so its documents are fresh draws from the
same distribution (the same words, facts and templates; the held-out IOI names and templates
never occur). It is the default text for training SAEs and building feature dashboards.
"""

from __future__ import annotations

import argparse
import gzip
import io
from pathlib import Path

from engine.text_source import BUNDLED_CORPUS
from tools.organism.corpus import generate_documents


def write_sample(out: Path, seed: int, n_docs: int) -> int:
    text = "\n".join(generate_documents(seed, n_docs)) + "\n"
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=9, mtime=0, filename="") as f:
        f.write(text.encode("utf-8"))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(buf.getvalue())
    return len(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--n-docs", type=int, default=21000)
    ap.add_argument("--out", type=Path, default=BUNDLED_CORPUS)
    args = ap.parse_args()
    n = write_sample(args.out, args.seed, args.n_docs)
    print(f"wrote {args.out} ({n} characters, {args.out.stat().st_size} bytes compressed)")


if __name__ == "__main__":
    main()
