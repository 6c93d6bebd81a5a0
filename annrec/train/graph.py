"""Moved: the graph type and builders are :mod:`annrec.data.graph`, the edge-list reader
:mod:`annrec.data.edgelist`. This module re-exports their names for code written against earlier releases."""

from annrec.data.edgelist import SOURCE_COLUMNS, TARGET_COLUMNS, WEIGHT_COLUMNS, read_edge_list
from annrec.data.graph import ITEM, USER, Graph, bipartite_graph, cooccurrence_graph, load_graph

__all__ = ["Graph", "ITEM", "USER", "cooccurrence_graph", "bipartite_graph", "load_graph", "read_edge_list",
           "SOURCE_COLUMNS", "TARGET_COLUMNS", "WEIGHT_COLUMNS"]
