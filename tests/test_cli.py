"""The command line on real components: TF-IDF, a replay table, files on disk."""

import json

import pandas as pd
import pytest
from rich.console import Console
from typer.testing import CliRunner

from datashunt.cli import app

runner = CliRunner(env={"COLUMNS": "200"})


@pytest.fixture
def project(tmp_path, sentiment):
    texts, labels = sentiment
    frame = pd.DataFrame({"review": texts, "sentiment": labels})
    frame.iloc[:400].to_csv(tmp_path / "train.csv", index=False)
    frame.iloc[400:].to_json(tmp_path / "test.jsonl", orient="records", lines=True)
    frame.iloc[400:, :1].to_parquet(tmp_path / "new.parquet")
    answers = pd.DataFrame({"id": texts, "prediction": labels})
    answers.to_csv(tmp_path / "answers.csv", index=False)
    (tmp_path / "run.toml").write_text(f"""
[data]
train = "{tmp_path / "train.csv"}"
test = "{tmp_path / "test.jsonl"}"
text_column = "review"
label_column = "sentiment"

[small]
model = "tfidf"
params = {{ C = 2.0 }}

[large]
backend = "replay"
table = "{tmp_path / "answers.csv"}"
price = {{ per_call = 0.001 }}

[shunt]
policy = "match_large"
confidence_level = "none"    # 80 validation items are too few for a guarantee: the point estimate
random_state = 0

[output]
dir = "{tmp_path / "out"}"
""")
    return tmp_path


def test_fit_predict_evaluate_round_trip(project):
    fitted = runner.invoke(app, ["fit", str(project / "run.toml")])
    assert fitted.exit_code == 0, fitted.output
    assert (project / "out" / "model" / "stage_0.skops").is_file()
    said = " ".join(fitted.output.split())
    assert "promise: accuracy >= last stage's accuracy" in said and "(point estimate, no guarantee)" in said

    predicted = runner.invoke(
        app,
        ["predict", str(project / "run.toml"), "-i", str(project / "new.parquet"), "-o", str(project / "labels.csv")],
    )
    assert predicted.exit_code == 0, predicted.output
    labels = pd.read_csv(project / "labels.csv")
    assert list(labels.columns) == [
        "text",
        "route",
        "stage",
        "reached",
        "label",
        "confidence",
        "confidence_small",
        "confidence_large",
        "cost",
        "prompt_tokens",
        "completion_tokens",
        "cached",
        "flag",
    ]
    assert len(labels) == 200 and labels["label"].notna().all()

    evaluated = runner.invoke(app, ["evaluate", str(project / "run.toml")])
    assert evaluated.exit_code == 0, evaluated.output
    report = json.loads((project / "out" / "report.json").read_text())
    systems = {row["system"]: row for row in report["summary"]}
    assert systems["data shunt"]["accuracy"] >= systems["small only"]["accuracy"]
    assert systems["large only"]["large_rate"] == 1.0
    assert (project / "out" / "sweep.png").stat().st_size > 10_000
    assert "data shunt" in evaluated.output
    assert "Prompt Pruning: off; 2CD: off; answered by small" in " ".join(evaluated.output.split())
    assert report["collaboration"]["prompt_pruning"] is None


def test_predict_flags_bad_rows_and_keeps_the_rest(project):
    assert runner.invoke(app, ["fit", str(project / "run.toml")]).exit_code == 0
    pd.DataFrame({"review": ["great superb movie", "", None, "awful dull movie"]}).to_csv(
        project / "messy.csv", index=False
    )
    result = runner.invoke(
        app,
        ["predict", str(project / "run.toml"), "-i", str(project / "messy.csv"), "-o", str(project / "messy_out.csv")],
    )
    assert result.exit_code == 0, result.output
    out = pd.read_csv(project / "messy_out.csv")
    assert out["route"].tolist()[1:3] == ["invalid", "invalid"]
    assert out["label"].tolist()[0] == "positive" and out["label"].tolist()[3] == "negative"


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda s: s.replace("[small]", "[smal]"), "unknown section(s) ['smal']"),
        (lambda s: s.replace('policy = "match_large"', 'polcy = "match_large"'), "unknown key(s) ['polcy'] in [shunt]"),
        (lambda s: s.replace('backend = "replay"', 'backend = "magic"'), "unknown large backend 'magic'"),
        (lambda s: s.replace('backend = "replay"', ""), "[large] needs a 'backend'"),
        (
            lambda s: s.replace("price = {", 'colour = "red"\nprice = {'),
            "unknown option(s) ['colour'] for large backend",
        ),
        (lambda s: s.replace('text_column = "review"', 'text_column = "body"'), "missing column(s) ['body']"),
        (lambda s: s.replace('train = "', 'train = "nope-'), "no such file"),
        (lambda s: s + "\n[[[", "not valid TOML"),
        (
            lambda s: s.replace('policy = "match_large"', 'policy = "max_large_rate"\nmax_large_rate = "0.3"'),
            "'max_large_rate' parameter of ShuntClassifier must be a float in the range [0.0, 1.0] or None. Got '0.3'",
        ),
        (lambda s: s.replace("random_state = 0", 'random_state = 0\nmatch_z = "2"'), "'match_z' parameter"),
        (
            lambda s: s.replace("random_state = 0", 'random_state = 0\nvalidation_fraction = "0.2"'),
            "'validation_fraction' parameter",
        ),
        (
            lambda s: s.replace("random_state = 0", "random_state = 0\nthreshold = true"),
            "the 'threshold' parameter must be a number, got the boolean True",
        ),
        (
            lambda s: s.replace("random_state = 0", 'random_state = 0\nlabel_names = ["a", "b"]'),
            "'label_names' parameter of ShuntClassifier must be an instance of 'dict' or None",
        ),
        (lambda s: s.replace("C = 2.0", 'C = "4"'), "small model step 'clf': The 'C' parameter of LogisticRegression"),
        (lambda s: s.replace("C = 2.0", "C = -1"), "must be a float in the range (0.0, inf]. Got -1 instead"),
        (lambda s: s.replace("params = {", "params = 3\nx = {"), "unknown key(s) ['x'] in [small]"),
        (lambda s: s.replace("[output]\ndir = ", "[output]\ndir = 5\n#"), "[output] dir must be a string, got int (5)"),
        (lambda s: s.replace('text_column = "review"', "text_column = 3"), "[data] text_column must be a string"),
        (
            lambda s: s.replace('label_column = "sentiment"', 'label_column = "sentiment"\nencoding = "klingon"'),
            "[data] encoding 'klingon' is not a known text encoding",
        ),
        (
            lambda s: s.replace('label_column = "sentiment"', 'label_column = "sentiment"\nencoding = "rot13"'),
            "[data] encoding 'rot13' is not a known text encoding",
        ),
        (
            lambda s: s.replace("[large]", "[large]\nkey_column = 7"),
            "'key_column' parameter of ReplayModel must be an instance of 'str'",
        ),
    ],
)
def test_bad_config_gives_one_clear_line(project, edit, message):
    path = project / "run.toml"
    path.write_text(edit(path.read_text()))
    result = runner.invoke(app, ["fit", str(path)])
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())


def test_evaluate_without_test_file_says_so(project):
    path = project / "run.toml"
    assert runner.invoke(app, ["fit", str(path)]).exit_code == 0
    path.write_text("\n".join(line for line in path.read_text().splitlines() if not line.startswith("test =")))
    result = runner.invoke(app, ["evaluate", str(path)])
    assert result.exit_code == 2 and "test is required to evaluate" in result.output


def test_evaluate_flags_labels_unseen_in_training(project):
    path = project / "run.toml"
    assert runner.invoke(app, ["fit", str(path)]).exit_code == 0
    test = pd.read_json(project / "test.jsonl", lines=True)
    test.loc[:4, "sentiment"] = "neutral"
    test.to_json(project / "test.jsonl", orient="records", lines=True)
    with pytest.warns(UserWarning, match="5 test items have labels never seen in training"):
        result = runner.invoke(app, ["evaluate", str(path)])
    assert result.exit_code == 0, result.output
    routes = pd.read_csv(project / "out" / "routes.csv")
    assert (routes["flag"] == "label unseen in training").sum() == 5


def test_distill_reports_round_by_round_and_saves(project):
    path = project / "run.toml"
    assert runner.invoke(app, ["fit", str(path)]).exit_code == 0
    pd.read_json(project / "test.jsonl", lines=True)[["review"]].to_csv(project / "pool.csv", index=False)
    result = runner.invoke(app, ["distill", str(path), "--pool", str(project / "pool.csv"), "--rounds", "2"])
    assert result.exit_code == 0, result.output
    rounds = pd.read_csv(project / "out" / "distill_rounds.csv")
    assert rounds["round"].tolist() == [0, 1, 2]
    assert rounds["n_pool"].tolist()[1:] == [100, 200]
    assert (project / "out" / "model" / "learnable.skops").is_file()


def test_evaluate_reports_each_collaboration(project):
    path = project / "run.toml"
    path.write_text(
        path.read_text().replace('policy = "match_large"', 'policy = "match_large"\nprompt_pruning = "soft"')
    )
    assert runner.invoke(app, ["fit", str(path)]).exit_code == 0
    pd.read_json(project / "test.jsonl", lines=True)[["review"]].to_csv(project / "pool.csv", index=False)
    assert (
        runner.invoke(app, ["distill", str(path), "--pool", str(project / "pool.csv"), "--rounds", "1"]).exit_code == 0
    )
    result = runner.invoke(app, ["evaluate", str(path)])
    text = " ".join(result.output.split())
    assert "Prompt Pruning: soft (small model excels in:" in text
    assert "2CD: " in text and "items from the large model" in text
    report = json.loads((project / "out" / "report.json").read_text())
    assert report["collaboration"]["distillation"]["n_pool"] == 200


def test_http_backend_settings_are_checked_at_fit_not_at_the_first_call(project):
    path = project / "run.toml"
    text = path.read_text().split("[large]")[0] + '[large]\nbackend = "openai"\nmodel = "m"\ntimeout = "abc"\n'
    path.write_text(text + f'[output]\ndir = "{project / "out"}"\n')
    result = runner.invoke(app, ["fit", str(path)])
    assert result.exit_code == 2
    assert "[large]: The 'timeout' parameter of OpenAIChatModel must be a float" in " ".join(result.output.split())


def test_a_training_set_with_one_class_is_refused(project):
    frame = pd.read_csv(project / "train.csv")
    frame.assign(sentiment="positive").to_csv(project / "train.csv", index=False)
    result = runner.invoke(app, ["fit", str(project / "run.toml")])
    assert result.exit_code == 2 and "the training labels hold only one class (positive)" in result.output


def test_predict_refuses_a_folder_as_output_before_any_call(project):
    assert runner.invoke(app, ["fit", str(project / "run.toml")]).exit_code == 0
    (project / "out_dir").mkdir()
    result = runner.invoke(
        app, ["predict", str(project / "run.toml"), "-i", str(project / "new.parquet"), "-o", str(project / "out_dir")]
    )
    assert result.exit_code == 2 and "out_dir: is a folder; give the path of the file to write" in result.output
    assert "large model:" not in result.output  # refused before the model was even loaded


def test_a_folder_as_input_and_numbers_as_texts(project):
    assert runner.invoke(app, ["fit", str(project / "run.toml")]).exit_code == 0
    args = ["predict", str(project / "run.toml"), "-o", str(project / "labels.csv"), "-i"]
    result = runner.invoke(app, args + [str(project / "out")])
    assert result.exit_code == 2 and "out: is a folder, not a file" in result.output
    (project / "numbers.csv").write_text("review\n42\n1.50\n007\n")
    result = runner.invoke(app, args + [str(project / "numbers.csv")])
    assert result.exit_code == 0, result.output
    labels = pd.read_csv(project / "labels.csv", dtype={"text": str})
    assert labels["text"].tolist() == ["42", "1.50", "007"] and (labels["route"] != "invalid").all()
    assert labels["label"].notna().all()  # read as texts and answered, never "not a string (int)"
    assert not list(project.glob(".labels.csv.*"))  # the atomic write left no temporary file


def test_evaluate_with_no_valid_test_item_says_so(project):
    assert runner.invoke(app, ["fit", str(project / "run.toml")]).exit_code == 0
    pd.DataFrame({"review": ["", "  ", None], "sentiment": ["positive", "negative", "positive"]}).to_json(
        project / "test.jsonl", orient="records", lines=True
    )
    result = runner.invoke(app, ["evaluate", str(project / "run.toml")])
    assert result.exit_code == 2
    assert "none of the 3 test items can be evaluated: row 0: blank text" in " ".join(result.output.split())


def test_a_corrupt_cache_is_one_clear_line(project, tmp_path):
    path = project / "run.toml"
    (tmp_path / "calls.sqlite").write_bytes(b"garbage" * 1000)
    text = path.read_text().split("[large]")[0]
    text += (
        f'[large]\nbackend = "llama_cpp"\nmodel = "smollm2-135m"\ncache = "{tmp_path / "calls.sqlite"}"\n'
        f'[output]\ndir = "{project / "out"}"\n'
    )
    path.write_text(text)
    result = runner.invoke(app, ["fit", str(path)])
    assert result.exit_code == 2 and "cannot open the call cache" in result.output


def test_the_summary_table_fits_80_columns_and_shows_time_for_a_free_model():
    from datashunt.display import show_summary
    from datashunt.eval.compare import Evaluation

    summary = pd.DataFrame(
        [
            {
                "system": name,
                "accuracy": 0.9,
                "macro_f1": 0.9,
                "large_rate": rate,
                "large_calls": calls,
                "cost": 0.0,
                "large_failures": 0,
                "seconds": 1.5,
                "large_seconds": seconds,
            }
            for name, rate, calls, seconds in [
                ("small only", 0.0, 0, 0.0),
                ("large only", 1.0, 300, 114.0),
                ("data shunt", 0.677, 203, 77.2),
            ]
        ]
    )
    console = Console(width=80, record=True)
    show_summary(Evaluation(summary, None, None), "held-out test, 300 sentences", console=console)
    text = console.export_text()
    assert "…" not in text and max(len(line) for line in text.splitlines()) <= 80
    assert "large time" in text and "77.2 s" in text and "cost" not in text


def test_a_cascade_of_stages_fits_predicts_and_evaluates(project):
    path = project / "run.toml"
    text = path.read_text()
    head = text.split("[small]")[0]
    answers = project / "answers.csv"
    path.write_text(
        head
        + f"""
[[stages]]
name = "tfidf"
small = "tfidf"
params = {{ C = 2.0 }}

[[stages]]
name = "recorded"
backend = "replay"
table = "{answers}"
price = {{ per_call = 0.001 }}

[cascade]
policy = "match_last"
random_state = 0

[output]
dir = "{project / "out"}"
"""
    )
    fitted = runner.invoke(app, ["fit", str(path)])
    assert fitted.exit_code == 0, fitted.output
    assert "stage recorded: recorded answers from" in " ".join(fitted.output.split())
    assert json.loads((project / "out" / "model" / "model.json").read_text())["kind"] == "Cascade"
    predicted = runner.invoke(
        app, ["predict", str(path), "-i", str(project / "new.parquet"), "-o", str(project / "labels.csv")]
    )
    assert predicted.exit_code == 0, predicted.output
    labels = pd.read_csv(project / "labels.csv")
    assert set(labels["route"]) <= {"tfidf", "recorded"} and labels["label"].notna().all()
    evaluated = runner.invoke(app, ["evaluate", str(path)])
    assert evaluated.exit_code == 0, evaluated.output
    report = json.loads((project / "out" / "report.json").read_text())
    systems = {row["system"]: row for row in report["summary"]}
    assert set(systems) == {"tfidf only", "recorded only", "cascade"}
    assert systems["cascade"]["accuracy"] >= systems["tfidf only"]["accuracy"]
    assert systems["cascade"]["cost"] < systems["recorded only"]["cost"]
    distilled = runner.invoke(app, ["distill", str(path), "--pool", str(project / "new.parquet"), "--rounds", "2"])
    assert distilled.exit_code == 0, distilled.output
    rounds = pd.read_csv(project / "out" / "distill_rounds.csv")
    assert rounds["n_pool"].tolist()[1:] == [100, 200] and "threshold_tfidf" in rounds
    assert (project / "out" / "model" / "learnable.skops").is_file()
    assert runner.invoke(app, ["evaluate", str(path)]).exit_code == 0  # the distilled cascade loads and answers


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda s: s + '\n[[stages]]\nname = "x"\nsmall = "tfidf"\n', "either [[stages]] (a cascade) or [small]"),
        (lambda s: s.replace("[shunt]", "[cascade]"), "[cascade] needs a list of [[stages]]"),
    ],
)
def test_cascade_config_mistakes_are_one_line(project, edit, message):
    path = project / "run.toml"
    path.write_text(edit(path.read_text()))
    result = runner.invoke(app, ["fit", str(path)])
    assert result.exit_code == 2 and message in " ".join(result.output.split())


GENERATE_PAIRS = [
    ("free software", "freie Software"),
    ("image viewer", "Bildbetrachter"),
    ("text editor", "Texteditor"),
    ("music player", "Musikspieler"),
    ("web browser", "Webbrowser"),
    ("chess game", "Schachspiel"),
    ("font files", "Schriftdateien"),
    ("mail client", "E-Mail-Client"),
]


def generation_config(tmp_path, tiny, generate: str) -> str:
    """A translation config over ``pairs.csv`` in ``tmp_path``: two stages of the tiny local model
    (the second shown two examples), its ``[generate]`` section ``generate``."""
    cache = tmp_path / "c.sqlite"
    stage = f'backend = "llama_cpp"\nmodel = "{tiny}"\nmax_new_tokens = 6\nstop = ["\\n"]\ncache = "{cache}"'
    return f"""
task = "generate"
[data]
train = "{tmp_path / "pairs.csv"}"
validation = "{tmp_path / "pairs.csv"}"
test = "{tmp_path / "pairs.csv"}"
text_column = "english"
reference_column = "german"

[[stages]]
name = "small"
{stage}
instruction = "Translate into German."

[[stages]]
name = "large"
{stage}
instruction = "Translate this English text into German. Answer with the translation only."
shots = 2

[generate]
{generate}

[output]
dir = "{tmp_path / "out"}"
"""


def test_generation_config_fits_predicts_and_evaluates_on_a_real_tiny_model(tmp_path):
    from test_llama_cpp import installed_tiny

    tiny = installed_tiny()
    if tiny is None:
        pytest.skip("run `datashunt setup` first (installs the tiny test model)")
    frame = pd.DataFrame(GENERATE_PAIRS * 3, columns=["english", "german"])
    frame.to_csv(tmp_path / "pairs.csv", index=False)
    frame[["english"]].to_csv(tmp_path / "new.csv", index=False)
    (tmp_path / "gen.toml").write_text(
        generation_config(tmp_path, tiny, 'metric = "chrf"\npolicy = "max_last_rate"\nmax_last_rate = 0.5')
    )
    fitted = runner.invoke(app, ["fit", str(tmp_path / "gen.toml")])
    assert fitted.exit_code == 0, fitted.output
    assert "sent to the last stage" in fitted.output and (tmp_path / "out/model/model.json").is_file()
    assert (tmp_path / "out/model/stage_1_state.npz").is_file()  # the large stage's examples, as arrays
    predicted = runner.invoke(
        app, ["predict", str(tmp_path / "gen.toml"), "-i", str(tmp_path / "new.csv"), "-o", str(tmp_path / "out.csv")]
    )
    assert predicted.exit_code == 0, predicted.output
    table = pd.read_csv(tmp_path / "out.csv")
    assert list(table.columns[:5]) == ["input", "route", "stage", "reached", "text"] and len(table) == 24
    assert set(table["route"]) <= {"small", "large"}
    evaluated = runner.invoke(app, ["evaluate", str(tmp_path / "gen.toml")])
    assert evaluated.exit_code == 0, evaluated.output
    report = json.loads((tmp_path / "out/report.json").read_text())
    assert [r["system"] for r in report["summary"]] == ["small only", "large only", "data shunt"]
    assert report["metric"] == "chrf" and len(report["curve"]) == 11


def test_generation_config_refuses_classification_sections(tmp_path):
    (tmp_path / "bad.toml").write_text('task = "generate"\n[small]\nmodel = "tfidf"\n[large]\nbackend = "replay"\n')
    result = runner.invoke(app, ["fit", str(tmp_path / "bad.toml")])
    assert result.exit_code == 2
    assert 'task = "generate" takes [[stages]] of generators and [generate]' in result.output
    (tmp_path / "bad2.toml").write_text('task = "summarise"\n')
    assert (
        "task must be one of ['classify', 'generate']"
        in runner.invoke(app, ["fit", str(tmp_path / "bad2.toml")]).output
    )


def predict(project, *args):
    return runner.invoke(app, ["predict", str(project / "run.toml"), *map(str, args)])


def said(result) -> str:
    return " ".join(result.output.split())


@pytest.mark.parametrize("how", ["same path", "symbolic link", "parquet file"])
def test_predict_refuses_to_write_over_its_input_and_leaves_it_intact(project, how):
    assert runner.invoke(app, ["fit", str(project / "run.toml")]).exit_code == 0
    source = project / "data.csv"
    pd.read_parquet(project / "new.parquet").to_csv(source, index=False)
    output = source
    if how == "symbolic link":
        output = project / "link.csv"
        output.symlink_to(source)
    elif how == "parquet file":
        source = output = project / "new.parquet"
    before = source.read_bytes()
    result = predict(project, "-i", source, "-o", output)
    assert result.exit_code == 2 and "the output would overwrite the input" in said(result)
    assert "Traceback" not in result.output and said(result).count("error:") == 1
    assert source.read_bytes() == before


def test_predict_stops_within_the_budget_with_exit_3_and_a_larger_one_goes_on(project):
    assert runner.invoke(app, ["fit", str(project / "run.toml")]).exit_code == 0
    args = ["-i", project / "new.parquet", "-o", project / "labels.csv", "--chunk-rows", "1000"]
    stopped = predict(project, *args, "--max-cost", "0.01")
    assert stopped.exit_code == 3, stopped.output
    written = pd.read_csv(project / "labels.csv")
    assert 0 < len(written) < 200 and written["cost"].sum() <= 0.01 + 1e-12
    assert f"stopped at the budget: {len(written)} rows done, cost 0.0100" in said(stopped)
    finished = predict(project, *args, "--max-cost", "1")
    assert finished.exit_code == 0, finished.output
    out = pd.read_csv(project / "labels.csv")
    assert out["text"].tolist() == pd.read_parquet(project / "new.parquet")["review"].tolist()
    assert f"cost {out['cost'].sum():.4f}" in said(finished)


def test_predict_says_plainly_what_is_wrong_with_its_files_and_columns(project):
    assert runner.invoke(app, ["fit", str(project / "run.toml")]).exit_code == 0
    missing = predict(project, "-i", project / "nope.csv", "-o", project / "labels.csv")
    assert missing.exit_code == 2 and "nope.csv: no such file" in said(missing)
    pd.DataFrame({"review": ["great superb movie"], "label": ["x"]}).to_csv(project / "new.csv", index=False)
    clash = predict(project, "-i", project / "new.csv", "-o", project / "labels.csv", "--keep", "label")
    assert clash.exit_code == 2 and "--keep 'label' clashes with the output column of that name" in said(clash)
    assert not (project / "labels.csv").exists()  # refused before any routing
    for result in (missing, clash):
        assert "Traceback" not in result.output and said(result).count("error:") == 1


def test_predict_on_an_output_another_run_holds_fails_fast(project):
    import fcntl

    assert runner.invoke(app, ["fit", str(project / "run.toml")]).exit_code == 0
    with open(project / ".labels.csv.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        result = predict(project, "-i", project / "new.parquet", "-o", project / "labels.csv")
    assert result.exit_code == 2 and "labels.csv: another run is writing this output now" in said(result)


def test_predict_that_cannot_write_its_output_mid_run_says_so_and_keeps_the_rows(project, monkeypatch):
    import errno

    from datashunt.jobs.tables import ChunkWriter

    assert runner.invoke(app, ["fit", str(project / "run.toml")]).exit_code == 0
    real = ChunkWriter.write

    def full_after_two(self, frame):
        if self.size and pd.read_csv(self.path).shape[0] >= 100:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(self, frame)

    monkeypatch.setattr(ChunkWriter, "write", full_after_two)
    args = ["-i", project / "new.parquet", "-o", project / "labels.csv", "--chunk-rows", "50"]
    result = predict(project, *args)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "labels.csv: cannot write (No space left on device); the 100 rows finished before are kept" in said(result)
    assert len(pd.read_csv(project / "labels.csv")) == 100
    monkeypatch.setattr(ChunkWriter, "write", real)
    resumed = predict(project, *args)
    assert resumed.exit_code == 0 and "resuming after 100 rows" in said(resumed)
    assert len(pd.read_csv(project / "labels.csv")) == 200


def test_fit_refuses_an_output_dir_that_is_a_file_before_training(project):
    path = project / "run.toml"
    (project / "taken").write_text("not a folder")
    path.write_text(path.read_text().replace(f'dir = "{project / "out"}"', f'dir = "{project / "taken"}"'))
    result = runner.invoke(app, ["fit", str(path)])
    assert result.exit_code == 2 and f"[output] dir: {project / 'taken'} is a file, not a folder" in said(result)
    assert "δ =" not in result.output and "large model:" not in result.output  # nothing was trained
    assert (project / "taken").read_text() == "not a folder"


@pytest.mark.parametrize(
    "base_url, message",
    [
        ("ftp://x", "[large]: The 'base_url' parameter must be an http:// or https:// URL with a host"),
        (
            "http://127.0.0.1:9/v1",
            "all 80 calls to the large model on the validation data failed (the first: call to "
            "'m' failed: APIConnectionError",
        ),
    ],
)
def test_fit_with_a_large_model_that_cannot_answer_fails_and_saves_nothing(project, base_url, message):
    path = project / "run.toml"
    large = f'[large]\nbackend = "openai"\nmodel = "m"\nbase_url = "{base_url}"\nmax_retries = 0\ncache = false\n'
    text = path.read_text()
    path.write_text(text.split("[large]")[0] + large + "[shunt]" + text.split("[shunt]")[1])
    result = runner.invoke(app, ["fit", str(path)])
    assert result.exit_code == 2 and message in said(result)
    assert not (project / "out" / "model").exists()
