"""annrec: train embeddings, index them (FAISS, hnswlib), benchmark the indexes and serve them.

Data flow (see ``DESIGN.md``): raw data -> :mod:`annrec.data` -> :mod:`annrec.train` ->
:class:`annrec.embeddings.Embeddings` -> :mod:`annrec.index` -> :mod:`annrec.service` /
:mod:`annrec.bench`.
"""

__version__ = "0.1.0"

from annrec.errors import AnnrecError  # noqa: E402

__all__ = ["AnnrecError", "__version__"]
