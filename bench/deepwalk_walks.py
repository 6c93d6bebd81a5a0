"""Speed of random-walk generation: annrec's vectorised numpy walks vs a Python ``random.choice`` loop.

The baseline is the walk loop of the reference DeepWalk implementation (phanein/deepwalk ``graph.py``:
per walk, ``path.append(rand.choice(G[cur]))`` on adjacency lists; its restart branch, ``alpha = 0`` by
default, is left out, which only makes the baseline faster). Both generate the ``paper`` preset's corpus
(80 walks per node, length 40, start nodes shuffled each round) on the same graph: the item co-occurrence
graph of ml-latest-small (consecutive items, unweighted). Runs alternate (numpy, Python, numpy, Python,
...) so that both see the same machine load; wall-clock and CPU (process) time are reported, and the
ratio of medians.

    ANNREC_DATA_DIR=/path/to/datasets python bench/deepwalk_walks.py --json bench/results/deepwalk_walks.json
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path


def python_walks(adj_lists: list[list[int]], walks_per_node: int, walk_length: int, seed: int = 0) -> list[list[int]]:
    """The reference Python loop: one ``random.choice`` per step (DeepWalk's ``random_walk``)."""
    rand = random.Random(seed)
    nodes = list(range(len(adj_lists)))
    walks = []
    for _ in range(walks_per_node):
        rand.shuffle(nodes)
        for start in nodes:
            path = [start]
            while len(path) < walk_length:
                nbrs = adj_lists[path[-1]]
                if not nbrs:
                    break
                path.append(rand.choice(nbrs))
            walks.append(path)
    return walks


def timed(fn):
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w0, time.process_time() - c0


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="ml-latest-small")
    ap.add_argument("--walks-per-node", type=int, default=80, help="paper preset: 80")
    ap.add_argument("--walk-length", type=int, default=40, help="paper preset: 40")
    ap.add_argument("--repeats", type=int, default=2, help="alternating (numpy, Python) pairs")
    ap.add_argument("--node2vec", action="store_true", help="also time numpy node2vec (p=0.5, q=2; p=2, q=0.5) "
                    "and weighted walks (numpy only)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    from annrec.data import load_movielens
    from annrec.data.graph import cooccurrence_graph
    from annrec.train.walks import random_walks, walk_lengths

    inter = load_movielens(args.dataset)
    g = cooccurrence_graph(inter, weighted=False)
    indptr, indices = g.adj.indptr, g.adj.indices
    adj_lists = [indices[indptr[i]:indptr[i + 1]].tolist() for i in range(g.n_nodes)]  # untimed
    wpn, wl = args.walks_per_node, args.walk_length
    print(f"graph: {g.summary()}")
    print(f"corpus: {wpn} walks/node x {g.n_nodes} nodes, length {wl} -> {wpn * g.n_nodes} walks")

    rows = {"numpy": [], "python": []}
    for r in range(args.repeats):
        w, wall, cpu = timed(lambda: random_walks(g, wpn, wl, seed=r))
        rows["numpy"].append({"wall_s": wall, "cpu_s": cpu, "steps": int(walk_lengths(w).sum() - len(w))})
        print(f"[{r}] numpy  {wall:8.2f} s wall {cpu:8.2f} s cpu", flush=True)
        del w
        pw, wall, cpu = timed(lambda: python_walks(adj_lists, wpn, wl, seed=r))
        rows["python"].append({"wall_s": wall, "cpu_s": cpu, "steps": sum(len(p) - 1 for p in pw)})
        print(f"[{r}] python {wall:8.2f} s wall {cpu:8.2f} s cpu", flush=True)
        del pw

    def med(name, key):
        return statistics.median(x[key] for x in rows[name])

    result = {
        "benchmark": "random-walk generation, paper preset corpus",
        "dataset": args.dataset, "graph": g.summary(), "walks_per_node": wpn, "walk_length": wl,
        "repeats": args.repeats, "runs": rows,
        "numpy_wall_s": med("numpy", "wall_s"), "python_wall_s": med("python", "wall_s"),
        "numpy_cpu_s": med("numpy", "cpu_s"), "python_cpu_s": med("python", "cpu_s"),
    }
    result["speedup_wall"] = result["python_wall_s"] / result["numpy_wall_s"]
    result["speedup_cpu"] = result["python_cpu_s"] / result["numpy_cpu_s"]
    result["pair_speedups_wall"] = [p["wall_s"] / n["wall_s"] for n, p in zip(rows["numpy"], rows["python"])]
    result["numpy_steps_per_s"] = rows["numpy"][0]["steps"] / result["numpy_wall_s"]
    result["python_steps_per_s"] = rows["python"][0]["steps"] / result["python_wall_s"]
    result["bar"] = ">= 10x"
    result["passes_bar"] = bool(result["speedup_wall"] >= 10 and result["speedup_cpu"] >= 10)
    if args.node2vec:
        extra = {}
        gw = cooccurrence_graph(inter, weighted=True)
        for label, graph, kw in (("node2vec p=0.5 q=2", g, dict(p=0.5, q=2.0)),
                                 ("node2vec p=2 q=0.5", g, dict(p=2.0, q=0.5)),
                                 ("weighted (co-occurrence counts)", gw, {})):
            _, wall, cpu = timed(lambda: random_walks(graph, wpn, wl, seed=0, **kw))
            extra[label] = {"wall_s": wall, "cpu_s": cpu}
            print(f"numpy {label}: {wall:.2f} s wall {cpu:.2f} s cpu", flush=True)
        result["numpy_other_walks"] = extra
    print(f"speed-up (median wall) {result['speedup_wall']:.1f}x, (median cpu) {result['speedup_cpu']:.1f}x; "
          f"pairs {', '.join(f'{x:.1f}x' for x in result['pair_speedups_wall'])}")
    if args.json:
        from annrec._io import write_json

        write_json(args.json, result)
        print(f"written {args.json}")
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
