"""Graph construction for DeepWalk: co-occurrence, bipartite, edge lists, and their bad inputs."""

from __future__ import annotations

import warnings

import pytest

from annrec.errors import DataError, DataNotFoundError, InputError, UnknownIdError
from annrec.data.edgelist import read_edge_list
from annrec.data.graph import Graph, bipartite_graph, cooccurrence_graph, load_graph
from _deepwalk_fixtures import tiny_interactions


def edge_set(g: Graph) -> dict[tuple, float]:
    coo = g.adj.tocoo()
    return {(g.node_ids[r].item() if hasattr(g.node_ids[r], "item") else g.node_ids[r],
             g.node_ids[c].item() if hasattr(g.node_ids[c], "item") else g.node_ids[c]): w
            for r, c, w in zip(coo.row, coo.col, coo.data)}


# ---------------------------------------------------------------------------- from_edges
def test_from_edges_undirected_symmetric_weights_summed_self_loops_dropped():
    g = Graph.from_edges([1, 2, 2, 3, 3], [2, 1, 3, 3, 1], [1.0, 2.0, 5.0, 7.0, 1.0])
    assert g.node_ids.tolist() == [1, 2, 3]
    e = edge_set(g)
    assert e[(1, 2)] == e[(2, 1)] == 3.0  # (1,2) and (2,1) are one undirected edge
    assert e[(2, 3)] == e[(3, 2)] == 5.0
    assert (3, 3) not in e and g.meta["self_loops_removed"] == 1
    assert g.n_edges == 3 and (g.adj != g.adj.T).nnz == 0
    assert g.weighted


def test_from_edges_directed_isolated_and_dangling():
    with pytest.warns(UserWarning, match="dangling"):
        g = Graph.from_edges(["a", "b", "x", None], ["b", "c", "a", "a"], directed=True, nodes=["a", "b", "c", "d"])
    assert g.node_ids.tolist() == ["a", "b", "c", "d"]
    assert set(edge_set(g)) == {("a", "b"), ("b", "c")}
    assert g.meta["dropped_edges"] == 2  # "x" is not a node; None is a missing endpoint
    assert g.out_degree().tolist() == [1, 1, 0, 0]
    assert g.has_edges_mask().tolist() == [True, True, True, False]  # c has an in-edge, d is isolated
    assert g.summary()["isolated_nodes"] == 1


def test_from_edges_bad_weights():
    with pytest.raises(DataError, match="numbers"):
        Graph.from_edges([1, 2], [2, 3], ["1.0", "heavy"])
    with pytest.raises(DataError, match=">= 0"):
        Graph.from_edges([1, 2], [2, 3], [1.0, -2.0])
    with pytest.raises(DataError, match="NaN"):
        Graph.from_edges([1, 2], [2, 3], [1.0, float("nan")])
    with pytest.raises(DataError, match="one weight per edge"):
        Graph.from_edges([1, 2], [2, 3], [1.0])


def test_graph_without_edges_is_an_error_when_walked():
    g = Graph.from_edges([1, 2], [1, 2])  # only self-loops, dropped
    assert g.n_edges == 0
    with pytest.raises(DataError, match="no edges"):
        g.check_has_edges()


def test_with_edges_appends_new_nodes_keeping_rows():
    g = Graph.from_edges([1, 2], [2, 3])
    g2 = g.with_edges([9, 9], [1, 2], [1.0, 2.0])
    assert g2.node_ids.tolist() == [1, 2, 3, 9]
    assert g2.index_of(9) == 3 and g2.index_of("9") == 3
    e = edge_set(g2)
    assert e[(9, 1)] == e[(1, 9)] == 1.0 and e[(9, 2)] == 2.0
    assert edge_set(g).items() <= e.items()
    with pytest.raises(UnknownIdError):
        g.index_of(9)


# ---------------------------------------------------------------------------- from interactions
def test_cooccurrence_graph_uses_time_order_window_and_counts():
    inter = tiny_interactions()
    g = cooccurrence_graph(inter)
    # user 10 in time order: 2, 3, 1; user 20: 2, 4, 3; user 30: 5 alone (isolated item)
    e = edge_set(g)
    assert set(k for k in e if k[0] < k[1]) == {(2, 3), (1, 3), (2, 4), (3, 4)}
    assert g.node_ids.tolist() == [1, 2, 3, 4, 5]
    assert g.has_edges_mask().tolist() == [True, True, True, True, False]
    g2 = cooccurrence_graph(inter, window=2)
    e2 = edge_set(g2)
    assert (1, 2) in e2 and (2, 3) in e2 and e2[(2, 3)] == 2.0  # 2-3 co-occur within 2 for both users
    assert g2.weighted
    gu = cooccurrence_graph(inter, window=2, weighted=False)
    assert set(gu.adj.data.tolist()) == {1.0}
    assert g.meta["dataset"] == "tiny" and len(g.meta["fingerprint"]) == 64
    with pytest.raises(InputError, match="window"):
        cooccurrence_graph(inter, window=0)


def test_cooccurrence_graph_without_pairs_raises():
    from annrec.data import Interactions

    one_each = Interactions.from_arrays([1, 2, 3], [7, 8, 9], None, [1, 2, 3])
    with pytest.raises(DataError, match="no edges"):
        cooccurrence_graph(one_each)


def test_bipartite_graph_nodes_and_types():
    inter = tiny_interactions()
    g = bipartite_graph(inter)
    assert g.n_nodes == 5 + 3
    assert g.node_type.tolist() == ["item"] * 5 + ["user"] * 3
    assert g.node_ids[0] == "i:1" and g.node_ids[5] == "u:10"
    assert g.external_ids.tolist() == [1, 2, 3, 4, 5, 10, 20, 30]
    assert g.n_edges == inter.n_events
    e = edge_set(g)
    assert ("u:30", "i:5") in e and ("i:5", "u:30") in e


# ---------------------------------------------------------------------------- edge list files
def test_read_edge_list_csv_with_header_and_weights(tmp_path):
    f = tmp_path / "e.csv"
    f.write_text("source,target,weight\n1,2,0.5\n2,3,2\n3,1,1\n")
    g = read_edge_list(f)
    assert g.node_ids.tolist() == [1, 2, 3] and g.kind == "edgelist"
    assert edge_set(g)[(1, 2)] == 0.5 and g.weighted
    assert g.meta["weighted"] is True and g.meta["fingerprint"]


def test_read_edge_list_tsv_without_header_string_ids_directed(tmp_path):
    f = tmp_path / "e.tsv"
    f.write_text("# a comment\nalice\tbob\t3\nbob\tcarol\t1\n")
    g = read_edge_list(f, directed=True, header=False)
    assert g.node_ids.tolist() == ["alice", "bob", "carol"]
    assert set(edge_set(g)) == {("alice", "bob"), ("bob", "carol")}
    assert edge_set(g)[("alice", "bob")] == 3.0


def test_read_edge_list_whitespace_no_weight(tmp_path):
    f = tmp_path / "e.txt"
    f.write_text("1 2\n2 3\n\n3 4\n")
    g = read_edge_list(f)
    assert g.n_edges == 3 and not g.weighted


def test_read_edge_list_missing_columns(tmp_path):
    f = tmp_path / "e.csv"
    f.write_text("source,weight\n1,2\n")
    with pytest.raises(DataError, match=r"no target column.*columns found: \['source', 'weight'\]"):
        read_edge_list(f)
    g = tmp_path / "one.tsv"
    g.write_text("1\n2\n")
    with pytest.raises(DataError, match="needs at least 2"):
        read_edge_list(g)
    h = tmp_path / "st.csv"
    h.write_text("source,target\n1,2\n")
    with pytest.raises(DataError, match="no weight column 'w8'"):
        read_edge_list(h, weight="w8")


def test_read_edge_list_non_numeric_weight(tmp_path):
    f = tmp_path / "e.csv"
    f.write_text("src,dst,weight\n1,2,1.5\n2,3,heavy\n")
    with pytest.raises(DataError, match=r"non-numeric value 'heavy' \(data row 2"):
        read_edge_list(f)


def test_read_edge_list_empty_and_no_edges(tmp_path):
    f = tmp_path / "empty.csv"
    f.write_text("")
    with pytest.raises(DataError, match="empty"):
        read_edge_list(f)
    h = tmp_path / "header.csv"
    h.write_text("source,target\n")
    with pytest.raises(DataError, match="no edges"):
        read_edge_list(h)
    loops = tmp_path / "loops.csv"
    loops.write_text("source,target\n1,1\n2,2\n")
    with pytest.raises(DataError, match="no edges"):
        read_edge_list(loops)
    with pytest.raises(DataNotFoundError):
        read_edge_list(tmp_path / "nope.csv")


def test_read_edge_list_dangling_rows_are_dropped_not_crashing(tmp_path):
    f = tmp_path / "e.csv"
    f.write_text("source,target\n1,2\n2,\n3,1\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        g = read_edge_list(f)
    assert g.meta["dropped_edges"] == 1 and any("dangling" in str(c.message) for c in caught)
    assert g.node_ids.tolist() == [1, 2, 3]
    assert g.n_edges == 2


def test_load_graph_errors():
    with pytest.raises(InputError, match="unknown graph kind"):
        load_graph("tree")
    with pytest.raises(InputError, match="--edges"):
        load_graph("edgelist")
    with pytest.raises(InputError, match="interactions"):
        load_graph("cooccurrence")


def test_read_edge_list_header_with_unknown_names(tmp_path):
    f = tmp_path / "e.csv"
    f.write_text("node_a,node_b,strength\n1,2,5\n2,3,1\n")
    g = read_edge_list(f)
    assert g.n_edges == 2 and edge_set(g)[(1, 2)] == 5.0
    g2 = read_edge_list(f, source="node_b", target="node_a", weight=None)
    assert edge_set(g2)[(2, 1)] == 5.0
