"""Speed bar of the text encoder: annrec's TextEncoder.encode vs a bare SentenceTransformer.encode.

Both arms encode the same MovieLens item texts (title, genres, tags) with the same loaded model
instance, the same batch size and ``normalize_embeddings=True``; annrec's arm runs with the cache
disabled (``use_cache=False``) so that the encoding work is identical. The arms alternate (A B C, then
C B A, ...) so that load drift on a shared machine hits them alike; the reported ratio is the median
over repetitions of (annrec texts/s) / (bare texts/s) measured back to back in wall-clock time; the
same ratio in process CPU time is reported too (less sensitive to other jobs on a shared machine).
A third arm, annrec with a cold cache (a fresh cache folder each repetition: hashing and the SQLite
write included), is reported for information.

Usage::

    python bench/text_encode_speed.py [--n 1000] [--reps 5] [--batch-size 64] [--threads 2] \
        [--model all-MiniLM-L6-v2] [--device cpu] [--json bench/results/text_encode_speed.json]

Speed bar (issue 5): annrec / bare >= 0.95.
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
    ap.add_argument("--n", type=int, default=1000, help="number of item texts (first n movies)")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--model", default="all-MiniLM-L6-v2")
    ap.add_argument("--device", default=None)
    ap.add_argument("--dataset", default="ml-latest-small")
    ap.add_argument("--no-cold-cache-arm", action="store_true", help="skip the annrec cold-cache arm")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    os.environ.setdefault("ANNREC_DATA_DIR", "/work/shared/datasets")
    from annrec._io import write_json
    from annrec.data import load_movielens
    from annrec.train.text import TextEncoder, build_item_texts

    items = load_movielens(args.dataset, download=False, progress=False).items
    texts = build_item_texts(items, "title,genres,tags").tolist()[: args.n]
    enc = TextEncoder(args.model, batch_size=args.batch_size, device=args.device, use_cache=False,
                      show_progress_bar=False)
    model = enc.model  # the very same SentenceTransformer instance for both arms

    def bare() -> np.ndarray:
        return model.encode(texts, batch_size=args.batch_size, normalize_embeddings=True, convert_to_numpy=True,
                            show_progress_bar=False)

    def annrec() -> np.ndarray:
        return enc.encode(texts)

    def annrec_cold_cache() -> np.ndarray:
        with tempfile.TemporaryDirectory() as d:
            e = TextEncoder(args.model, batch_size=args.batch_size, device=args.device, cache_dir=d,
                            show_progress_bar=False)
            out = e.encode(texts)
            assert e.last_stats["n_encoded"] == len(set(texts))
            return out

    def timed(fn) -> tuple[float, float, np.ndarray]:
        """(wall seconds, process CPU seconds, output)."""
        if enc.device.startswith("cuda"):
            torch.cuda.synchronize()
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        if enc.device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - t0, time.process_time() - c0, out

    # warm-up (first-call allocations, tokenizer caches)
    model.encode(texts[:128], batch_size=args.batch_size, show_progress_bar=False)
    enc.encode(texts[:128])

    arms = {"bare": bare, "annrec": annrec}
    if not args.no_cold_cache_arm:
        arms["annrec_cold_cache"] = annrec_cold_cache
    times: dict[str, list[float]] = {k: [] for k in arms}
    cpu: dict[str, list[float]] = {k: [] for k in arms}
    max_diff = 0.0
    for r in range(args.reps):
        order = list(arms) if r % 2 == 0 else list(reversed(arms))
        outs = {}
        for name in order:
            dt, dc, outs[name] = timed(arms[name])
            times[name].append(dt)
            cpu[name].append(dc)
        max_diff = max(max_diff, *(float(np.abs(outs[k] - outs["bare"]).max()) for k in outs))
        print(f"rep {r}: " + ", ".join(f"{k} {len(texts) / times[k][-1]:.1f} texts/s" for k in arms), flush=True)

    tps = {k: [len(texts) / t for t in v] for k, v in times.items()}
    ratios = [a / b for a, b in zip(tps["annrec"], tps["bare"])]
    cpu_ratios = [b / a for a, b in zip(cpu["annrec"], cpu["bare"])]  # texts per CPU-second, annrec / bare
    result = {
        "bench": "text_encode_speed",
        "command": "python bench/text_encode_speed.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "model": args.model, "model_path": str(enc.resolved.path), "device": enc.device, "threads": args.threads,
        "batch_size": args.batch_size, "n_texts": len(texts), "reps": args.reps,
        "texts_per_second_median": {k: round(statistics.median(v), 1) for k, v in tps.items()},
        "seconds": {k: [round(t, 3) for t in v] for k, v in times.items()},
        "ratio_annrec_over_bare_median": round(statistics.median(ratios), 4),
        "ratio_annrec_over_bare_total_time": round(sum(times["bare"]) / sum(times["annrec"]), 4),
        "ratio_per_rep": [round(x, 4) for x in ratios],
        "cpu_seconds": {k: [round(t, 3) for t in v] for k, v in cpu.items()},
        "ratio_annrec_over_bare_cpu_time_median": round(statistics.median(cpu_ratios), 4),
        "ratio_annrec_over_bare_cpu_time_total": round(sum(cpu["bare"]) / sum(cpu["annrec"]), 4),
        "max_abs_vector_difference": max_diff,
        "bar": 0.95,
    }
    if "annrec_cold_cache" in tps:
        result["ratio_cold_cache_over_bare_median"] = round(statistics.median(
            a / b for a, b in zip(tps["annrec_cold_cache"], tps["bare"])), 4)
    result["passes_bar"] = result["ratio_annrec_over_bare_median"] >= 0.95
    print(json.dumps({k: v for k, v in result.items() if k not in ("seconds", "cpu_seconds")}, indent=2))
    if args.json:
        write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
