"""The sequence recommender's trainer: each user's history (all-positions chunks or sliding windows) -> the
network -> Embeddings."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from annrec.errors import InputError
from annrec.train.base import RecommendFn, Trainer, check_interactions, renamed_params, resolve_device, torch_threads
from annrec.train.sequence.config import RENAMED, SequenceConfig
from annrec.train.sequence.data import (_Histories, _history_windows, _window_batch, build_chunks, build_windows,
                                        seen_pairs, time_bucket_edges)
from annrec.train.sequence.encoder import encoder_files
from annrec.train.sequence.model import _build_net, _torch, masked_loss

if TYPE_CHECKING:  # pragma: no cover
    from annrec.data import Interactions
    from annrec.embeddings import Embeddings

__all__ = ["SequenceTrainer", "TrainResult"]


@dataclass
class TrainResult:
    """What :meth:`SequenceTrainer.fit` measured: per-epoch history, best epoch, seconds."""

    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best_val_recall: float | None = None
    seconds: float = 0.0
    refit_seconds: float = 0.0


class SequenceTrainer(Trainer):
    """Trains the sequence recommender (GRU, LSTM or transformer encoder) on an :class:`~annrec.data.Interactions` log.

    Follows :class:`annrec.train.base.Trainer`: ``SequenceTrainer(**hyper_parameters).fit(train) -> self``,
    ``to_embeddings() -> Embeddings``; hyper-parameters are the fields of :class:`SequenceConfig` (pass a
    config or keyword arguments; :meth:`get_params` returns them all). After ``fit``, ``self.net`` is the
    trained network (eval mode), ``self.edges`` the recency bucket edges, ``self.result`` the training history
    and ``self.device`` the torch device it ran on.

    Old spellings of hyper-parameters (``cell``, ``layers``, ``heads``, ``units``, …; see
    :data:`~annrec.train.sequence.config.RENAMED`) are accepted with a ``DeprecationWarning``.

    Raises:
        InputError: a bad hyper-parameter (e.g. ``max_len`` <= 0, an unknown ``encoder``, ``n_heads`` not
            dividing ``factors``) or a log without usable sequences.
    """

    name = "sequence"

    def __init__(self, config: SequenceConfig | None = None, **params: Any) -> None:
        cfg = dataclasses.replace(config) if config is not None else SequenceConfig()
        old = {k: params.pop(k) for k in list(params) if k in RENAMED}
        params = renamed_params("SequenceTrainer", old, RENAMED, params)
        for k, v in params.items():
            if not hasattr(cfg, k):
                raise InputError(f"unknown sequence hyper-parameter {k!r}; known: "
                                 f"{', '.join(f.name for f in dataclasses.fields(SequenceConfig))}")
            setattr(cfg, k, v)
        self.config = cfg.validate()
        self.net = None
        self.edges: np.ndarray | None = None
        self.result = TrainResult()
        self.n_items = 0
        self.device = None
        self._train_data = None
        self._fitted = False

    def get_params(self) -> dict[str, Any]:
        """Every :class:`SequenceConfig` field (``SequenceTrainer(**get_params())`` is an equal trainer)."""
        return self.config.to_dict()

    # -------------------------------------------------------------------- public
    def fit(self, train: Interactions, validation: Interactions | None = None) -> SequenceTrainer:
        """Train on ``train``; returns ``self`` (:meth:`to_embeddings` gives the artifact).

        Early stopping uses ``validation`` when given (a per-user later part of the same users, same id
        space), else a per-user temporal split holding out ``val_fraction`` of ``train``; with ``refit``
        the network is then retrained on all of ``train`` for the best epoch count.

        Raises:
            InputError: not an Interactions, no user has two or more events (nothing to learn from), or a
                device torch does not have.
        """
        train = check_interactions(train, needs="time-ordered events")
        self.device = resolve_device(self.config.device)
        with torch_threads(self.config.num_threads):
            self._fit(train, validation)
        self._train_data = train
        self._fitted = True
        return self

    def _fit(self, train: Interactions, validation: Interactions | None) -> None:
        cfg = self.config
        self.n_items = train.n_items
        full = _Histories.from_interactions(train)
        if not (full.lengths >= 2).any():
            raise InputError("no user has two or more events: the sequence model needs histories to learn from")
        self.edges = (time_bucket_edges(full, cfg.n_buckets, cfg.bucket_scheme, cfg.time_feature) if cfg.recency
                      else None)
        t0 = time.perf_counter()
        if validation is None and cfg.val_fraction > 0:
            from annrec.data import leave_last_one, temporal_user_split

            if cfg.val_split == "last":
                inner, validation = leave_last_one(train)
            else:
                inner, validation = temporal_user_split(train, cfg.val_fraction)
        else:
            inner = train
        if validation is not None:
            best = self._train(inner, cfg.epochs, validation)
            self.result.best_epoch = best
            self.result.seconds = time.perf_counter() - t0
            if cfg.refit and inner is not train:
                t1 = time.perf_counter()
                self._train(train, max(best, 1), None)
                self.result.refit_seconds = time.perf_counter() - t1
        else:
            self._train(train, cfg.epochs, None)
            self.result.best_epoch = cfg.epochs
            self.result.seconds = time.perf_counter() - t0
        self.net.eval()

    def score_histories(self, inter: Interactions, users: np.ndarray | None = None, batch_size: int = 512
                        ) -> np.ndarray:
        """Query vectors ``[h, 1]`` float32 ``(n, factors + 1)`` of the users' last ``max_len`` events of ``inter``."""
        hist = _Histories.from_interactions(inter)
        if users is None:
            users = np.arange(inter.n_users)
        users = np.asarray(users, dtype=np.int64)
        out = np.zeros((len(users), self.config.factors + 1), dtype=np.float32)
        out[:, -1] = 1.0
        has = hist.lengths[users] > 0
        idx = np.flatnonzero(has)
        if len(idx):
            x, r = _history_windows(hist, users[idx], self.config.max_len, self.edges, self.config.time_feature)
            out[idx, :-1] = self._encode_arrays(x, r, batch_size)
        return out

    def item_vectors(self) -> np.ndarray:
        """Item vectors ``[w_i, b_i]`` float32 ``(n_items, factors + 1)`` from the output layer."""
        w = self.net.out.weight.detach().cpu().numpy()
        b = self.net.out.bias.detach().cpu().numpy()
        return np.ascontiguousarray(np.hstack([w, b[:, None]]), dtype=np.float32)

    def recommend_fn(self) -> RecommendFn:
        """Exact MIPS scorer of the training users' last-window states against the item vectors (the logits
        ``h·w_i + b_i``), over the training Interactions' rows. Raises NotFittedError before :meth:`fit`."""
        self._check_fitted()
        return self._scorer(self._train_data)

    def _scorer(self, inter: Interactions) -> RecommendFn:
        from annrec.metrics import top_k_excluding

        q = self.score_histories(inter)
        items = self.item_vectors()

        def recommend(users, kk, seen):
            return top_k_excluding(q[users] @ items.T, kk, seen)

        return recommend

    def to_embeddings(self, train: Interactions | None = None) -> Embeddings:
        """The artifact: item vectors float32 ``(n_items, factors + 1)``, user query vectors (last-window
        states), seen matrix, encoder files (``extra/sequence/*``); ``manifest["params"]`` is :meth:`get_params`.

        Args:
            train: deprecated (fit keeps the data it saw); when given it must be that data.

        Raises:
            NotFittedError: before :meth:`fit`. InputError: ``train`` is not the data fitted on.
        """
        from annrec.embeddings import Embeddings

        self._check_fitted()
        train = self._kept_train(train)
        cfg = self.config
        titles = train.item_titles()
        items = {k: {"title": v} for k, v in titles.items()} if titles else None
        if items is not None:
            keep = set(train.item_ids.tolist())
            items = {k: v for k, v in items.items() if k in keep}
        queries = self.score_histories(train)
        manifest = {
            "trainer": "sequence",
            "params": cfg.to_dict(),
            "dataset": train.name,
            "data_hash": train.fingerprint(),
            "n_events": train.n_events,
            "training": {"best_epoch": self.result.best_epoch, "best_val_recall@10": self.result.best_val_recall,
                         "seconds": round(self.result.seconds, 2),
                         "refit_seconds": round(self.result.refit_seconds, 2),
                         "history": self.result.history, "device": str(self.device)},
            "encoder": {k: cfg.model_dict()[k] for k in ("encoder", "n_layers", "n_heads", "factors", "max_len",
                                                           "training")},
            "serving": f"maximum inner product search: item [w_i, b_i], query [h, 1] (final hidden state of the "
                       f"{cfg.encoder} encoder)",
        }
        extra = encoder_files(self.net, cfg, train.item_ids, self.edges)
        return Embeddings(vectors=self.item_vectors(), ids=train.item_ids, metric="ip", queries=queries,
                          query_ids=train.user_ids, items=items, manifest=manifest, extra=extra,
                          seen=train.to_csr(binary=True))

    # -------------------------------------------------------------------- internals
    def _encode_arrays(self, x: np.ndarray, r: np.ndarray, batch_size: int = 512) -> np.ndarray:
        torch = _torch()
        self.net.eval()
        outs = []
        with torch.no_grad():
            for s in range(0, len(x), batch_size):
                xb = torch.as_tensor(x[s:s + batch_size], device=self.device)
                rb = torch.as_tensor(r[s:s + batch_size], device=self.device)
                outs.append(self.net.final_state(xb, rb).float().cpu().numpy())
        return np.concatenate(outs) if outs else np.zeros((0, self.config.factors), np.float32)

    def _val_recall(self, inner: Interactions, validation: Interactions, k: int = 10) -> float:
        from annrec.metrics import evaluate_topn

        return float(evaluate_topn(self._scorer(inner), inner, validation, k)[f"recall@{k}"])

    def _epoch(self, hist: _Histories, users: np.ndarray, ends: np.ndarray, perm: np.ndarray, opt,
               neg_kw: dict[str, Any], desc: str) -> tuple[float, int]:
        """One pass over the sequences (windows or chunks) ``perm``; returns (sum of batch losses x batch sizes,
        sequences)."""
        torch = _torch()
        from tqdm.auto import tqdm

        cfg = self.config
        train_last = cfg.train_last if cfg.training == "windows" else 0   # all positions: loss everywhere
        total, count = 0.0, 0
        bar = tqdm(range(0, len(perm), cfg.batch_size), desc=desc, disable=not cfg.show_progress, leave=False,
                   unit="batch")
        loss_kw = {k: v for k, v in neg_kw.items() if k != "item_q"}
        for s in bar:
            b = perm[s:s + cfg.batch_size]
            x, r, y = _window_batch(hist, users[b], ends[b], cfg.max_len, cfg.horizon, self.edges,
                                    train_last, cfg.horizon_fraction, cfg.max_horizon, cfg.time_feature)
            xt = torch.as_tensor(x, device=self.device)
            rt = torch.as_tensor(r, device=self.device)
            yt = torch.as_tensor(y, device=self.device)
            if cfg.loss == "sampled":
                neg = torch.multinomial(neg_kw["item_q"], cfg.negatives, replacement=True)
                loss_kw["neg_items"] = neg
                loss_kw["neg_logq"] = neg_kw["item_logq"][neg]
            if cfg.mask_seen and cfg.loss == "full":
                sr, si = seen_pairs(hist, users[b], ends[b], x, y, self.n_items)
                loss_kw["seen"] = (torch.as_tensor(sr, device=self.device), torch.as_tensor(si, device=self.device))
            loss = masked_loss(self.net, xt, rt, yt, cfg.loss, **loss_kw)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), 5.0)
            opt.step()
            total += float(loss.detach()) * len(b)
            count += len(b)
            if cfg.show_progress and (s // cfg.batch_size) % 20 == 0:
                bar.set_postfix(loss=f"{total / count:.3f}")
        bar.close()
        return total, count

    def _train(self, inter: Interactions, epochs: int, validation: Interactions | None) -> int:
        """Train a fresh network for up to ``epochs`` epochs; with ``validation``, keep the best state and stop
        after ``patience`` epochs without improvement. Returns the best (or last) epoch number."""
        torch = _torch()
        cfg = self.config
        torch.manual_seed(cfg.seed)
        rng = np.random.default_rng(cfg.seed)
        n_bucket_ids = (len(self.edges) + 2) if self.edges is not None else 2
        self.net = _build_net(self.n_items, n_bucket_ids, cfg).to(self.device)
        opt = torch.optim.AdamW(self.net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=cfg.lr_decay)
        hist = _Histories.from_interactions(inter)
        if cfg.training == "windows":
            users, ends = build_windows(hist, cfg.max_len, cfg.stride)
        else:
            users, ends = build_chunks(hist, cfg.max_len, cfg.max_chunks_per_user)
        if len(users) == 0:
            raise InputError("no training sequences: every user has fewer than two events")
        neg_kw: dict[str, Any] = {}
        if cfg.loss == "sampled":
            counts = np.bincount(inter.item_idx, minlength=self.n_items).astype(np.float64) + 1.0
            q = counts ** 0.75
            q /= q.sum()
            qt = torch.as_tensor(q, dtype=torch.float32, device=self.device)
            neg_kw["item_q"] = qt
            neg_kw["item_logq"] = torch.log(qt * cfg.negatives)
        elif cfg.loss == "in_batch":
            counts = np.bincount(inter.item_idx, minlength=self.n_items).astype(np.float64) + 1.0
            neg_kw["item_logq"] = torch.as_tensor(np.log(counts / counts.sum()), dtype=torch.float32,
                                                  device=self.device)   # log f: the target distribution
        best, best_state, bad = -1.0, None, 0
        best_epoch = epochs
        label = "train" if validation is not None or not self.result.history else "refit"
        for epoch in range(1, epochs + 1):
            self.net.train()
            perm = rng.permutation(len(users))
            if cfg.max_windows_per_user and cfg.training == "windows":
                # at most max_windows_per_user random windows of each user this epoch (users weigh more evenly)
                order = np.lexsort((rng.random(len(users)), users))
                first = np.searchsorted(users[order], users[order], side="left")
                keep = order[(np.arange(len(order)) - first) < cfg.max_windows_per_user]
                perm = keep[rng.permutation(len(keep))]
            t0 = time.perf_counter()
            total, count = self._epoch(hist, users, ends, perm, opt, neg_kw, f"{label} epoch {epoch}/{epochs}")
            sched.step()
            row = {"epoch": epoch, "phase": "fit" if validation is not None else "refit",
                   "loss": total / max(count, 1), "seconds": round(time.perf_counter() - t0, 2)}
            if validation is not None:
                rec = self._val_recall(inter, validation)
                row["val_recall@10"] = rec
                if rec > best + 1e-6:
                    best, bad, best_epoch = rec, 0, epoch
                    best_state = {k: v.detach().clone() for k, v in self.net.state_dict().items()}
                else:
                    bad += 1
            self.result.history.append(row)
            if cfg.show_progress:
                msg = f"{label} epoch {epoch}: loss {row['loss']:.4f} ({row['seconds']:.1f}s)"
                if "val_recall@10" in row:
                    msg += f", validation recall@10 {row['val_recall@10']:.4f}"
                print(msg, flush=True)
            if validation is not None and bad > 0 and bad >= cfg.patience:
                break
        if validation is not None and best_state is not None:
            self.net.load_state_dict(best_state)
            self.result.best_val_recall = best
        self.net.eval()
        return best_epoch


