"""Speed bar of the text encoder: annrec's TextEncoder.encode vs a bare SentenceTransformer.encode.

Both arms encode the same MovieLens item texts (title, genres, tags) with the same loaded model
instance, the same batch size and ``normalize_embeddings=True``; annrec's arm runs with the cache
disabled (``use_cache=False``) so that the encoding work is identical. To cancel the load drift of a
shared machine, the texts are cut into chunks (``--chunk`` texts, a few batches) and every chunk is
encoded by every arm back to back, in a random order per chunk, ``--reps`` times over; each such
group is one "trial". Reported: the median over trials of (annrec texts/s) / (bare texts/s), the
same ratio over the summed times, and both again in process CPU time (less sensitive to other jobs).
Two more arms are reported for information: annrec with a cold cache (a fresh cache folder per trial:
hashing and the SQLite write included), and an A/A control (the bare call a second time), whose ratio
to the bare arm shows how far from 1.0 noise alone moves the figure on this machine. Finally annrec's own work is measured with the model stubbed
out (noise-free): the share of the encoding time that the wrapper adds.

Usage::

    python bench/text_encode_speed.py [--n 384] [--chunk 128] [--reps 5] [--batch-size 64] \
        [--threads 2] [--model all-MiniLM-L6-v2] [--device cpu] [--json bench/results/text_encode_speed.json]

Speed target: annrec / bare >= 0.95.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=384, help="number of item texts (first n movies)")
    ap.add_argument("--chunk", type=int, default=128, help="texts per trial (a few batches)")
    ap.add_argument("--reps", type=int, default=5, help="passes over the n texts")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--model", default="all-MiniLM-L6-v2")
    ap.add_argument("--device", default=None)
    ap.add_argument("--dataset", default="ml-latest-small")
    ap.add_argument("--seed", type=int, default=0, help="seed of the arm order")
    ap.add_argument("--no-cold-cache-arm", action="store_true", help="skip the annrec cold-cache arm")
    ap.add_argument("--no-control-arm", action="store_true",
                    help="skip the A/A control (a second bare arm that shows the noise floor of the ratio)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from annrec._io import write_json
    from annrec.data import load_movielens
    from annrec.train.text import TextEncoder, build_item_texts

    items = load_movielens(args.dataset, download=False, progress=False).items
    all_texts = build_item_texts(items, "title,genres,tags").tolist()
    texts = all_texts[: args.n]
    chunks = [texts[i:i + args.chunk] for i in range(0, len(texts), args.chunk)]
    enc = TextEncoder(args.model, batch_size=args.batch_size, device=args.device, use_cache=False,
                      show_progress_bar=False)
    model = enc.model  # the very same SentenceTransformer instance for every arm

    def bare(chunk):
        return model.encode(chunk, batch_size=args.batch_size, normalize_embeddings=True, convert_to_numpy=True,
                            show_progress_bar=False)

    def annrec(chunk):
        return enc.encode(chunk)

    def annrec_cold_cache(chunk):
        with tempfile.TemporaryDirectory() as d:
            e = TextEncoder(args.model, batch_size=args.batch_size, device=args.device, cache_dir=d,
                            show_progress_bar=False)
            out = e.encode(chunk)
            assert e.last_stats["n_encoded"] == len(set(chunk))
            return out

    def timed(fn, chunk):
        """(wall seconds, process CPU seconds, output)."""
        if enc.device.startswith("cuda"):
            torch.cuda.synchronize()
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn(chunk)
        if enc.device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - t0, time.process_time() - c0, out

    # warm-up (first-call allocations, tokenizer caches)
    bare(texts[:128])
    annrec(texts[:128])

    arms = {"bare": bare, "annrec": annrec}
    if not args.no_control_arm:
        arms["bare_control"] = lambda chunk: bare(chunk)  # A/A control: the bare call again
    if not args.no_cold_cache_arm:
        arms["annrec_cold_cache"] = annrec_cold_cache
    rng = np.random.default_rng(args.seed)
    wall: dict[str, list[float]] = {k: [] for k in arms}
    cpu: dict[str, list[float]] = {k: [] for k in arms}
    sizes: list[int] = []
    max_diff = 0.0
    for r in range(args.reps):
        for chunk in chunks:
            outs = {}
            for j in rng.permutation(len(arms)):
                name = list(arms)[j]
                dw, dc, outs[name] = timed(arms[name], chunk)
                wall[name].append(dw)
                cpu[name].append(dc)
            sizes.append(len(chunk))
            max_diff = max(max_diff, *(float(np.abs(outs[k] - outs["bare"]).max()) for k in outs))
        last = slice(-len(chunks), None)
        print(f"pass {r}: " + ", ".join(f"{k} {sum(sizes[last]) / sum(wall[k][last]):.1f} texts/s" for k in arms)
              + f"  (annrec/bare {sum(wall['bare'][last]) / sum(wall['annrec'][last]):.3f})", flush=True)

    # annrec's own work, measured without the model: the same calls with SentenceTransformer.encode
    # replaced by a stub that returns zeros (all texts of the data set; noise-free)
    model.encode = lambda sentences, *a, **k: np.zeros((len(sentences), enc.dim), np.float32)
    try:
        t0 = time.perf_counter()
        enc.encode(all_texts)
        wrapper_s = time.perf_counter() - t0
        with tempfile.TemporaryDirectory() as d:
            e = TextEncoder(args.model, batch_size=args.batch_size, device=args.device, cache_dir=d,
                            show_progress_bar=False)
            t0 = time.perf_counter()
            e.encode(all_texts)
            cold_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            e.encode(all_texts)
            warm_s = time.perf_counter() - t0
    finally:
        del model.encode  # back to the class's method

    def ratio_stats(t: dict[str, list[float]], arm: str) -> dict:
        per_trial = [b / a for a, b in zip(t[arm], t["bare"])]  # texts/s of arm over texts/s of bare
        q = np.quantile(per_trial, [0.25, 0.75])
        return {"median": round(statistics.median(per_trial), 4), "total": round(sum(t["bare"]) / sum(t[arm]), 4),
                "iqr": [round(float(q[0]), 4), round(float(q[1]), 4)]}

    n_total = sum(sizes)
    per_text_bare = sum(wall["bare"]) / n_total
    result = {
        "bench": "text_encode_speed",
        "command": "python bench/text_encode_speed.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "model": args.model, "model_path": str(enc.resolved.path), "device": enc.device, "threads": args.threads,
        "batch_size": args.batch_size, "n_texts": len(texts), "chunk": args.chunk, "reps": args.reps,
        "trials": len(sizes),
        "texts_per_second": {k: round(n_total / sum(v), 2) for k, v in wall.items()},
        "ratio_annrec_over_bare": ratio_stats(wall, "annrec"),
        "ratio_annrec_over_bare_cpu_time": ratio_stats(cpu, "annrec"),
        "max_abs_vector_difference": max_diff,
        "overhead_without_model": {
            "n_texts": len(all_texts),
            "no_cache_seconds": round(wrapper_s, 4),
            "cold_cache_seconds": round(cold_s, 4),
            "warm_cache_seconds": round(warm_s, 4),
            "no_cache_share_of_encode_time": round(wrapper_s / len(all_texts) / per_text_bare, 6),
            "cold_cache_share_of_encode_time": round(cold_s / len(all_texts) / per_text_bare, 6),
            "warm_cache_texts_per_second": round(len(all_texts) / warm_s, 1),
        },
        "bar": 0.95,
        "wall_seconds": {k: [round(t, 3) for t in v] for k, v in wall.items()},
        "cpu_seconds": {k: [round(t, 3) for t in v] for k, v in cpu.items()},
    }
    if "annrec_cold_cache" in arms:
        result["ratio_cold_cache_over_bare"] = ratio_stats(wall, "annrec_cold_cache")
    if "bare_control" in arms:  # the same call twice: how far from 1.0 noise alone moves the ratio
        result["ratio_control_over_bare"] = ratio_stats(wall, "bare_control")
    result["passes_bar"] = result["ratio_annrec_over_bare"]["median"] >= 0.95
    print(json.dumps({k: v for k, v in result.items() if k not in ("wall_seconds", "cpu_seconds")}, indent=2))
    if args.json:
        write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
