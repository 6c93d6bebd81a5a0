#!/usr/bin/env python
"""Crash safety of served writes under ``kill -9``: is every acknowledged write there after a restart?

A model dir holding an hnswlib index of the first ``--n`` Fashion-MNIST training images (default 10,000;
l2, M=16, efConstruction=100, ef=64) is copied once into a temporary folder; that SAME folder is served
in every round, so each start loads whatever the previous, killed, server left behind. Each round:

1. start ``annrec serve --persist sync`` (own process group) and wait for ``/ready``; a server that exits
   or is not ready within 120 s is a failed restart (recorded; the run stops there);
2. verify every item the run has touched (and a sample of untouched ones) with
   ``GET /v1/indexes/{name}/items/{id}?include_vector=true`` against the expected state: the state after
   its last acknowledged (HTTP 200) operation, except that the one unacknowledged operation in flight at
   the kill may or may not have applied — unless the prober saw it applied before the kill, then it must
   have. The vector is compared with ``np.allclose`` and the metadata for equality; a deleted item must
   answer 404. Also the index's ``count``;
3. 4 writer threads, each owning a disjoint set of ids (so the operations on one id are sequential), send
   upserts (vector: a random Fashion-MNIST test image, metadata ``{"round": r, "op": n}``) of existing
   and new ids, and deletes of ids they upserted before; a prober thread keeps reading ids with an
   operation in flight and records one as "seen visible" when its effect shows before its answer;
4. after a random delay (uniform ``--min-delay``..``--max-delay``, 0.3-3 s) SIGKILL the server's process
   group; then list the hidden (``.``-prefixed) entries of the model dir and the index folder.

After ``--rounds`` rounds a last start verifies the final state and the server is stopped cleanly.
Counted: ``lost_acked`` (an acknowledged write rolled back to an older state of the item),
``visible_then_gone`` (a write seen applied before the kill, not there after it), ``wrong_state`` (an
item in a state it never had: wrong vector, metadata or presence), ``failed_restarts``; and the size of
the model dir, the index folder and the hidden entries left in them.

    python bench/storage_kills.py --rounds 30 --json bench/results/storage-kills-before.json
    python bench/storage_kills.py --rounds 3 --n 2000     # smoke test

``--env NAME=VALUE`` (repeated) passes settings to the server process; ``PYTHONPATH`` chooses the code
under test (see ``bench/storage_writes.py``). A quality check, not a timing: the figures do not depend on
the machine's load, only the number of operations per round does.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from storage_writes import (ADMIN_KEY, INDEX_NAME, READ_KEY, Conn, Server, cached_index,  # noqa: E402
                            code_under_test, fmnist, folder_bytes, fresh_copy, parse_env)

WRITERS = 4
NEW_ID_BASE = 1_000_000
ABSENT = None  # the state of an item that is not in the index


class Op:
    __slots__ = ("id", "kind", "target", "round", "n", "t_start", "t_ack", "seen_visible", "status", "error")

    def __init__(self, iid: int, kind: str, target, rnd: int, n: int) -> None:
        self.id, self.kind, self.target, self.round, self.n = iid, kind, target, rnd, n
        self.t_start, self.t_ack, self.seen_visible = time.monotonic(), None, False
        self.status, self.error = None, None


class Model:
    """What every touched id should hold. A live state is ``(split, row, metadata_json)``; absent is None."""

    def __init__(self, n_base: int, ids_per_writer: int) -> None:
        half = ids_per_writer // 2
        self.pools: list[list[int]] = []
        for w in range(WRITERS):
            base = [i for i in range(w, WRITERS * half, WRITERS) if i < n_base]
            new = [NEW_ID_BASE + w * 100_000 + j for j in range(ids_per_writer - len(base))]
            self.pools.append(base + new)
        self.n_base = n_base
        self.acked: dict[int, object] = {}
        self.history: dict[int, list] = {}
        for pool in self.pools:
            for i in pool:
                st = ("train", i, "null") if i < n_base else ABSENT
                self.acked[i] = st
                self.history[i] = [st]
        self.pending: dict[int, Op] = {}  # id -> its unacknowledged operation since the last verification
        self.upserted: set[int] = set()  # ids with an acknowledged upsert by their writer
        self.quarantined: set[int] = set()  # ids found in a state they never had: left alone afterwards
        self.touched: set[int] = set()


def state_matches(obs, state, images: dict[str, np.ndarray]) -> bool:
    if state is ABSENT or obs is ABSENT:
        return state is ABSENT and obs is ABSENT
    split, row, meta = state
    vec, got_meta = obs
    return json.dumps(got_meta, sort_keys=True) == meta and vec is not None and \
        np.allclose(vec, images[split][row])


def read_item(c: Conn, iid: int, with_vector: bool = True):
    """('absent' | (vector, metadata)) as the server answers; raises on anything but 200 / 404."""
    q = "?include_vector=true" if with_vector else ""
    status, body = c.request("GET", f"/v1/indexes/{INDEX_NAME}/items/{iid}{q}")
    if status == 404:
        return ABSENT
    if status != 200:
        raise RuntimeError(f"GET item {iid}: HTTP {status} {body[:200]!r}")
    d = json.loads(body)
    vec = np.asarray(d["vector"], dtype=np.float32) if d.get("vector") is not None else None
    return vec, d.get("metadata")


def verify(port: int, model: Model, images: dict[str, np.ndarray], rng: random.Random, untouched_sample: int) -> dict:
    """Compare the served items with the model, then make the model follow what survived."""
    c = Conn(port, READ_KEY, timeout=60)
    out = {"checked": 0, "ok": 0, "pending_applied": 0, "pending_not_applied": 0, "lost_acked": 0,
           "visible_then_gone": 0, "wrong_state": 0, "examples": []}
    for iid in sorted(model.touched - model.quarantined):
        obs = read_item(c, iid)
        out["checked"] += 1
        acked, op = model.acked[iid], model.pending.pop(iid, None)
        hist = model.history[iid]
        bad = None
        if op is not None and op.seen_visible and not state_matches(obs, op.target, images):
            bad = "visible_then_gone"
        elif state_matches(obs, acked, images):
            out["ok"] += 1
            if op is not None:
                out["pending_not_applied"] += 1
        elif op is not None and state_matches(obs, op.target, images):
            out["ok"] += 1
            out["pending_applied"] += 1
        elif any(state_matches(obs, h, images) for h in hist):
            bad = "lost_acked"
        else:
            bad = "wrong_state"
        if bad:
            out[bad] += 1
            if len(out["examples"]) < 10:
                out["examples"].append({"id": iid, "problem": bad, "expected": acked,
                                        "pending": None if op is None else {"kind": op.kind, "target": op.target,
                                                                            "seen_visible": op.seen_visible},
                                        "found": "absent" if obs is ABSENT else {"metadata": obs[1]}})
        # follow what the server holds
        now = next((h for h in ([op.target] if op is not None else []) + hist[::-1]
                    if state_matches(obs, h, images)), "unknown")
        if now == "unknown":
            model.quarantined.add(iid)
        else:
            model.acked[iid] = now
            if op is not None and now == op.target:
                hist.append(now)
    # untouched items (base images never written) must still be there as built
    untouched = [i for i in rng.sample(range(model.n_base), min(untouched_sample, model.n_base))
                 if i not in model.touched]
    out["untouched_checked"], out["untouched_wrong"] = len(untouched), 0
    for i in untouched:
        if not state_matches(read_item(c, i), ("train", i, "null"), images):
            out["untouched_wrong"] += 1
            out["wrong_state"] += 1
    # the count: untouched base items + the live touched ones
    d = c.json("GET", f"/v1/indexes/{INDEX_NAME}")
    live_touched = sum(model.acked[i] is not ABSENT for i in model.touched if i not in model.quarantined)
    base_touched = sum(1 for i in model.touched if i < model.n_base)
    expected = model.n_base - base_touched + live_touched
    out["count"], out["count_expected"] = d.get("count"), expected
    out["count_ok"] = d.get("count") == expected or bool(model.quarantined)
    c.close()
    return out


def run_round(port: int, model: Model, images: dict[str, np.ndarray], rnd: int, delay: float, seed: int,
              kill) -> dict:
    """Writers + prober until the kill ``delay`` seconds in; returns the round's operation counts."""
    stop = threading.Event()
    killed_at = [None]
    inflight: dict[int, Op] = {}
    lock = threading.Lock()
    stats = {"acked": 0, "acked_upserts": 0, "acked_deletes": 0, "unacked": 0, "unacked_before_kill": 0,
             "unexpected_status": 0, "probes": 0, "seen_visible": 0, "persisted_false": 0, "ack_latency": []}
    test = images["test"]

    def writer(w: int) -> None:
        rng = random.Random(seed * 1000 + rnd * 10 + w)
        c = Conn(port, ADMIN_KEY, timeout=60)
        usable = [i for i in model.pools[w] if i not in model.quarantined]
        n = 0
        while not stop.is_set() and usable:
            iid = rng.choice(usable)
            live = model.acked[iid] is not ABSENT
            if live and iid in model.upserted and rng.random() < 0.3:
                op = Op(iid, "delete", ABSENT, rnd, n)
                method, path, body = "DELETE", f"/v1/indexes/{INDEX_NAME}/items/{iid}", None
            else:
                row = rng.randrange(len(test))
                meta = {"round": rnd, "op": n}
                op = Op(iid, "upsert", ("test", row, json.dumps(meta, sort_keys=True)), rnd, n)
                method, path = "PUT", f"/v1/indexes/{INDEX_NAME}/items"
                body = json.dumps({"items": [{"id": iid, "vector": test[row].tolist(), "metadata": meta}]}).encode()
            n += 1
            model.touched.add(iid)
            with lock:
                inflight[iid] = op
            try:
                status, data = c.request(method, path, body)
            except (OSError, http.client.HTTPException) as e:
                status, data, op.error = None, b"", type(e).__name__
            op.status = status
            t = time.monotonic()
            with lock:
                inflight.pop(iid, None)
                if status == 200:
                    op.t_ack = t
                    stats["acked"] += 1
                    stats["acked_upserts" if op.kind == "upsert" else "acked_deletes"] += 1
                    stats["ack_latency"].append(t - op.t_start)
                    try:
                        if json.loads(data).get("persisted") is False:
                            stats["persisted_false"] += 1
                    except ValueError:
                        pass
                else:
                    stats["unacked"] += 1
                    if killed_at[0] is None:
                        stats["unacked_before_kill"] += 1
                    if status is not None and status < 500:
                        stats["unexpected_status"] += 1
            if status == 200:
                model.acked[iid] = op.target
                model.history[iid].append(op.target)
                if op.kind == "upsert":
                    model.upserted.add(iid)
            else:  # state of iid uncertain until the next verification: leave it alone this round
                model.pending[iid] = op
                usable.remove(iid)
                if killed_at[0] is not None or stop.is_set():
                    break
                time.sleep(0.05)
        c.close()

    def prober() -> None:
        rng = random.Random(seed * 7 + rnd)
        c = Conn(port, READ_KEY, timeout=10)
        while not stop.is_set():
            with lock:
                ops = list(inflight.values())
            if not ops:
                time.sleep(0.001)
                continue
            op = rng.choice(ops)
            t_send = time.monotonic()
            try:
                obs = read_item(c, op.id, with_vector=False)
            except (OSError, http.client.HTTPException, RuntimeError):
                if killed_at[0] is not None:
                    return
                time.sleep(0.01)
                continue
            with lock:
                stats["probes"] += 1
                if op.t_ack is not None and op.t_ack <= t_send:
                    continue  # answered before this read was sent
                if killed_at[0] is not None and killed_at[0] <= t_send:
                    continue
                if op.kind == "delete":
                    visible = obs is ABSENT
                else:
                    visible = obs is not ABSENT and json.dumps(obs[1], sort_keys=True) == op.target[2]
                if visible and not op.seen_visible:
                    op.seen_visible = True
                    stats["seen_visible"] += 1
        c.close()

    threads = [threading.Thread(target=writer, args=(w,), daemon=True) for w in range(WRITERS)]
    threads.append(threading.Thread(target=prober, daemon=True))
    for t in threads:
        t.start()
    time.sleep(delay)
    killed_at[0] = time.monotonic()
    kill()
    stop.set()
    for t in threads:
        t.join(120)
    lat = stats.pop("ack_latency")
    stats["ack_p50_ms"] = round(float(np.median(lat)) * 1000, 1) if lat else None
    stats["pending_after_kill"] = sum(1 for op in model.pending.values() if op.round == rnd)
    stats["pending_seen_visible"] = sum(1 for op in model.pending.values() if op.round == rnd and op.seen_visible)
    return stats


def hidden_entries(models: Path) -> list[dict]:
    """Hidden (``.``-prefixed) entries of the model dir and, one level down, of the folders in it."""
    out = []
    for parent in [models] + [p for p in models.iterdir() if p.is_dir() and not p.name.startswith(".")]:
        for e in parent.iterdir():
            if e.name.startswith("."):
                out.append({"path": os.path.relpath(e, models), "bytes": folder_bytes(e) if e.is_dir()
                            else e.stat().st_size})
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--n", type=int, default=10_000, help="training images indexed")
    p.add_argument("--ids-per-writer", type=int, default=100, help="ids each writer owns (half existing, half new)")
    p.add_argument("--min-delay", type=float, default=0.3)
    p.add_argument("--max-delay", type=float, default=3.0)
    p.add_argument("--untouched-sample", type=int, default=100, help="untouched items checked per verification")
    p.add_argument("--ready-timeout", type=float, default=120.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--port", type=int, default=0, help="port to serve on (0: a free one, the same every round)")
    p.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                   help="environment variable for the server (repeatable)")
    p.add_argument("--work-dir", type=Path, default=None, help="where the temporary model dir goes "
                                                                "(default: $TMPDIR)")
    p.add_argument("--keep", action="store_true", help="keep the temporary model dir (and the server log)")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    extra_env = parse_env(args.env)
    load_start = [round(x, 2) for x in os.getloadavg()]
    code = code_under_test()
    cache = cached_index(args.n)
    images = {"train": fmnist("train", args.n), "test": fmnist("test")}
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="annrec-storage-kills-", dir=args.work_dir))
    if args.port == 0:
        from storage_writes import free_port

        args.port = free_port()
    res: dict = {"benchmark": "storage_kills", "code": code, "load_average_start": load_start,
                 "settings": {"persist": "sync", "env": extra_env, "rounds": args.rounds, "writers": WRITERS,
                              "ids_per_writer": args.ids_per_writer, "kill_delay_s": [args.min_delay, args.max_delay],
                              "ready_timeout_s": args.ready_timeout, "seed": args.seed,
                              "signal": "SIGKILL to the server's process group"},
                 "index": {"backend": "hnswlib", "metric": "l2", "M": 16, "ef_construction": 100, "ef": 64,
                           "items": args.n, "dataset": "fashion-mnist-784-euclidean train; upserts: test images"},
                 "rounds": []}
    totals = {k: 0 for k in ("lost_acked", "visible_then_gone", "wrong_state", "failed_restarts", "count_mismatches",
                             "acked_ops", "unacked_ops", "unacked_before_kill", "unexpected_status", "seen_visible",
                             "pending_applied", "pending_not_applied", "persisted_false")}
    model = Model(args.n, args.ids_per_writer)
    srv = None
    try:
        models = fresh_copy(cache, work)
        res["index"]["folder_bytes_start"] = folder_bytes(models / INDEX_NAME)
        for rnd in range(args.rounds + 1):
            final = rnd == args.rounds
            rec: dict = {"round": rnd}
            srv = Server(models, args.port, extra_env, work / "server.log")
            ok, secs, why = srv.wait_ready(args.ready_timeout)
            rec["startup_seconds"] = round(secs, 2)
            if not ok:
                rec["failed_restart"] = why
                rec["server_log_tail"] = srv.log_tail(15).replace(str(work), "$WORK")
                totals["failed_restarts"] += 1
                srv.kill()
                srv = None
                rec["hidden_entries"] = hidden_entries(models)
                res["rounds"].append(rec)
                print(f"round {rnd}: FAILED RESTART ({why})\n{rec['server_log_tail']}", flush=True)
                break
            if rnd == 0:
                res["code"]["server_imports_same_package"] = srv.same_code()
            v = verify(srv.port, model, images, rng, args.untouched_sample)
            rec["verify"] = v
            for k in ("lost_acked", "visible_then_gone", "wrong_state", "pending_applied", "pending_not_applied"):
                totals[k] += v[k]
            totals["count_mismatches"] += not v["count_ok"]
            if final:
                srv.stop()
                srv = None
                res["rounds"].append(rec)
                print(f"final: verified {v['checked']} touched + {v['untouched_checked']} untouched items: "
                      f"lost_acked {v['lost_acked']}, visible_then_gone {v['visible_then_gone']}, wrong_state "
                      f"{v['wrong_state']}, count {v['count']} (expected {v['count_expected']})", flush=True)
                break
            delay = rng.uniform(args.min_delay, args.max_delay)
            rec["kill_after_s"] = round(delay, 3)
            s = run_round(srv.port, model, images, rnd, delay, args.seed, srv.kill)
            srv = None
            rec["ops"] = s
            rec["hidden_entries"] = hidden_entries(models)
            rec["model_dir_bytes"] = folder_bytes(models)
            rec["index_folder_entries"] = sorted(e.name for e in (models / INDEX_NAME).iterdir()) \
                if (models / INDEX_NAME).is_dir() else None
            for k, src in (("acked_ops", "acked"), ("unacked_ops", "unacked"), ("unacked_before_kill",
                                                                                  "unacked_before_kill"),
                           ("unexpected_status", "unexpected_status"), ("seen_visible", "pending_seen_visible"),
                           ("persisted_false", "persisted_false")):
                totals[k] += s[src]
            res["rounds"].append(rec)
            print(f"round {rnd}: ready {secs:.1f} s; verify ok {v['ok']}/{v['checked']} (lost {v['lost_acked']}, "
                  f"visible-gone {v['visible_then_gone']}, wrong {v['wrong_state']}); killed after {delay:.2f} s: "
                  f"{s['acked']} acked, {s['unacked']} unacked ({s['pending_seen_visible']} seen visible), "
                  f"ack p50 {s['ack_p50_ms']} ms; hidden entries {len(rec['hidden_entries'])}", flush=True)
        last_kill = next((r for r in reversed(res["rounds"]) if "hidden_entries" in r), None)
        res["after_last_kill"] = {
            "hidden_entries": last_kill["hidden_entries"] if last_kill else [],
            "hidden_bytes": sum(e["bytes"] for e in last_kill["hidden_entries"]) if last_kill else 0}
        res["end"] = {"model_dir_bytes": folder_bytes(models), "index_folder_bytes": folder_bytes(models / INDEX_NAME)
                      if (models / INDEX_NAME).exists() else None,
                      "hidden_entries": hidden_entries(models),
                      "model_dir_entries": sorted(e.name for e in models.iterdir()),
                      "index_folder_entries": sorted(e.name for e in (models / INDEX_NAME).iterdir())
                      if (models / INDEX_NAME).exists() else None}
    finally:
        if srv is not None:
            srv.kill()
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    res["totals"] = totals
    res["rounds_completed"] = sum(1 for r in res["rounds"] if "ops" in r)
    res["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    e = res.get("end", {})
    print(f"\n== storage kills: {res['rounds_completed']} rounds killed (SIGKILL), code {code['commit']}, env "
          f"{extra_env or '{}'}")
    for k in ("lost_acked", "visible_then_gone", "wrong_state", "failed_restarts", "count_mismatches"):
        print(f"  {k:<20} {totals[k]}")
    print(f"  acked ops {totals['acked_ops']}, unacked {totals['unacked_ops']} ({totals['unacked_before_kill']} "
          f"before a kill), unacked seen visible {totals['seen_visible']}; in-flight at a kill: applied "
          f"{totals['pending_applied']}, not applied {totals['pending_not_applied']}")
    if e:
        hid = e["hidden_entries"]
        print(f"  end: model dir {e['model_dir_bytes'] / 2**20:,.1f} MiB, index folder "
              f"{(e['index_folder_bytes'] or 0) / 2**20:,.1f} MiB; hidden entries {len(hid)} "
              f"({sum(x['bytes'] for x in hid) / 2**20:,.1f} MiB); after the last kill "
              f"{len(res['after_last_kill']['hidden_entries'])} "
              f"({res['after_last_kill']['hidden_bytes'] / 2**20:,.1f} MiB)")
    print(f"  load average {load_start} -> {res['load_average_end']}")
    if args.json:
        from annrec._io import write_json

        write_json(args.json, res)
        print(f"figures written to {args.json}")
    bad = totals["lost_acked"] + totals["visible_then_gone"] + totals["wrong_state"] + totals["failed_restarts"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
