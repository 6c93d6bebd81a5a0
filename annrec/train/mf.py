"""Biased matrix factorisation for explicit ratings (torch), and a regularised bias-only baseline.

Model (Koren, Bell & Volinsky, "Matrix Factorization Techniques for Recommender Systems", IEEE
Computer 2009; the ``EmbeddingDotBias`` model of fastai's collaborative filtering)::

    x_ui   = mu + b_u + b_i + p_u . q_i
    r_ui  ~= lo + (hi - lo) * sigmoid(x_ui)      with y_range = (lo, hi)   (sigmoid range scaling)
    r_ui  ~= x_ui                                with y_range = None

Training minimises, over mini-batches of ratings, the squared error plus the per-rating L2 penalty of
Funk/Koren SGD matrix factorisation, ``reg * (|p_u|^2 + |q_i|^2) + bias_reg * (b_u^2 + b_i^2)``
(frequent users and items are regularised more, as in the classic SGD formulation), with AdamW
(optionally with decoupled weight decay, as fastai does) or SGD with momentum, a one-cycle learning
rate schedule (Smith 2018, ``torch.optim.lr_scheduler.OneCycleLR``), and early stopping on a
validation split carved from the training ratings.

Export (:meth:`MatrixFactorization.to_embeddings`): item vectors ``[q_i, b_i]`` and user (query)
vectors ``[p_u, 1]``; their inner product is ``x_ui - mu - b_u``, and ``mu + b_u`` is constant for a
user, so maximum inner product search over the items ranks exactly as the model's predicted ratings
(the sigmoid is monotone, so the range scaling keeps the ranking exact too).

Defaults were chosen on ml-latest-small by ``bench/mf_tune.py``, on a validation split carved from the
training part (never on the test ratings): 64 factors, ``reg=0.12``, batches of 4096, at most 20 epochs,
peak learning rate 0.02, ``y_range`` = ``(min rating - 0.5, max rating + 0.5)`` = ``(0, 5.5)`` on MovieLens
(fastai's value). RMSE 0.8421 on the random 90/10 split, seed 0 (0.8403-0.8421 over model seeds 0-2;
``bench/mf_quality.py``), against 0.8657 for :class:`annrec.eval.baselines.BiasBaseline`.
"""

from __future__ import annotations

import io
import math
import time
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

from annrec.errors import InputError
from annrec.train.base import (RecommendFn, Trainer, check_device_name, check_idx, check_interactions,
                               check_num_threads, epoch_bar, float_param, int_param, item_metadata, renamed_params,
                               resolve_device, torch_threads)

if TYPE_CHECKING:
    from collections.abc import Mapping

    from annrec.data import Interactions
    from annrec.embeddings import Embeddings

__all__ = ["MatrixFactorization"]

_OPTIMIZERS = ("adamw", "sgd")
_SCHEDULES = ("onecycle", "constant")


def _check_ratings(data: Any, what: str = "train") -> Interactions:
    return check_interactions(data, what, needs="at least one rating")


def _check_y_range(y_range: Any) -> tuple[float, float] | str | None:
    if y_range is None or y_range == "auto":
        return y_range
    try:
        lo, hi = (float(v) for v in y_range)
    except (TypeError, ValueError):
        raise InputError(f"y_range must be None, 'auto' or a pair (low, high) such as (0, 5.5); "
                         f"got {y_range!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise InputError(f"y_range must be a pair low < high of finite numbers; got {y_range!r}")
    return (lo, hi)


class MatrixFactorization(Trainer):
    """Biased matrix factorisation ``r ~ mu + b_u + b_i + p_u . q_i`` (optionally sigmoid-scaled), torch.

    Follows :class:`annrec.train.base.Trainer`: hyper-parameters go in the constructor; :meth:`fit` learns
    ``user_factors_`` ``(n_users, factors)``, ``item_factors_`` ``(n_items, factors)``, ``user_bias_``,
    ``item_bias_`` (float32) and ``global_bias_`` (float), indexed by the contiguous indices of the
    training :class:`~annrec.data.Interactions`. Users and items without training ratings keep zero
    factors and zero bias (the prior mean).

    Args:
        factors: number of latent factors (``dim`` before; still accepted, deprecated).
        epochs: maximum number of passes over the training ratings.
        lr: peak learning rate (of the one-cycle schedule; the constant rate with ``schedule="constant"``).
        reg: per-rating L2 penalty on the factors of the batch, ``reg * (|p_u|^2 + |q_i|^2)``.
        bias_reg: per-rating L2 penalty on the biases, ``bias_reg * (b_u^2 + b_i^2)``.
        weight_decay: decoupled weight decay (AdamW; SGD's ``weight_decay``) on all parameters, applied
            every step whether a row was in the batch or not (fastai's ``wd``). Default 0: ``reg`` does
            the regularising.
        optimizer: ``"adamw"`` or ``"sgd"`` (SGD with Nesterov-free momentum 0.9).
        schedule: ``"onecycle"`` (warm-up then cosine annealing, Smith 2018) or ``"constant"``.
        batch_size: ratings per step.
        y_range: ``(lo, hi)`` for sigmoid range scaling, ``None`` for a plain linear output, or
            ``"auto"``: ``(min rating - 0.5, max rating + 0.5)`` of the training data (``(0, 5.5)`` on
            MovieLens, fastai's value), ``None`` when every rating is the same.
        val_fraction: share of the training ratings held out (seeded) for early stopping when
            :meth:`fit` gets no ``validation``; 0 disables early stopping (all ``epochs`` run).
        patience: stop after this many epochs without a better validation RMSE; the best epoch's
            parameters are kept.
        refit: when the validation split was carved out of ``train``, train again from scratch on ALL
            of ``train`` for the best epoch count found by early stopping (about twice the time; the
            5% held out cost 0.006 RMSE on ml-latest-small). Without refit the early-stopped model is kept.
        init_std: standard deviation of the normal initialisation of the factors (biases start at 0,
            ``mu`` at the training mean).
        clip: clip :meth:`predict` to the training rating range (monotone, so rankings are unchanged).
        seed: seeds the initialisation, the validation carve-out and the batch order (same seed, same
            data, same device: same model).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``...; ``None``: CUDA when available, else CPU.
        num_threads: torch CPU threads during :meth:`fit` (restored afterwards); ``None``: the machine's
            cores (``os.cpu_count()``). The steps of this small model are short: on a busy machine 1 thread
            can be faster (a second thread measured 1.7x slower per step on a shared 2-core machine,
            ``OMP_WAIT_POLICY`` spinning). ``threads`` before (deprecated).
        show_progress: show a tqdm progress bar (one tick per epoch, loss and validation RMSE);
            ``progress`` before (deprecated).

    Raises:
        InputError: a hyper-parameter out of range (on construction).
    """

    name = "mf"

    def __init__(self, factors: int = 64, epochs: int = 20, lr: float = 0.02, reg: float = 0.12,
                 bias_reg: float = 0.01, weight_decay: float = 0.0, optimizer: str = "adamw",
                 schedule: str = "onecycle", batch_size: int = 4096,
                 y_range: tuple[float, float] | str | None = "auto", val_fraction: float = 0.05,
                 patience: int = 3, refit: bool = True, init_std: float = 0.01, clip: bool = True, seed: int = 0,
                 device: str | None = None, num_threads: int | None = None, show_progress: bool = True,
                 **deprecated: Any) -> None:
        kw = renamed_params("MatrixFactorization", deprecated,
                            {"dim": "factors", "threads": "num_threads", "progress": "show_progress"},
                            dict(factors=factors, num_threads=num_threads, show_progress=show_progress))
        self.factors = int_param("factors", kw["factors"])
        self.epochs = int_param("epochs", epochs)
        self.lr = float_param("lr", lr, positive=True)
        self.reg = float_param("reg", reg)
        self.bias_reg = float_param("bias_reg", bias_reg)
        self.weight_decay = float_param("weight_decay", weight_decay)
        if optimizer not in _OPTIMIZERS:
            raise InputError(f"unknown optimizer {optimizer!r}: use {' or '.join(_OPTIMIZERS)}")
        self.optimizer = optimizer
        if schedule not in _SCHEDULES:
            raise InputError(f"unknown schedule {schedule!r}: use {' or '.join(_SCHEDULES)}")
        self.schedule = schedule
        self.batch_size = int_param("batch_size", batch_size)
        self.y_range = _check_y_range(y_range)
        vf = float_param("val_fraction", val_fraction)
        if vf >= 0.5:
            raise InputError(f"val_fraction must be in [0, 0.5); got {val_fraction!r}")
        self.val_fraction = vf
        self.patience = int_param("patience", patience)
        self.refit = bool(refit)
        self.init_std = float_param("init_std", init_std, positive=True)
        self.clip = bool(clip)
        self.seed = int(seed)
        self.device = check_device_name(device)
        self.num_threads = check_num_threads(kw["num_threads"])
        self.show_progress = bool(kw["show_progress"])
        self._fitted = False

    # ------------------------------------------------------------------ training
    def fit(self, train: Interactions, validation: Interactions | None = None) -> MatrixFactorization:
        """Learn the factors and biases from the explicit ratings of ``train``.

        Args:
            train: ratings (``rating`` float32) with contiguous user/item indices.
            validation: ratings in the same id space used for early stopping; ``None`` carves
                ``val_fraction`` of ``train`` out (seeded) and trains on the rest.

        Returns:
            ``self``, with ``history_`` (per epoch of the early-stopping run: ``epoch``, ``loss`` = mean
            training squared error of the batches, ``val_rmse``, ``lr``, ``seconds``), ``best_epoch_``,
            ``epochs_run_``, ``val_rmse_`` (best validation RMSE), ``refitted_`` (and
            ``refit_history_``), ``fit_seconds_`` and the learned parameters.

        Raises:
            InputError: not an Interactions, no ratings, or a validation set in another id space.
        """
        train = _check_ratings(train)
        if validation is not None:
            validation = _check_ratings(validation, "validation")
            if validation.n_users != train.n_users or validation.n_items != train.n_items:
                raise InputError("validation must share train's id space (same users and items): split one "
                                 "Interactions with annrec.data.random_split instead of loading two")
        t_start = time.perf_counter()
        with torch_threads(self.num_threads):
            self._fit(train, validation)
        self.fit_seconds_ = time.perf_counter() - t_start
        self._train_data = train
        self._fitted = True
        return self

    def _fit(self, train: Interactions, validation: Interactions | None) -> None:
        dev = resolve_device(self.device)
        self.device_ = str(dev)
        rng = np.random.default_rng(self.seed)
        u_all, i_all, r_all = train.user_idx, train.item_idx, train.rating
        carved = validation is None and self.val_fraction > 0 and train.n_events >= 20
        if carved:
            n_val = max(1, int(round(train.n_events * self.val_fraction)))
            perm = rng.permutation(train.n_events)
            is_val = np.zeros(train.n_events, dtype=bool)
            is_val[perm[:n_val]] = True
            val = (u_all[is_val], i_all[is_val], r_all[is_val])
            fit_part = (u_all[~is_val], i_all[~is_val], r_all[~is_val])
        elif validation is not None:
            val = (validation.user_idx, validation.item_idx, validation.rating)
            fit_part = (u_all, i_all, r_all)
        else:
            val = None
            fit_part = (u_all, i_all, r_all)
        self.n_users_, self.n_items_ = train.n_users, train.n_items
        self.rating_range_ = (float(r_all.min()), float(r_all.max()))
        if self.y_range == "auto":
            lo, hi = self.rating_range_
            self.y_range_ = None if lo == hi else (lo - 0.5, hi + 0.5)
        else:
            self.y_range_ = self.y_range
        self.val_events_ = 0 if val is None else int(len(val[0]))

        result = self._train(fit_part, val, self.epochs, dev, "mf")
        self.history_ = result["history"]
        self.epochs_run_ = len(self.history_)
        self.best_epoch_ = result["best_epoch"]
        self.val_rmse_ = result["best_val"]
        self.refitted_ = False
        final_part = fit_part
        if carved and self.refit:
            # The early-stopping run chose the number of epochs; train again on every rating for that many.
            final_part = (u_all, i_all, r_all)
            result = self._train(final_part, None, self.best_epoch_, dev, "mf refit")
            self.refit_history_ = result["history"]
            self.refitted_ = True
        self.train_events_ = int(len(final_part[0]))
        # Users / items with ratings in the part trained on keep their parameters; the others get zeros.
        self._user_mask = np.bincount(final_part[0], minlength=self.n_users_) > 0
        self._item_mask = np.bincount(final_part[1], minlength=self.n_items_) > 0
        P, Q, bu, bi, mu = result["params"]
        P[~self._user_mask] = 0.0
        bu[~self._user_mask] = 0.0
        Q[~self._item_mask] = 0.0
        bi[~self._item_mask] = 0.0
        self.user_factors_, self.item_factors_ = P, Q
        self.user_bias_, self.item_bias_ = bu, bi
        self.global_bias_ = mu

    def _init_params(self, tr: np.ndarray, dev) -> dict[str, Any]:
        """Fresh parameters: factors ~ N(0, init_std) (seeded), biases 0, ``mu`` at logit 0 / the mean."""
        import torch

        g = torch.Generator().manual_seed(self.seed)
        # With range scaling mu starts at logit 0 (the middle of y_range, as fastai's EmbeddingDotBias
        # does); starting at the logit of the mean measured 0.002-0.003 worse RMSE on ml-latest-small.
        mu0 = 0.0 if self.y_range_ is not None else float(np.mean(tr, dtype=np.float64))
        P = torch.empty(self.n_users_, self.factors).normal_(0.0, self.init_std, generator=g)
        Q = torch.empty(self.n_items_, self.factors).normal_(0.0, self.init_std, generator=g)
        params = {
            "P": P.to(dev).requires_grad_(),
            "Q": Q.to(dev).requires_grad_(),
            "bu": torch.zeros(self.n_users_, device=dev, requires_grad=True),
            "bi": torch.zeros(self.n_items_, device=dev, requires_grad=True),
            "mu": torch.tensor(mu0, device=dev, requires_grad=True),
        }
        return {"params": params, "generator": g}

    def _optimizer(self, params: dict[str, Any], total_steps: int):
        import torch

        if self.optimizer == "adamw":
            opt = torch.optim.AdamW(list(params.values()), lr=self.lr, weight_decay=self.weight_decay)
        else:
            opt = torch.optim.SGD(list(params.values()), lr=self.lr, momentum=0.9, weight_decay=self.weight_decay)
        sched = None
        if self.schedule == "onecycle":
            sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=self.lr, total_steps=total_steps)
        return opt, sched

    def _forward(self, params: dict[str, Any], u, i):
        import torch

        x = (params["P"][u] * params["Q"][i]).sum(1) + params["bu"][u] + params["bi"][i] + params["mu"]
        if self.y_range_ is not None:
            lo, hi = self.y_range_
            x = torch.sigmoid(x) * (hi - lo) + lo
        return x

    def _val_rmse(self, params: dict[str, Any], val) -> float:
        import torch

        VU, VI, VR = val
        with torch.no_grad():
            pred = [self._forward(params, VU[s:s + 65536], VI[s:s + 65536]).cpu() for s in range(0, len(VU), 65536)]
            p = torch.cat(pred).double()
            if self.clip:
                p = p.clamp(*self.rating_range_)
            return float(torch.sqrt(((p - VR) ** 2).mean()))

    def _epoch(self, params, data, opt, sched, g, dev) -> float:
        """One pass over ``data`` = (U, I, R) tensors in a seeded random order; mean squared error."""
        import torch

        U, I_, R = data
        n = len(R)
        perm = torch.randperm(n, generator=g).to(dev)
        sq_sum = torch.zeros((), dtype=torch.float64, device=dev)
        for s in range(0, n, self.batch_size):
            b = perm[s:s + self.batch_size]
            u, i, r = U[b], I_[b], R[b]
            err = self._forward(params, u, i) - r
            mse = (err * err).mean()
            loss = mse
            if self.reg:
                loss = loss + self.reg * ((params["P"][u] ** 2).sum(1) + (params["Q"][i] ** 2).sum(1)).mean()
            if self.bias_reg:
                loss = loss + self.bias_reg * (params["bu"][u] ** 2 + params["bi"][i] ** 2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            sq_sum += mse.detach().double() * len(b)
        return float(sq_sum) / n

    def _train(self, part: tuple, val: tuple | None, epochs: int, dev, desc: str) -> dict[str, Any]:
        """One training run on ``part`` = (user_idx, item_idx, rating), early-stopped on ``val`` when given."""
        import torch

        tu, ti, tr = part
        init = self._init_params(tr, dev)
        params, g = init["params"], init["generator"]
        data = (torch.from_numpy(tu.astype(np.int64)).to(dev), torch.from_numpy(ti.astype(np.int64)).to(dev),
                torch.from_numpy(tr.astype(np.float32)).to(dev))
        if val is not None:
            val = (torch.from_numpy(val[0].astype(np.int64)).to(dev), torch.from_numpy(val[1].astype(np.int64)).to(dev),
                   torch.from_numpy(val[2].astype(np.float64)))
        opt, sched = self._optimizer(params, epochs * math.ceil(len(tr) / self.batch_size))
        history: list[dict[str, Any]] = []
        best, best_epoch, best_state, bad = math.inf, 0, None, 0
        bar = epoch_bar(epochs, self.show_progress, desc)
        try:
            for epoch in range(1, epochs + 1):
                t0 = time.perf_counter()
                train_mse = self._epoch(params, data, opt, sched, g, dev)
                if not math.isfinite(train_mse):
                    raise InputError(f"training diverged at epoch {epoch} (loss {train_mse}): lower lr "
                                     f"(now {self.lr}) or use optimizer='adamw'")
                rec: dict[str, Any] = {"epoch": epoch, "loss": round(train_mse, 6),
                                       "lr": float(opt.param_groups[0]["lr"])}
                if val is not None:
                    v = self._val_rmse(params, val)
                    rec["val_rmse"] = round(v, 6)
                    if v < best - 1e-6:
                        best, best_epoch, bad = v, epoch, 0
                        best_state = {k: t.detach().clone() for k, t in params.items()}
                    else:
                        bad += 1
                rec["seconds"] = round(time.perf_counter() - t0, 3)
                history.append(rec)
                if bar is not None:
                    bar.set_postfix({k: rec[k] for k in ("loss", "val_rmse") if k in rec})
                    bar.update(1)
                if val is not None and bad >= self.patience:
                    break
        finally:
            if bar is not None:
                bar.close()
        if best_state is not None:
            for k, t in params.items():
                t.data.copy_(best_state[k])
        out = [params[k].detach().cpu().numpy().astype(np.float32) for k in ("P", "Q", "bu", "bi")]
        return {"params": (*out, float(params["mu"].detach().cpu())), "history": history,
                "best_epoch": best_epoch if val is not None else len(history),
                "best_val": best if val is not None else None}

    # ------------------------------------------------------------------ inference
    def logits(self, user_idx, item_idx) -> np.ndarray:
        """``mu + b_u + b_i + p_u . q_i`` (before range scaling) as float32 for index pairs."""
        self._check_fitted()
        u = check_idx(user_idx, self.n_users_, "user")
        i = check_idx(item_idx, self.n_items_, "item")
        if u.shape != i.shape:
            raise InputError(f"user_idx and item_idx must have the same shape; got {u.shape} and {i.shape}")
        x = (np.einsum("nd,nd->n", self.user_factors_[u], self.item_factors_[i], dtype=np.float64)
             + self.user_bias_[u] + self.item_bias_[i] + self.global_bias_)
        return x.astype(np.float32)

    def predict(self, user_idx, item_idx) -> np.ndarray:
        """Predicted ratings for pairs of contiguous indices.

        Args:
            user_idx, item_idx: int arrays of equal shape (indices of the training Interactions).

        Returns:
            float32 array of that shape: ``lo + (hi - lo) * sigmoid(x)`` (or ``x`` without range scaling),
            clipped to the training rating range when ``clip``.

        Raises:
            InputError: not fitted, shapes differ, or an index out of range.
        """
        x = self.logits(user_idx, item_idx).astype(np.float64)
        if self.y_range_ is not None:
            lo, hi = self.y_range_
            x = lo + (hi - lo) / (1.0 + np.exp(-x))
        if self.clip:
            x = np.clip(x, *self.rating_range_)
        return x.astype(np.float32)

    def query_vectors(self) -> np.ndarray:
        """User (query) vectors ``[p_u, 1]``, float32 ``(n_users, dim + 1)``, indexed by user index."""
        self._check_fitted()
        return np.hstack([self.user_factors_, np.ones((self.n_users_, 1), np.float32)])

    def item_vectors(self) -> np.ndarray:
        """Item vectors ``[q_i, b_i]``, float32 ``(n_items, dim + 1)``, indexed by item index."""
        self._check_fitted()
        return np.hstack([self.item_factors_, self.item_bias_[:, None]])

    def recommend_fn(self) -> RecommendFn:
        """Exact top-N scorer for :func:`annrec.metrics.evaluate_topn` (maximum inner product search).

        Returns:
            ``fn(user_rows (b,), k, seen) -> (b, k)`` int64 item rows of the training Interactions. Items
            without training ratings are never recommended (they are not in the exported artifact).

        Raises:
            NotFittedError: before :meth:`fit`.
        """
        from annrec.metrics import top_k_excluding

        users_v, items_v = self.query_vectors(), self.item_vectors()
        cold = np.flatnonzero(~self._item_mask)

        def recommend(users: np.ndarray, k: int, seen: list[np.ndarray]) -> np.ndarray:
            scores = users_v[users] @ items_v.T
            if cold.size:
                scores[:, cold] = -np.inf
            return top_k_excluding(scores, k, seen)

        return recommend

    def recommender(self) -> RecommendFn:
        """Deprecated spelling of :meth:`recommend_fn` (removed in the next release)."""
        warnings.warn("MatrixFactorization.recommender() is deprecated: use recommend_fn()", DeprecationWarning,
                      stacklevel=2)
        return self.recommend_fn()

    # ------------------------------------------------------------------ export
    def to_embeddings(self, train: Interactions | None = None, *, seen: Interactions | None = None,
                      figures: Mapping[str, Any] | None = None) -> Embeddings:
        """The Embeddings artifact for maximum inner product search (metric ``ip``).

        Args:
            train: deprecated (the data :meth:`fit` saw is kept); when given it must be that data.
            seen: interactions in the same id space whose (user, item) pairs recommendations exclude
                (default: the data fitted on). Pass the whole data set when the model was fitted on a split,
                so that a user is never recommended a movie they rated in the held-out part either.
            figures: quality figures for ``manifest["figures"]`` (RMSE, top-N...).

        Returns:
            :class:`~annrec.embeddings.Embeddings` with ``vectors`` = ``[q_i, b_i]`` float32
            ``(n_items_with_ratings, factors + 1)``, ``ids`` their external ids, ``queries`` = ``[p_u, 1]``
            ``(n_users_with_ratings, factors + 1)``, ``query_ids``, ``seen`` (binary CSR), ``items`` =
            ``{id: {"title", "genres"}}`` when known, ``extra["user_bias.npy"]`` (float32 b_u per query
            row: with ``manifest["global_bias"]`` and ``manifest["y_range"]`` it turns a score back into a
            predicted rating, ``lo + (hi - lo) * sigmoid(score + mu + b_u)``), and a manifest (trainer
            ``"mf"``, params = :meth:`get_params`, dataset, data hash, counts, training history, figures).

        Raises:
            NotFittedError: not fitted. InputError: ``train`` is not the data fitted on, ``seen`` in another
            id space.
        """
        from annrec.embeddings import Embeddings

        self._check_fitted()
        train = self._kept_train(train)
        if seen is None:
            seen = train
        elif seen.n_users != train.n_users or seen.n_items != train.n_items:
            raise InputError("seen must share train's id space (same users and items): pass the data set the "
                             "training split was cut from")
        users = np.flatnonzero(self._user_mask)
        items = np.flatnonzero(self._item_mask)
        seen_csr = seen.to_csr(binary=True)[users][:, items]
        buf = io.BytesIO()
        np.save(buf, self.user_bias_[users])
        counts = {"users": int(users.size), "items": int(items.size),
                  "users_without_ratings": int(self.n_users_ - users.size),
                  "items_without_ratings": int(self.n_items_ - items.size),
                  "train_events": self.train_events_, "validation_events": self.val_events_,
                  "seen_events": int(seen_csr.nnz)}
        manifest = {
            "trainer": "mf",
            "params": self.get_params(),
            "model": "rating = lo + (hi - lo) * sigmoid(mu + b_u + b_i + p_u . q_i) (y_range = (lo, hi); "
                     "without y_range: mu + b_u + b_i + p_u . q_i), clipped to the rating range",
            "dataset": train.name,
            "data_hash": train.fingerprint(),
            "fingerprint": train.fingerprint(),
            "n_events": train.n_events,
            "counts": counts,
            "global_bias": self.global_bias_,
            "y_range": list(self.y_range_) if self.y_range_ is not None else None,
            "rating_range": list(self.rating_range_),
            "training": {"device": self.device_, "epochs_run": self.epochs_run_, "best_epoch": self.best_epoch_,
                         "val_rmse": self.val_rmse_, "refitted_on_all": self.refitted_,
                         "seconds": round(self.fit_seconds_, 3), "history": self.history_},
            "figures": dict(figures or {}),
            "serving": "maximum inner product search: item vector [q_i, b_i], query (user) vector [p_u, 1]; "
                       "score + mu + b_u is the model's logit, so the ranking is exactly the model's",
        }
        return Embeddings(vectors=self.item_vectors()[items], ids=train.item_ids[items], metric="ip",
                          queries=self.query_vectors()[users], query_ids=train.user_ids[users],
                          items=item_metadata(train.items, train.item_ids[items]), manifest=manifest,
                          extra={"user_bias.npy": buf.getvalue()}, seen=seen_csr)
