"""Batch runs that survive: chunked reading and writing, resuming, the budget, a real kill -9."""

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fakes import FakeOpenAIServer

from datashunt.backends.openai_chat import OpenAIChatModel
from datashunt.backends.replay import ReplayModel
from datashunt.estimators.shunt import ShuntClassifier
from datashunt.exceptions import DataError
from datashunt.jobs.batch import run_batch, state_path
from datashunt.jobs.tables import ChunkReader
from datashunt.small import make_small


@pytest.fixture
def shunt(sentiment):
    texts, labels = sentiment
    replay = ReplayModel(pd.DataFrame({"id": texts, "prediction": labels}), price={"per_call": 0.01})
    return ShuntClassifier(make_small("tfidf"), replay, threshold=0.8).fit(texts[:300], labels[:300])


@pytest.fixture
def items(sentiment, tmp_path):
    texts, _ = sentiment
    frame = pd.DataFrame({"id": np.arange(300, 600), "review": texts[300:]})
    frame.to_csv(tmp_path / "in.csv", index=False)
    frame.to_json(tmp_path / "in.jsonl", orient="records", lines=True)
    frame.to_parquet(tmp_path / "in.parquet")
    return frame


def run(shunt, source, output, **kwargs):
    return run_batch(shunt, source, output, column="review", key="job", keep=["id"], chunk_rows=64, **kwargs)


@pytest.mark.parametrize("source", ["in.csv", "in.jsonl", "in.parquet"])
@pytest.mark.parametrize("target", ["out.csv", "out.jsonl", "out.parquet"])
def test_chunked_run_equals_routing_everything_at_once(shunt, items, tmp_path, source, target):
    done = run(shunt, tmp_path / source, tmp_path / target)
    whole = shunt.route(items["review"].to_numpy())
    reader = {"out.csv": pd.read_csv, "out.jsonl": lambda p: pd.read_json(p, lines=True), "out.parquet": pd.read_parquet}
    out = reader[target](tmp_path / target)
    assert out["id"].tolist() == items["id"].tolist() and list(out.columns[:2]) == ["id", "review"]
    assert out["label"].tolist() == whole["label"].tolist() and out["route"].tolist() == whole["route"].tolist()
    np.testing.assert_allclose(out["confidence_small"], whole["confidence_small"])
    assert done.rows_done == 300 and done.routes == whole["route"].value_counts().to_dict()
    assert done.cost == pytest.approx(whole["cost"].sum()) and done.position == done.total
    assert not state_path(tmp_path / target).exists()  # a finished run leaves no state behind


class Crash(Exception):
    pass


class CrashingShunt:
    """Routes like the real shunt until its ``n``-th chunk, then dies (as a killed process would)."""

    def __init__(self, shunt, n):
        self.shunt, self.n, self.seen = shunt, n, 0

    def route(self, items):
        self.seen += 1
        if self.seen == self.n:
            raise Crash
        return self.shunt.route(items)


@pytest.mark.parametrize("source, target", [("in.csv", "out.csv"), ("in.jsonl", "out.parquet"),
                                            ("in.parquet", "out.csv")])
def test_a_run_killed_mid_way_resumes_without_losing_or_repeating_rows(shunt, items, tmp_path, source, target):
    output = tmp_path / target
    with pytest.raises(Crash):
        run(CrashingShunt(shunt, 3), tmp_path / source, output)
    assert state_path(output).exists()
    if target == "out.csv":  # a torn write after the last recorded chunk is cut off on resume
        with open(output, "a") as handle:
            handle.write("999,half a row")
    seen = []
    done = run(shunt, tmp_path / source, output, report=seen.append)
    assert seen[0].resumed_from == 128 and done.rows_done == 300
    out = pd.read_csv(output) if target == "out.csv" else pd.read_parquet(output)
    assert out["id"].tolist() == items["id"].tolist()


def test_another_job_on_the_same_output_starts_afresh(shunt, items, tmp_path):
    with pytest.raises(Crash):
        run(CrashingShunt(shunt, 2), tmp_path / "in.csv", tmp_path / "out.csv")
    done = run_batch(shunt, tmp_path / "in.csv", tmp_path / "out.csv", column="review", key="another job",
                     chunk_rows=64, report=lambda p: None)
    assert done.resumed_from == 0 and len(pd.read_csv(tmp_path / "out.csv")) == 300


def test_the_budget_stops_cleanly_and_the_run_goes_on_later(shunt, items, tmp_path):
    first = run(shunt, tmp_path / "in.csv", tmp_path / "out.csv", max_cost=0.5)
    assert first.stopped == "budget" and 0 < first.rows_done < 300 and first.cost <= 0.5
    assert len(pd.read_csv(tmp_path / "out.csv")) == first.rows_done
    rest = run(shunt, tmp_path / "in.csv", tmp_path / "out.csv")
    assert rest.stopped is None and pd.read_csv(tmp_path / "out.csv")["id"].tolist() == items["id"].tolist()


def test_bad_bytes_mid_file_keep_the_chunks_before_them(shunt, items, tmp_path):
    lines = (tmp_path / "in.csv").read_bytes().splitlines(keepends=True)
    lines = lines[:1] + lines[1:] * 70  # larger than what the parser decodes at once
    lines[20_000] = b"999,caf\xe9 latin-1\n"
    (tmp_path / "bad.csv").write_bytes(b"".join(lines))
    with pytest.raises(DataError, match=r"bad.csv: not valid utf-8 .* near byte"):
        run_batch(shunt, tmp_path / "bad.csv", tmp_path / "out.csv", column="review", key="k", chunk_rows=1000)
    assert len(pd.read_csv(tmp_path / "out.csv")) >= 1000  # what was finished is on disk, resumable
    assert state_path(tmp_path / "out.csv").exists()


def test_reader_errors_name_the_file_and_the_row(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"text": "fine"}\n[1, 2]\n')
    with pytest.raises(DataError, match="a.jsonl: row 2 is not a JSON object"):
        list(ChunkReader(tmp_path / "a.jsonl", "text"))
    (tmp_path / "b.csv").write_text("review\nfine\n")
    with pytest.raises(DataError, match=r"missing column\(s\) \['text'\]; columns present: \['review'\]"):
        list(ChunkReader(tmp_path / "b.csv", "text"))
    with pytest.raises(DataError, match="unsupported input type '.xls'"):
        ChunkReader(tmp_path / "c.xls", "text")


def test_http_backend_honours_retry_after_and_backs_off_on_5xx():
    with FakeOpenAIServer({"": [("positive", -0.1), ("negative", -2.5)]}, refuse=[429, 503]) as server:
        model = OpenAIChatModel("tiny", base_url=server.base_url, cache=False, max_retries=2)
        result = model.predict_proba(["a fine film"], ["negative", "positive"])
    assert result.error == [None] and result.proba[0].argmax() == 1
    gaps = np.diff([r["at"] for r in server.requests])
    assert len(server.requests) == 3 and (gaps >= 0.9).all()  # Retry-After: 1 was waited out both times


def test_kill_9_mid_run_then_resume(sentiment, tmp_path):
    """A real process killed with SIGKILL while calls are in flight, then the same command again."""
    texts, labels = sentiment
    pd.DataFrame({"review": texts[:300], "sentiment": labels[:300]}).to_csv(tmp_path / "train.csv", index=False)
    new = pd.DataFrame({"id": np.arange(300), "review": [f"{t} again" for t in texts[300:]]})
    new.to_csv(tmp_path / "new.csv", index=False)
    with FakeOpenAIServer({"": [("positive", -0.1), ("negative", -2.5)]}) as server:
        (tmp_path / "run.toml").write_text(f"""
[data]
train = "{tmp_path / 'train.csv'}"
text_column = "review"
label_column = "sentiment"
[small]
model = "tfidf"
[large]
backend = "openai"
model = "tiny"
base_url = "{server.base_url}"
max_concurrency = 2
price = {{ per_call = 0.001 }}
[shunt]
threshold = 0.9
[output]
dir = "{tmp_path / 'out'}"
""")
        cli = [str(Path(sys.executable).parent / "datashunt")]
        subprocess.run(cli + ["fit", str(tmp_path / "run.toml")], check=True, capture_output=True)
        server.requests.clear()
        server.delay = 0.05
        predict = cli + ["predict", str(tmp_path / "run.toml"), "-i", str(tmp_path / "new.csv"), "-o",
                         str(tmp_path / "labels.csv"), "--keep", "id", "--chunk-rows", "20"]
        process = subprocess.Popen(predict, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and _rows(tmp_path / "labels.csv") < 60:
            time.sleep(0.05)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        killed_at = _rows(tmp_path / "labels.csv")
        assert 60 <= killed_at < 300, "the run should be killed mid-way"
        before = len(server.requests)
        resumed = subprocess.run(predict, capture_output=True, text=True)
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        assert "resuming after" in resumed.stdout
    out = pd.read_csv(tmp_path / "labels.csv")
    assert sorted(out["id"]) == list(range(300)) and out["id"].is_unique
    asked = Counter(r["body"]["messages"][-1]["content"].split("Text: ")[-1] for r in server.requests)
    repeated = sum(n - 1 for n in asked.values())
    sent = out["route"].isin(["large", "fallback"]).sum()
    assert before > 0 and len(asked) == sent  # every routed item reached the upstream
    assert repeated <= 2, f"{repeated} calls were paid twice (at most the 2 in flight at the kill may be)"


def _rows(path) -> int:
    try:
        return max(sum(1 for _ in open(path)) - 1, 0)
    except FileNotFoundError:
        return 0


def test_a_negative_budget_and_a_jsonl_row_that_is_not_json_are_refused(shunt, tmp_path):
    (tmp_path / "in.jsonl").write_text('{"review": "fine"}\n{"review": \n')
    with pytest.raises(DataError, match="max_cost must be at least 0, got -1"):
        run_batch(shunt, tmp_path / "in.jsonl", tmp_path / "out.csv", column="review", key="k", max_cost=-1)
    with pytest.raises(DataError, match=r"in.jsonl: row 2 is not JSON \(Expecting value\)"):
        run_batch(shunt, tmp_path / "in.jsonl", tmp_path / "out.csv", column="review", key="k")


def test_empty_unreadable_and_vanished_files_are_said_plainly(shunt, items, tmp_path):
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match="empty.csv: the file is empty"):
        list(ChunkReader(tmp_path / "empty.csv", "review"))
    (tmp_path / "header.csv").write_text("review\n")
    with pytest.raises(DataError, match="header.csv: the file has no rows"):
        run_batch(shunt, tmp_path / "header.csv", tmp_path / "out.csv", column="review", key="k")
    (tmp_path / "fake.parquet").write_text("not parquet")
    with pytest.raises(DataError, match="fake.parquet: could not be read as Parquet"):
        ChunkReader(tmp_path / "fake.parquet", "review")
    with pytest.raises(Crash):
        run(CrashingShunt(shunt, 2), tmp_path / "in.csv", tmp_path / "out.csv")
    (tmp_path / "out.csv").unlink()
    with pytest.raises(DataError, match="out.csv: the output of the run to resume is gone; start afresh with --restart"):
        run(shunt, tmp_path / "in.csv", tmp_path / "out.csv")
    assert run(shunt, tmp_path / "in.csv", tmp_path / "out.csv", restart=True).rows_done == 300
