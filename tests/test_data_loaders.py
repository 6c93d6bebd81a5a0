"""Generic interaction logs: CSV (sniffed separators), Parquet, and every bad-input message."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from annrec.data import interactions_from_frame, load_interactions
from annrec.errors import DataError, DataNotFoundError


def test_csv_with_ratings_and_timestamps(tmp_path):
    p = tmp_path / "events.csv"
    p.write_text("user_id,item_id,score,ts\nu1,apple,1.5,100\nu2,pear,2,200\nu1,pear,3.5,300\n")
    d = load_interactions(p, rating_col="score", timestamp_col="ts")
    assert d.name == "events"
    assert d.user_ids.dtype == object and d.user_ids.tolist() == ["u1", "u2"]
    assert d.item_ids.tolist() == ["apple", "pear"]
    assert d.rating.tolist() == [1.5, 2.0, 3.5] and d.rating.dtype == np.float32
    assert d.timestamp.tolist() == [100, 200, 300] and d.timestamp.dtype == np.int64
    assert d.user_ids[d.user_idx].tolist() == ["u1", "u2", "u1"]


@pytest.mark.parametrize("sep", ["\t", ";", "|", ","])
def test_separator_is_sniffed(tmp_path, sep):
    p = tmp_path / "e.txt"
    p.write_text(sep.join(["user", "item"]) + "\n" + "\n".join(f"{u}{sep}{i}" for u, i in
                                                             [(1, 10), (2, 20), (3, 10), (1, 30)]) + "\n")
    d = load_interactions(p, user_col="user", item_col="item")
    assert d.user_ids.dtype == np.int64 and d.user_ids.tolist() == [1, 2, 3]
    assert d.item_ids.tolist() == [10, 20, 30] and d.rating.tolist() == [1.0] * 4
    assert d.timestamp.tolist() == [0] * 4


def test_explicit_separator_and_id_types(tmp_path):
    p = tmp_path / "e.csv"
    p.write_text("a::b\n1::007\n2::8\n")
    d = load_interactions(p, user_col="a", item_col="b", sep="::")
    assert d.user_ids.dtype == np.int64
    assert d.item_ids.dtype == object and d.item_ids.tolist() == ["007", "8"]  # "007" is not an int id


def test_iso_dates_become_utc_seconds(tmp_path):
    p = tmp_path / "e.csv"
    p.write_text("user_id,item_id,when\n1,2,1970-01-02T00:00:00Z\n1,3,1970-01-01 00:01:00\n")
    d = load_interactions(p, timestamp_col="when")
    assert d.timestamp.tolist() == [86400, 60]


def test_parquet(tmp_path):
    p = tmp_path / "e.parquet"
    pd.DataFrame({"uid": np.array([5, 6, 5], np.int64), "iid": ["x", "y", "z"],
                  "r": [1.0, 2.0, 3.0], "t": pd.to_datetime(["2020-01-01", "2020-01-02", "2020-01-03"])}
                 ).to_parquet(p)
    d = load_interactions(p, user_col="uid", item_col="iid", rating_col="r", timestamp_col="t")
    assert d.user_ids.tolist() == [5, 6] and d.user_ids.dtype == np.int64
    assert d.item_ids.tolist() == ["x", "y", "z"]
    assert d.timestamp.tolist() == [1577836800, 1577923200, 1578009600]
    with pytest.raises(DataError, match=r"no column 'user_id'.*columns are: uid, iid, r, t.*--user-col"):
        load_interactions(p)
    bad = tmp_path / "bad.parquet"
    bad.write_text("not parquet")
    with pytest.raises(DataError, match="not a readable Parquet file"):
        load_interactions(bad)


def test_missing_empty_and_header_only(tmp_path):
    with pytest.raises(DataNotFoundError, match="does not exist"):
        load_interactions(tmp_path / "nope.csv")
    p = tmp_path / "e.csv"
    p.write_text("")
    with pytest.raises(DataError, match="is empty"):
        load_interactions(p)
    p.write_text("\n\n")
    with pytest.raises(DataError, match="is empty"):
        load_interactions(p)
    p.write_text("user_id,item_id\n")
    with pytest.raises(DataError, match="no rows"):
        load_interactions(p)
    with pytest.raises(DataError, match="is a folder"):
        load_interactions(tmp_path)


def test_missing_columns_name_present_columns_and_flag(tmp_path):
    p = tmp_path / "e.csv"
    p.write_text("userId,movieId,rating\n1,2,3\n")
    with pytest.raises(DataError) as e:
        load_interactions(p)
    msg = str(e.value)
    assert "no column 'user_id'" in msg and "userId, movieId, rating" in msg
    assert "--user-col NAME" in msg and "user_col=NAME" in msg and "perhaps 'userId'" in msg
    with pytest.raises(DataError, match=r"no column 'stars' for the rating.*--rating-col"):
        load_interactions(p, user_col="userId", item_col="movieId", rating_col="stars")
    p.write_text("1,2,3\n4,5,6\n")  # no header line
    with pytest.raises(DataError, match="looks like data, not a header"):
        load_interactions(p)


def test_malformed_rows_name_the_line(tmp_path):
    p = tmp_path / "e.csv"
    p.write_text("user_id,item_id,rating\n1,2,3.0\n1,3,abc\n")
    with pytest.raises(DataError, match=r"line 3: rating column 'rating' has value 'abc'"):
        load_interactions(p, rating_col="rating")
    p.write_text("user_id,item_id,rating\n1,2,3.0\n1,3,\n")
    with pytest.raises(DataError, match=r"line 3: rating column"):
        load_interactions(p, rating_col="rating")
    p.write_text("user_id,item_id,ts\n1,2,100\n1,3,yesterday\n")
    with pytest.raises(DataError, match=r"line 3: timestamp column 'ts' has value 'yesterday'"):
        load_interactions(p, timestamp_col="ts")
    p.write_text("user_id,item_id,when\n1,2,2020-01-01\n1,3,2020-02-30\n")
    with pytest.raises(DataError, match=r"line 3: timestamp column 'when' has value '2020-02-30'"):
        load_interactions(p, timestamp_col="when")
    p.write_text("user_id,item_id\n1,2\n,3\n")
    with pytest.raises(DataError, match=r"line 3: user id column 'user_id' is empty"):
        load_interactions(p)
    p.write_text("user_id,item_id\n1,2\n1,2,3\n")
    with pytest.raises(DataError, match=r"malformed.*line 3"):
        load_interactions(p)


def test_from_frame():
    df = pd.DataFrame({"u": ["a", "b"], "i": [1, 2], "r": [4.0, 5.0]})
    d = interactions_from_frame(df, "u", "i", "r", name="frame")
    assert d.name == "frame" and d.rating.tolist() == [4.0, 5.0] and d.item_ids.dtype == np.int64
    with pytest.raises(DataError, match=r"row 1: rating"):
        interactions_from_frame(pd.DataFrame({"u": [1, 2], "i": [1, 2], "r": [1.0, np.inf]}), "u", "i", "r")


def test_arrays_are_writable_numpy(tmp_path):
    """pandas copy-on-write hands out read-only arrays; Interactions must not (torch.from_numpy warns)."""
    p = tmp_path / "e.csv"
    p.write_text("user_id,item_id,rating,ts\n1,2,3.0,4\n")
    d = load_interactions(p, rating_col="rating", timestamp_col="ts")
    for a in (d.user_idx, d.item_idx, d.rating, d.timestamp, d.user_ids, d.item_ids):
        assert isinstance(a, np.ndarray) and a.flags.writeable and a.flags.c_contiguous
