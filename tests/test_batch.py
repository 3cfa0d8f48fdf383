"""Batch runs that survive: chunked reading and writing, resuming, the budget, a real kill -9."""

import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fakes import FakeLargeModel, FakeOpenAIServer

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
    reader = {
        "out.csv": pd.read_csv,
        "out.jsonl": lambda p: pd.read_json(p, lines=True),
        "out.parquet": pd.read_parquet,
    }
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


@pytest.mark.parametrize(
    "source, target", [("in.csv", "out.csv"), ("in.jsonl", "out.parquet"), ("in.parquet", "out.csv")]
)
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
    done = run_batch(
        shunt,
        tmp_path / "in.csv",
        tmp_path / "out.csv",
        column="review",
        key="another job",
        chunk_rows=64,
        report=lambda p: None,
    )
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
train = "{tmp_path / "train.csv"}"
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
dir = "{tmp_path / "out"}"
""")
        cli = [str(Path(sys.executable).parent / "datashunt")]
        subprocess.run(cli + ["fit", str(tmp_path / "run.toml")], check=True, capture_output=True)
        server.requests.clear()
        server.delay = 0.05
        predict = cli + [
            "predict",
            str(tmp_path / "run.toml"),
            "-i",
            str(tmp_path / "new.csv"),
            "-o",
            str(tmp_path / "labels.csv"),
            "--keep",
            "id",
            "--chunk-rows",
            "20",
        ]
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
    reported = float(re.search(r"cost (\d+\.\d+)", resumed.stdout).group(1))
    answered = len(server.requests)  # each request the upstream answered was paid, ...
    assert answered - 2 <= round(reported / 0.001) <= answered  # ... bar the 2 in flight, whose answers never came


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
    with pytest.raises(
        DataError, match="out.csv: the output of the run to resume is gone; start afresh with --restart"
    ):
        run(shunt, tmp_path / "in.csv", tmp_path / "out.csv")
    assert run(shunt, tmp_path / "in.csv", tmp_path / "out.csv", restart=True).rows_done == 300


# -- the output is never the input -------------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["same path", "symbolic link", "hard link", "parquet folder"])
def test_run_refuses_an_output_that_is_the_input_and_leaves_it_intact(shunt, items, tmp_path, how):
    source, output = tmp_path / "in.csv", tmp_path / "out.csv"
    if how == "same path":
        output = source
    elif how == "symbolic link":
        output.symlink_to(source)
    elif how == "hard link":
        os.link(source, output)
    else:
        source, output = tmp_path / "out.parquet" / "part-000000.parquet", tmp_path / "out.parquet"
        output.mkdir()
        os.replace(tmp_path / "in.parquet", source)
    before = source.read_bytes()
    with pytest.raises(DataError, match="the output would overwrite the input|the output folder holds the input"):
        run(shunt, source, output)
    assert source.read_bytes() == before and not state_path(output).exists()


# -- a spending limit is a limit -----------------------------------------------------------------------------------
def priced_shunt(sentiment, price):
    texts, labels = sentiment
    large = FakeLargeModel(dict(zip(texts, labels)), price=price, cache=True)
    return ShuntClassifier(make_small("tfidf"), large, threshold=0.8).fit(texts[:300], labels[:300])


def paid(model) -> float:
    """What the fake large models inside ``model`` were paid: each answer they gave, at their price
    (summed exactly, as money is: ten answers at 0.001 cost 0.01)."""
    from decimal import Decimal

    backends = [model.large_] if hasattr(model, "large_") else [stage for _, stage in model.stages_]
    return float(sum((Decimal(repr(c)) for b in backends for c in getattr(b, "paid", [])), Decimal(0)))


def metered(model):
    """Make each priced fake inside ``model`` add the price of every answer it gives to ``paid``."""
    from datashunt.backends.pricing import Price

    backends = [model.large_] if hasattr(model, "large_") else [stage for _, stage in model.stages_]
    for backend in backends:
        if not hasattr(backend, "_score") and not hasattr(backend, "_generate"):
            continue
        name = "_score" if hasattr(backend, "_score") else "_generate"
        real, price = getattr(backend, name), Price.coerce(backend.price)

        def answer(*args, real=real, price=price, backend=backend):
            got = real(*args)
            backend.paid = getattr(backend, "paid", []) + [price.cost(got.prompt_tokens, got.completion_tokens)]
            return got

        setattr(backend, name, answer)
    return model


@pytest.mark.parametrize("price, slack", [({"per_call": 0.001}, 0.0), ({"per_million_input": 100.0}, 0.004)])
def test_the_budget_holds_to_one_call_and_a_larger_one_goes_on(sentiment, items, tmp_path, price, slack):
    model = metered(priced_shunt(sentiment, price))
    first = run(model, tmp_path / "in.csv", tmp_path / "out.csv", max_cost=0.01)
    assert first.stopped == "budget" and 0 < first.rows_done < 300
    assert first.cost == pytest.approx(paid(model)) and paid(model) <= 0.01 + slack  # slack: one call's price
    written = pd.read_csv(tmp_path / "out.csv")
    assert len(written) == first.rows_done and (written["flag"].isna()).all()
    second = run(model, tmp_path / "in.csv", tmp_path / "out.csv", max_cost=0.02)
    assert second.stopped == "budget" and first.rows_done < second.rows_done < 300
    assert paid(model) <= 0.02 + slack and second.cost == pytest.approx(paid(model))
    rest = run(model, tmp_path / "in.csv", tmp_path / "out.csv")
    out = pd.read_csv(tmp_path / "out.csv")
    assert rest.stopped is None and out["id"].tolist() == items["id"].tolist()
    assert rest.cost == pytest.approx(paid(model))  # each answer paid once: the cache kept them


def test_a_zero_budget_writes_the_rows_the_small_model_answers_and_stops_at_the_first_call(sentiment, items, tmp_path):
    model = metered(priced_shunt(sentiment, {"per_call": 0.001}))
    items.iloc[1:].to_csv(tmp_path / "in.csv", index=False)  # the first item the small model is unsure of is later
    done = run(model, tmp_path / "in.csv", tmp_path / "out.csv", max_cost=0)
    assert done.stopped == "budget" and done.cost == 0 and paid(model) == 0
    first_call = int(np.flatnonzero(model.route(items["review"].to_numpy()[1:])["route"] != "small")[0])
    assert done.rows_done == first_call > 0 and len(pd.read_csv(tmp_path / "out.csv")) == first_call


def test_the_budget_bounds_cascades_and_generators_alike(sentiment, items, tmp_path):
    from fakes import FakeGenerator

    from datashunt import Cascade, ShuntGenerator

    texts, labels = sentiment
    oracle = FakeLargeModel(dict(zip(texts, labels)), price={"per_call": 0.001})
    cascade = metered(
        Cascade([("tfidf", make_small("tfidf")), ("llm", oracle)], thresholds=[0.8]).fit(texts[:300], labels[:300])
    )
    done = run(cascade, tmp_path / "in.csv", tmp_path / "cascade.csv", max_cost=0.01)
    assert done.stopped == "budget" and 0 < done.rows_done < 300 and paid(cascade) <= 0.01
    reviews = items["review"].tolist()
    small = FakeGenerator({t: ("kurz", [0.9] if i % 3 else [0.2]) for i, t in enumerate(texts)}, name="small")
    large = FakeGenerator({t: ("lang", [0.9]) for t in texts}, name="large", price={"per_call": 0.002})
    generator = metered(
        ShuntGenerator([("small", small), ("large", large)], thresholds=[0.5]).fit(texts[:300], labels[:300])
    )
    done = run(generator, tmp_path / "in.csv", tmp_path / "generated.csv", max_cost=0.01)
    assert done.stopped == "budget" and paid(generator) == pytest.approx(0.01) and done.cost == pytest.approx(0.01)
    out = pd.read_csv(tmp_path / "generated.csv")
    assert out["review"].tolist() == reviews[: done.rows_done] and out["text"].notna().all()


# -- what a killed run paid is counted -------------------------------------------------------------------------
def test_a_run_killed_mid_chunk_reports_every_call_it_paid_after_resuming(sentiment, items, tmp_path):
    model = metered(priced_shunt(sentiment, {"per_call": 0.001}))
    large, answered = model.large_, []
    real = large._score

    def dies_after_20(messages, labels):
        if len(answered) == 20:
            raise Crash  # the process is killed with answers paid (and cached) in a chunk not yet written
        answered.append(messages)
        return real(messages, labels)

    large._score = dies_after_20
    with pytest.raises(Crash):
        run(model, tmp_path / "in.csv", tmp_path / "out.csv")
    large._score = real
    done = run(model, tmp_path / "in.csv", tmp_path / "out.csv")
    assert done.rows_done == 300 and done.cost == pytest.approx(paid(model))
    assert pd.read_csv(tmp_path / "out.csv")["cost"].sum() < paid(model)  # rows answered from the cache cost 0


# -- a resumed output must be what the run wrote ------------------------------------------------------------------
@pytest.mark.parametrize("change", ["trimmed", "rewritten tail", "part removed"])
def test_resuming_refuses_an_output_changed_after_the_kill(shunt, items, tmp_path, change):
    output = tmp_path / ("out.parquet" if change == "part removed" else "out.csv")
    with pytest.raises(Crash):
        run(CrashingShunt(shunt, 4), tmp_path / "in.csv", output)
    if change == "trimmed":
        output.write_bytes(output.read_bytes()[:-500])
    elif change == "rewritten tail":
        data = output.read_bytes()
        output.write_bytes(data[:-40] + b"x" * 40)
    else:
        (output / "part-000001.parquet").unlink()
    before = output.read_bytes() if output.is_file() else sorted(p.name for p in output.iterdir())
    with pytest.raises(DataError, match="changed after the run stopped.*--restart"):
        run(shunt, tmp_path / "in.csv", output)
    assert before == (output.read_bytes() if output.is_file() else sorted(p.name for p in output.iterdir()))
    assert run(shunt, tmp_path / "in.csv", output, restart=True).rows_done == 300


# -- one run per output -----------------------------------------------------------------------------------------
def test_a_second_run_on_the_same_output_fails_fast_naming_it(shunt, items, tmp_path):
    import fcntl

    from datashunt.jobs.paths import lock_path

    output = tmp_path / "out.csv"
    with open(lock_path(output), "w") as held:  # another run holds the output
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        start = time.monotonic()
        with pytest.raises(DataError, match=r"out.csv: another run is writing this output"):
            run(shunt, tmp_path / "in.csv", output)
        assert time.monotonic() - start < 2 and not output.exists()
    assert run(shunt, tmp_path / "in.csv", output).rows_done == 300
    assert not lock_path(output).exists()


def test_two_processes_on_one_output_write_each_row_once(shunt, items, tmp_path):
    import pickle

    (tmp_path / "model.pkl").write_bytes(pickle.dumps(shunt))
    script = f"""
import pickle, sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
from datashunt.jobs.batch import run_batch
from datashunt.exceptions import DataError
model = pickle.loads(open({str(tmp_path / "model.pkl")!r}, 'rb').read())
try:
    run_batch(model, {str(tmp_path / "in.csv")!r}, {str(tmp_path / "out.csv")!r}, column="review", key="job",
              keep=["id"], chunk_rows=8)
except DataError as exc:
    print(exc)
    sys.exit(2)
"""
    runs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True) for _ in range(2)]
    codes = sorted(p.wait(timeout=120) for p in runs)
    said = " ".join(p.stdout.read() for p in runs)
    out = pd.read_csv(tmp_path / "out.csv")
    assert out["id"].tolist() == items["id"].tolist()
    assert codes == [0, 0] or (codes == [0, 2] and "another run is writing this output" in said)


# -- temporary files are the run's own --------------------------------------------------------------------------
def test_planted_links_beside_the_output_are_never_followed(shunt, items, tmp_path):
    output = tmp_path / "out.csv"
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    for name in (".out.csv.run.json.tmp", ".out.csv.run.json", ".out.csv.run.ledger", ".out.csv.lock"):
        if name != ".out.csv.lock":
            (tmp_path / name).symlink_to(victim)
    with pytest.raises(Crash):
        run(CrashingShunt(shunt, 3), tmp_path / "in.csv", output)
    assert victim.read_text() == "precious"
    assert run(shunt, tmp_path / "in.csv", output).rows_done == 300 and victim.read_text() == "precious"


# -- an output that cannot be written --------------------------------------------------------------------------
def test_an_output_that_fails_mid_run_is_one_clear_error_and_keeps_finished_rows(shunt, items, tmp_path, monkeypatch):
    import errno

    from datashunt.jobs.tables import ChunkWriter

    real, writes = ChunkWriter.write, []

    def fails_on_the_third(self, frame):
        writes.append(len(frame))
        if len(writes) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(self, frame)

    monkeypatch.setattr(ChunkWriter, "write", fails_on_the_third)
    with pytest.raises(DataError, match=r"out.csv: cannot write \(No space left on device\); the 128 rows finished"):
        run(shunt, tmp_path / "in.csv", tmp_path / "out.csv")
    assert len(pd.read_csv(tmp_path / "out.csv")) == 128
    monkeypatch.setattr(ChunkWriter, "write", real)
    done = run(shunt, tmp_path / "in.csv", tmp_path / "out.csv")
    assert done.resumed_from == 128 and pd.read_csv(tmp_path / "out.csv")["id"].tolist() == items["id"].tolist()


# -- odd cells ----------------------------------------------------------------------------------------------------
def test_a_lone_surrogate_in_jsonl_is_passed_through_and_its_neighbours_answered(shunt, tmp_path):
    (tmp_path / "in.jsonl").write_text(
        '{"review": "great superb movie"}\n{"review": "x \\ud800"}\n{"review": "awful dull movie"}\n'
    )
    chunks = list(ChunkReader(tmp_path / "in.jsonl", "review"))
    assert chunks[0]["review"].tolist()[1] == "x \ud800"
    for target in ("out.csv", "out.jsonl", "out.parquet"):
        done = run_batch(shunt, tmp_path / "in.jsonl", tmp_path / target, column="review", key="k")
        out = {
            "out.csv": pd.read_csv,
            "out.jsonl": lambda p: pd.read_json(p, lines=True),
            "out.parquet": pd.read_parquet,
        }[target](tmp_path / target)
        assert done.rows_done == 3 and out["label"].tolist()[::2] == ["positive", "negative"]
        assert out["route"].tolist()[1] == "invalid" and out["review"].tolist()[1] == "x \\ud800"


def test_a_flag_quotes_at_most_a_bounded_part_of_a_huge_cell(sentiment, tmp_path):
    texts, labels = sentiment
    replay = ReplayModel(pd.DataFrame({"id": texts, "prediction": labels}))
    model = ShuntClassifier(make_small("tfidf"), replay, threshold=1.0).fit(texts[:300], labels[:300])
    pd.DataFrame({"review": ["fine film " * 1_000_000, "great superb movie"]}).to_csv(tmp_path / "in.csv", index=False)
    run_batch(model, tmp_path / "in.csv", tmp_path / "out.csv", column="review", key="k")
    flags = pd.read_csv(tmp_path / "out.csv")["flag"].tolist()
    assert flags[0].startswith("large: no recorded answer for input 'fine film fine film")
    assert len(flags[0]) == 200 and flags[0].endswith("…")
    assert flags[1] == "large: no recorded answer for input 'great superb movie'"


# -- the job's identity -------------------------------------------------------------------------------------------
def test_the_model_digest_reads_only_the_saved_format_in_bounded_memory(sentiment, tmp_path):
    import tracemalloc

    from datashunt.io.persist import save
    from datashunt.jobs.batch import model_digest

    texts, labels = sentiment
    pd.DataFrame({"id": texts, "prediction": labels}).to_csv(tmp_path / "answers.csv", index=False)
    shunt = ShuntClassifier(make_small("tfidf"), ReplayModel(tmp_path / "answers.csv"), threshold=0.8)
    folder = save(shunt.fit(texts[:300], labels[:300]), tmp_path / "model")
    before = model_digest(folder)
    with open(folder / "notes.bin", "wb") as handle:  # 2 GB that take no disk
        handle.truncate(2 << 30)
    start = time.monotonic()
    assert model_digest(folder) == before and time.monotonic() - start < 2
    with open(folder / "stage_1_state.npz", "ab") as handle:  # a saved file grown to 64 MB, sparse
        handle.truncate(64 << 20)
    tracemalloc.start()
    changed = model_digest(folder)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert changed != before and peak < 8 << 20


def test_a_model_the_meter_cannot_see_into_is_stopped_between_chunks(shunt, items, tmp_path):
    opaque = CrashingShunt(shunt, 0)  # routes like the shunt; its priced parts are hidden from the meter
    done = run(opaque, tmp_path / "in.csv", tmp_path / "out.csv", max_cost=0.5)
    out = pd.read_csv(tmp_path / "out.csv")
    assert done.stopped == "budget" and 0 < done.rows_done < 300 and len(out) == done.rows_done
    assert done.cost == pytest.approx(out["cost"].sum()) and done.cost <= 0.5
