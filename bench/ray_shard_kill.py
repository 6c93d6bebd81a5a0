#!/usr/bin/env python
"""Ray shard actors under a query load: memory per actor, and what killing one does to the searches.

Loads the 2-shard Fashion-MNIST index that ``bench/ray_serve.py`` builds into Ray actors on a local Ray,
reports each actor's RSS against its shard folder's size (the bar: RSS <= folder + 100 MB), then runs a
closed loop of batch searches (10 queries each) and kills shard 0's actor (``ray.kill(no_restart=False)``)
after ``--kill-after`` seconds. Every answer is compared with the in-process shards' answer: a search either
returns the full merged answer or fails (an answer with a shard missing would differ). Reports the
searches that failed, the longest gap between two answered searches (the restart as a client sees it), and
when the restarted actor (a new pid) answered again.

    python bench/ray_shard_kill.py --json bench/results/ray_shard_kill.json
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--index", type=Path, default=ROOT / "index" / "built" / "service-fmnist-2shards" / "fmnist-hnsw",
                   help="a sharded index folder (built as bench/ray_serve.py builds it when missing)")
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--kill-after", type=float, default=5.0)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()

    import ray

    from annrec.bench.datasets import FASHION_MNIST_DIR, read_idx
    from annrec.index import load_index
    from annrec.index.ray_shards import init_ray

    if not (args.index / "manifest.json").exists():
        import sys

        sys.path.insert(0, str(ROOT / "bench"))
        from ray_serve import build_sharded_dir

        build_sharded_dir(args.index.parent, 2)
    q = read_idx(FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz")[:200].reshape(200, -1).astype(np.float32)
    local = load_index(args.index)
    want = local.search(q, 10)[0]
    init_ray(num_cpus=2, temp_dir=tempfile.mkdtemp(prefix="ray-"))
    remote = load_index(args.index, backend="ray")
    out = {"benchmark": "ray_shard_kill", "load_average_start": os.getloadavg(), "actors": []}
    for s, folder in zip(remote.shards, sorted(args.index.glob("shard-*"))):
        info = s.info()
        size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
        mb = {k[:-6]: round(info[k] / 2**20, 1) for k in ("rss_bytes", "pss_bytes", "uss_bytes")}
        out["actors"].append({"folder_mb": round(size / 2**20, 1), **{f"{k}_mb": v for k, v in mb.items()},
                              **{f"{k}_minus_folder_mb": round(v - size / 2**20, 1) for k, v in mb.items()}})
    print("actors:", out["actors"])
    events: list[tuple[float, bool, bool]] = []  # (time, answered, exact)
    stop = threading.Event()

    def load() -> None:
        i = 0
        while not stop.is_set():
            rows = slice((i * 10) % 200, (i * 10) % 200 + 10)
            t = time.monotonic()
            try:
                got = remote.search(q[rows], 10)[0]
                events.append((t, True, bool((got == want[rows]).all())))
            except Exception:  # noqa: BLE001 - a failed search: counted
                events.append((t, False, False))
            i += 1

    pid_before = remote.shards[0].info()["pid"]
    worker = threading.Thread(target=load)
    t0 = time.monotonic()
    worker.start()
    time.sleep(args.kill_after)
    t_kill = time.monotonic()
    ray.kill(remote.shards[0].actor, no_restart=False)
    back = None
    while time.monotonic() - t0 < args.seconds:
        try:
            if remote.shards[0].info()["pid"] != pid_before:
                back = time.monotonic() - t_kill
                break
        except Exception:  # noqa: BLE001 - still restarting
            pass
        time.sleep(0.05)
    time.sleep(max(0.0, args.seconds - (time.monotonic() - t0)))
    stop.set()
    worker.join(60)
    times = [t for t, ok, _ in events if ok]
    gaps = np.diff(times) if len(times) > 1 else np.array([0.0])
    out.update({"searches": len(events), "answered": sum(ok for _, ok, _ in events),
                "failed": sum(not ok for _, ok, _ in events),
                "answered_but_not_the_full_answer": sum(ok and not exact for _, ok, exact in events),
                "longest_gap_s": round(float(gaps.max()), 2), "restarted_actor_answered_after_s":
                    None if back is None else round(back, 2), "load_average_end": os.getloadavg()})
    print({k: v for k, v in out.items() if k not in ("actors",)})
    ray.shutdown()
    if args.json:
        from annrec._io import write_json

        write_json(args.json, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
