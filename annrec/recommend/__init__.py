"""The one recommendation layer: every request becomes a query vector, exclusions and filters, an index
search and packed hits here (``docs/design.md``, "The data flow").

The CLI (``annrec recommend / similar / recommend-next``), every HTTP route, ``annrec quickstart`` and
``annrec bench rec`` call :class:`Recommender`, so what is benchmarked is what is served.
"""

from annrec.recommend.evaluation import topn_recommend_fn
from annrec.recommend.pairing import check_pairing
from annrec.recommend.recommender import Recommendation, Recommender, encode_with

__all__ = ["Recommender", "Recommendation", "check_pairing", "encode_with", "topn_recommend_fn"]
