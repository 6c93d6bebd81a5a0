"""Evaluation protocols beyond the plain ranking metrics of :mod:`annrec.metrics`, and the baselines.

* :mod:`annrec.eval.rating` - the explicit-ratings protocol (RMSE on a random split);
* :mod:`annrec.eval.topn` - the top-N protocol as a table of models and baselines on one split;
* :mod:`annrec.eval.baselines` - bias-only, most-popular and item-kNN baselines;
* :mod:`annrec.eval.graph` - multi-label node classification (genre F1) and item-to-item top-N from item
  vectors.

Each module is imported on its own (``from annrec.eval.topn import topn_protocol``).
"""
