"""MovieLens loaders: the real ml-latest-small copy, SHA256SUMS checks, ml-100k / ml-1m parsers,
folder resolution, download (with a local file:// fake) and the offline error."""

from __future__ import annotations

import hashlib
import shutil
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest

from _data_fixtures import require_real_data, write_csv_set, write_sums
from annrec.data import MOVIELENS, load_movielens, temporal_user_split, random_split
from annrec.data import movielens as ml_mod
from annrec.errors import DataError, DataNotFoundError, InputError


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path):
    """No test may see the developer's ANNREC_DATA_DIR or cache unless it sets them."""
    monkeypatch.delenv("ANNREC_DATA_DIR", raising=False)
    monkeypatch.setenv("ANNREC_CACHE_DIR", str(tmp_path / "default-cache"))


# ---------------------------------------------------------------- the real copy
@pytest.mark.slow
def test_real_ml_latest_small(monkeypatch):
    root = require_real_data()
    monkeypatch.setenv("ANNREC_DATA_DIR", str(root))
    d = load_movielens("ml-latest-small", download=False)
    assert d.name == "ml-latest-small"
    assert (d.n_events, d.n_users) == (100836, 610)
    assert len(d.items) == 9742  # movies.csv
    assert d.n_items == 9724  # movies with at least one rating
    assert load_movielens(data_dir=root, include_unrated_items=True, download=False).n_items == 9742
    assert d.user_ids.dtype == np.int64 and d.user_ids.tolist() == list(range(1, 611))
    assert d.item_ids.dtype == np.int64 and d.item_ids[0] == 1 and d.item_ids[-1] == 193609
    assert d.rating.dtype == np.float32 and set(np.unique(d.rating).tolist()) == set(np.arange(1, 11) / 2)
    assert d.timestamp.dtype == np.int64 and d.timestamp.min() > 8e8
    assert d.rating.flags.writeable and d.user_idx.flags.writeable
    # first line of ratings.csv: 1,1,4.0,964982703
    assert (d.user_ids[d.user_idx[0]], d.item_ids[d.item_idx[0]], d.rating[0], d.timestamp[0]) == \
        (1, 1, 4.0, 964982703)
    titles = d.item_titles()
    assert titles[1] == "Toy Story (1995)" and titles[11] == "American President, The (1995)"
    assert d.items.loc[1, "genres"] == ["Adventure", "Animation", "Children", "Comedy", "Fantasy"]
    assert d.items.loc[1, "year"] == 1995
    no_genre = d.items[d.items["genres"].map(len) == 0]
    assert len(no_genre) == 34  # "(no genres listed)"
    assert "pixar" in d.items.loc[1, "tags"]
    assert all(t == t.lower() and t == t.strip() for tags in d.items["tags"] for t in tags)
    assert all(len(set(tags)) == len(tags) for tags in d.items["tags"])
    assert (d.items["tags"].map(len) > 0).sum() == 1572  # movies with at least one tag in tags.csv
    m = d.to_csr()
    assert m.shape == (610, 9724) and m.nnz == 100836
    # the protocol splits of DESIGN.md
    tr, te = random_split(d, 0.1, seed=0)
    assert (tr.n_events, te.n_events) == (90752, 10084)
    tr, te = temporal_user_split(d, 0.2)
    assert te.n_events == 20164 and set(np.unique(te.user_idx).tolist()) == set(range(610))


@pytest.mark.slow
def test_real_copy_folder_forms_and_tampering(tmp_path, monkeypatch):
    root = require_real_data()
    # data_dir may be the folder itself, or contain it
    a = load_movielens(data_dir=root / "ml-latest-small", download=False)
    b = load_movielens(data_dir=root, download=False)
    assert a.fingerprint() == b.fingerprint()
    # a tampered copy fails its SHA256SUMS check with a clear message
    copy = tmp_path / "ml-latest-small"
    shutil.copytree(root / "ml-latest-small", copy)
    for p in copy.iterdir():
        p.chmod(0o644)
    ratings = copy / "ratings.csv"
    data = bytearray(ratings.read_bytes())
    data[-3] = ord("9") if data[-3] != ord("9") else ord("8")
    ratings.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"checksum mismatch for .*ratings\.csv.*restore it"):
        load_movielens(data_dir=tmp_path, download=False)
    d = load_movielens(data_dir=tmp_path, download=False, verify=False)  # explicit opt-out
    assert d.n_events == 100836


# ---------------------------------------------------------------- small hand-made folders
def test_csv_format_parsing(tmp_path):
    write_csv_set(tmp_path / "ml-latest-small")
    d = load_movielens(data_dir=tmp_path, download=False)
    assert (d.n_users, d.n_items, d.n_events) == (3, 3, 6)
    assert d.item_ids.tolist() == [1, 3, 50] and len(d.items) == 4
    assert d.items.loc[3, "title"] == "American President, The (1995)"
    assert d.items.loc[99, "genres"] == [] and d.items.loc[99, "year"] is not None
    assert str(d.items.loc[99, "year"]) == "<NA>"
    # tags: lower-cased, distinct, most applied first
    assert d.items.loc[1, "tags"] == ["pixar", "fun"]
    assert d.items.loc[50, "tags"] == ["twist ending"] and d.items.loc[3, "tags"] == []
    assert d.rating.tolist() == [4.0, 4.5, 3.0, 5.0, 0.5, 2.0]


def test_folder_without_tags_and_env_var(tmp_path, monkeypatch):
    folder = write_csv_set(tmp_path / "data" / "ml-latest-small", sums=False)
    (folder / "tags.csv").unlink()
    monkeypatch.setenv("ANNREC_DATA_DIR", str(tmp_path / "data"))
    d = load_movielens(download=False)
    assert d.items["tags"].map(len).sum() == 0 and d.n_events == 6
    # the env var may also point at the set's folder itself
    monkeypatch.setenv("ANNREC_DATA_DIR", str(folder))
    assert load_movielens(download=False).n_events == 6


def test_sha256sums_mismatch_and_missing_listed_file(tmp_path):
    folder = write_csv_set(tmp_path / "ml-latest-small")
    (folder / "movies.csv").write_text((folder / "movies.csv").read_text().replace("Toy Story", "Toy Storm"))
    with pytest.raises(DataError, match=r"checksum mismatch for .*movies\.csv: SHA-256 is [0-9a-f]{64} but"):
        load_movielens(data_dir=tmp_path, download=False)
    write_sums(folder)
    (folder / "tags.csv").unlink()
    with pytest.raises(DataError, match=r"tags\.csv is listed in .*SHA256SUMS but missing"):
        load_movielens(data_dir=tmp_path, download=False)
    (folder / "SHA256SUMS").write_text("not a checksum line\n")
    with pytest.raises(DataError, match="SHA256SUMS line 1"):
        load_movielens(data_dir=tmp_path, download=False)


def test_missing_empty_and_malformed_files(tmp_path):
    folder = write_csv_set(tmp_path / "ml-latest-small", sums=False)
    (folder / "ratings.csv").unlink()
    with pytest.raises(DataNotFoundError, match=r"missing ratings\.csv.*unzip the official"):
        load_movielens(data_dir=tmp_path, download=False)
    (folder / "ratings.csv").write_text("")
    with pytest.raises(DataError, match=r"ratings\.csv is empty"):
        load_movielens(data_dir=tmp_path, download=False)
    (folder / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,1,4.0,5\n2,1,four,6\n")
    with pytest.raises(DataError, match=r"ratings\.csv line 3: rating value 'four' is not a number"):
        load_movielens(data_dir=tmp_path, download=False)
    (folder / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,1,4.0,5\n2,1,4.0,6,extra\n")
    with pytest.raises(DataError, match=r"ratings\.csv.*malformed.*line 3"):
        load_movielens(data_dir=tmp_path, download=False)
    (folder / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,1,,5\n")
    with pytest.raises(DataError, match=r"line 2: rating is empty"):
        load_movielens(data_dir=tmp_path, download=False)
    (folder / "ratings.csv").write_text("user,movie,stars\n1,1,4.0\n")
    with pytest.raises(DataError, match=r"no column\(s\) userId, movieId, rating, timestamp"):
        load_movielens(data_dir=tmp_path, download=False)
    (folder / "ratings.csv").write_text("userId,movieId,rating,timestamp\n")
    with pytest.raises(DataError, match="no ratings"):
        load_movielens(data_dir=tmp_path, download=False)


def test_unknown_set_name():
    with pytest.raises(InputError, match="use one of ml-latest-small"):
        load_movielens("ml-5k", download=False)


ML100K_DATA = "196\t242\t3\t881250949\n186\t302\t3\t891717742\n196\t302\t5\t881250950\n"
ML100K_ITEM = (
    "242|Kolya (1996)|24-Jan-1997||http://us.imdb.com/M/title-exact?Kolya%20(1996)|"
    "0|0|0|0|0|1|0|0|0|0|0|0|0|0|0|0|0|0|0\n"
    "302|L.A. Confidential (1997)|01-Jan-1997||http://us.imdb.com/M/title-exact?L%2EA%2E+Confidential+(1997)|"
    "0|0|0|0|0|0|1|0|0|0|1|0|0|1|0|0|1|0|0\n"
    "267|unknown||||1|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0\n"
    "1|Caf\xe9 Society (1995)|01-Jan-1995||http://x|0|0|0|0|0|1|0|0|0|0|0|0|0|0|0|0|0|0|0\n"
)


def test_ml100k_parser(tmp_path):
    folder = tmp_path / "ml-100k"
    folder.mkdir()
    (folder / "u.data").write_text(ML100K_DATA)
    (folder / "u.item").write_bytes(ML100K_ITEM.encode("latin-1"))
    d = load_movielens("ml-100k", data_dir=tmp_path, download=False)
    assert (d.n_users, d.n_items, d.n_events) == (2, 2, 3)
    assert d.user_ids.tolist() == [186, 196] and d.item_ids.tolist() == [242, 302]
    assert d.rating.tolist() == [3.0, 3.0, 5.0] and d.timestamp[0] == 881250949
    assert d.items.loc[242, "genres"] == ["Comedy"]
    assert d.items.loc[302, "genres"] == ["Crime", "Film-Noir", "Mystery", "Thriller"]
    assert d.items.loc[267, "genres"] == []  # the "unknown" genre flag
    assert d.items.loc[1, "title"] == "Caf\xe9 Society (1995)"  # latin-1 decoded
    assert d.items.loc[302, "year"] == 1997 and d.items.loc[242, "tags"] == []
    (folder / "u.item").write_text("242|Kolya (1996)|24-Jan-1997\n")
    with pytest.raises(DataError, match=r"u\.item line 1: expected 24"):
        load_movielens("ml-100k", data_dir=tmp_path, download=False)


ML1M_RATINGS = "1::1193::5::978300760\n1::661::3::978302109\n2::1193::4::978298413\n"
ML1M_MOVIES = ("1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n"
               "661::James and the Giant Peach (1996)::Animation|Children's|Musical\n"
               "3::B\xe9b\xe9 (1999)::Comedy\n")


def test_ml1m_parser(tmp_path):
    folder = tmp_path / "ml-1m"
    folder.mkdir()
    (folder / "ratings.dat").write_text(ML1M_RATINGS)
    (folder / "movies.dat").write_bytes(ML1M_MOVIES.encode("latin-1"))
    d = load_movielens("ml-1m", data_dir=folder, download=False)
    assert (d.n_users, d.n_items, d.n_events) == (2, 2, 3)
    assert d.item_ids.tolist() == [661, 1193]
    assert d.rating.tolist() == [5.0, 3.0, 4.0] and d.timestamp.tolist() == [978300760, 978302109, 978298413]
    assert d.items.loc[661, "genres"] == ["Animation", "Children's", "Musical"]
    assert d.items.loc[3, "title"] == "B\xe9b\xe9 (1999)" and d.items.loc[1193, "year"] == 1975
    (folder / "ratings.dat").write_text("1::1193::5::978300760\n1::661::x::978302109\n")
    with pytest.raises(DataError, match=r"ratings\.dat line 2: rating value 'x'"):
        load_movielens("ml-1m", data_dir=folder, download=False)


# ---------------------------------------------------------------- download (a local file:// fake)
def _make_zip(tmp_path: Path) -> Path:
    src = write_csv_set(tmp_path / "zipsrc" / "ml-latest-small", sums=False)
    zpath = tmp_path / "srv" / "ml-latest-small.zip"
    zpath.parent.mkdir()
    with zipfile.ZipFile(zpath, "w") as zf:
        for p in sorted(src.iterdir()):
            zf.write(p, f"ml-latest-small/{p.name}")
    return zpath


def _fake_server(monkeypatch, zpath: Path, sha256=None, md5=None):
    spec = MOVIELENS["ml-latest-small"]
    monkeypatch.setitem(spec, "url", zpath.as_uri())
    monkeypatch.setitem(spec, "sha256", sha256)
    monkeypatch.setitem(spec, "md5", md5)


def test_download_verifies_sha256_and_caches(tmp_path, monkeypatch):
    zpath = _make_zip(tmp_path)
    _fake_server(monkeypatch, zpath, sha256=hashlib.sha256(zpath.read_bytes()).hexdigest())
    cache = tmp_path / "cache"
    d = load_movielens(cache_dir=cache, progress=False)
    assert d.n_events == 6 and d.items.loc[1, "tags"] == ["pixar", "fun"]
    assert (cache / "ml-latest-small" / "ratings.csv").is_file()
    assert (cache / "ml-latest-small" / "SHA256SUMS").is_file()
    assert sorted(p.name for p in cache.iterdir()) == ["ml-latest-small"]  # no temp leftovers
    # the second load uses the cache (no download allowed) and re-verifies it
    zpath.unlink()
    assert load_movielens(cache_dir=cache, download=False).fingerprint() == d.fingerprint()
    ratings = cache / "ml-latest-small" / "ratings.csv"
    ratings.write_text(ratings.read_text().replace("4.5", "1.5"))
    with pytest.raises(DataError, match="checksum mismatch"):
        load_movielens(cache_dir=cache, download=False)
    # ANNREC_CACHE_DIR is the default cache
    monkeypatch.setenv("ANNREC_CACHE_DIR", str(tmp_path / "envcache"))
    assert ml_mod.default_cache_dir() == tmp_path / "envcache"


def test_download_checksum_mismatch_leaves_nothing(tmp_path, monkeypatch):
    zpath = _make_zip(tmp_path)
    _fake_server(monkeypatch, zpath, sha256="0" * 64)
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match=r"checksum mismatch for the download of file:.*: SHA256 is [0-9a-f]{64} "
                                        r"but 0{64} was expected.*ANNREC_DATA_DIR"):
        load_movielens(cache_dir=cache, progress=False)
    assert list(cache.iterdir()) == []


def test_download_verified_against_published_md5(tmp_path, monkeypatch):
    zpath = _make_zip(tmp_path)
    _fake_server(monkeypatch, zpath)  # no known sha256 / md5: fetch <url>.md5
    md5 = hashlib.md5(zpath.read_bytes()).hexdigest()
    md5_file = Path(str(zpath) + ".md5")
    md5_file.write_text(f"MD5 (ml-latest-small.zip) = {'f' * 32}\n")
    with pytest.raises(DataError, match=f"MD5 is {md5} but f{{32}} was expected"):
        load_movielens(cache_dir=tmp_path / "c1", progress=False)
    md5_file.write_text(f"{md5}  ml-latest-small.zip\n")
    assert load_movielens(cache_dir=tmp_path / "c2", progress=False).n_events == 6
    md5_file.unlink()
    with pytest.raises(DataError, match=r"could not fetch its checksum .*\.md5"):
        load_movielens(cache_dir=tmp_path / "c3", progress=False)
    # a known md5 in MOVIELENS is used without fetching the .md5 file
    monkeypatch.setitem(MOVIELENS["ml-latest-small"], "md5", md5)
    assert load_movielens(cache_dir=tmp_path / "c4", progress=False).n_events == 6


def test_download_of_a_non_zip(tmp_path, monkeypatch):
    bogus = tmp_path / "srv" / "ml-latest-small.zip"
    bogus.parent.mkdir()
    bogus.write_bytes(b"<html>not found</html>")
    _fake_server(monkeypatch, bogus, sha256=hashlib.sha256(bogus.read_bytes()).hexdigest())
    with pytest.raises(DataError, match="not a valid zip"):
        load_movielens(cache_dir=tmp_path / "cache", progress=False)
    assert list((tmp_path / "cache").iterdir()) == []


def test_offline_failure_message(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    with pytest.raises(DataNotFoundError) as e:
        load_movielens(data_dir=tmp_path / "nowhere", cache_dir=tmp_path / "cache", progress=False)
    msg = str(e.value)
    assert "could not be downloaded" in msg and "name resolution" in msg
    assert "set ANNREC_DATA_DIR=/path/to/folder/containing/ml-latest-small or pass --data-dir" in msg
    assert str(tmp_path / "nowhere") in msg  # says where it looked
    assert not any((tmp_path / "cache").iterdir())
    with pytest.raises(DataNotFoundError, match="download=False: set ANNREC_DATA_DIR="):
        load_movielens(cache_dir=tmp_path / "cache", download=False)


def test_known_sets_table():
    assert set(MOVIELENS) >= {"ml-latest-small", "ml-25m", "ml-32m", "ml-100k", "ml-1m"}
    for name, spec in MOVIELENS.items():
        assert spec["url"] == f"https://files.grouplens.org/datasets/movielens/{name}.zip"
        for key in ("sha256", "md5"):
            v = spec[key]
            assert v is None or (isinstance(v, str) and len(v) == {"sha256": 64, "md5": 32}[key])
