"""Word counts of long real documents, offline: the Linux man-pages of Debian's ``manpages`` and
``manpages-dev`` packages (sections 2, 3, 5, 7 under /usr/share/man; ``apt-get install manpages
manpages-dev``), as two replicated-softmax modalities for ``data=arrays``.

Each page is one example: its words (troff requests and escapes removed), the first half of them
the modality ``head`` and the second half ``tail``, counted over one vocabulary of the
``--words`` most frequent words (scikit-learn's ``CountVectorizer``, English stop words removed).
The label is the man section. Pages with fewer than ``--min-words`` words are left out.

    python scripts/manpages_bow.py out/ [--words 2000] [--min-words 400] [--max-pages N]
    python -m mmvi.train data=arrays 'data.files={head: out/head.npy, tail: out/tail.npy}' \\
        data.labels=out/labels.npy '+data.units={head: softmax, tail: softmax}'

Writes ``head.npy``, ``tail.npy`` (float32 counts, (N, words)), ``labels.npy`` (section numbers)
and ``vocabulary.txt``; prints the document lengths.
"""

from __future__ import annotations

import argparse
import gzip
import re
from pathlib import Path

import numpy as np

MAN = Path("/usr/share/man")
SECTIONS = (2, 3, 5, 7)
# troff: request lines (.TH, .SH, ...), comments, font/size escapes (\fB, \s-1), named glyphs (\(em, \[aq])
REQUEST = re.compile(r"^[.'].*$", re.M)
ESCAPE = re.compile(r"\\(f[A-Z0-9]|f\(..|f\[[^]]*\]|s[-+]?\d|\(..|\[[^]]*\]|\*.|.)")


def page_words(path: Path) -> str:
    """The text of one (gzipped) man page with troff markup removed."""
    raw = path.read_bytes()
    text = (gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw).decode("utf-8", "replace")
    if text.startswith(".so "):  # a link to another page
        return ""
    return ESCAPE.sub(" ", REQUEST.sub(" ", text))


def build(out: Path, words: int = 2000, min_words: int = 400, max_pages: int | None = None) -> dict:
    from sklearn.feature_extraction.text import CountVectorizer

    pages, labels = [], []
    for s in SECTIONS:
        for path in sorted((MAN / f"man{s}").glob("*")):
            text = page_words(path)
            if text:
                pages.append(text)
                labels.append(s)
    analyse = CountVectorizer(stop_words="english").build_analyzer()
    tokens = [analyse(p) for p in pages]
    keep = [i for i, t in enumerate(tokens) if len(t) >= min_words][:max_pages]
    heads = [" ".join(tokens[i][: len(tokens[i]) // 2]) for i in keep]
    tails = [" ".join(tokens[i][len(tokens[i]) // 2 :]) for i in keep]
    vec = CountVectorizer(max_features=words, analyzer=str.split)
    vec.fit(heads + tails)
    out.mkdir(parents=True, exist_ok=True)
    head = vec.transform(heads).toarray().astype(np.float32)
    tail = vec.transform(tails).toarray().astype(np.float32)
    np.save(out / "head.npy", head)
    np.save(out / "tail.npy", tail)
    np.save(out / "labels.npy", np.asarray(labels)[keep])
    (out / "vocabulary.txt").write_text("\n".join(vec.get_feature_names_out()) + "\n")
    lengths = head.sum(1) + tail.sum(1)
    return {
        "pages": len(keep),
        "sections": {s: int((np.asarray(labels)[keep] == s).sum()) for s in SECTIONS},
        "words per page (in the vocabulary)": {
            "median": float(np.median(lengths)),
            "mean": float(lengths.mean()),
            "max": float(lengths.max()),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("out", type=Path)
    parser.add_argument("--words", type=int, default=2000)
    parser.add_argument("--min-words", type=int, default=400)
    parser.add_argument("--max-pages", type=int, default=None)
    args = parser.parse_args()
    print(build(args.out, args.words, args.min_words, args.max_pages))


if __name__ == "__main__":
    main()
