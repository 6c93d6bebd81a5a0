"""Evaluation protocols of ``DESIGN.md`` that are not plain ranking metrics (those are in
:mod:`annrec.metrics`): :mod:`annrec.eval.graph` - multi-label node classification (genre F1) and
item-to-item top-N recommendation from item vectors."""
