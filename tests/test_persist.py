import json

import numpy as np
import pandas as pd
import pytest

from datashunt import ShuntClassifier
from datashunt.backends.openai_chat import OpenAIChatModel
from datashunt.backends.replay import ReplayModel
from datashunt.exceptions import ConfigError, ModelFileError
from datashunt.io.persist import load, save
from datashunt.small import make_small


@pytest.fixture
def fitted(tmp_path, sentiment):
    texts, labels = sentiment
    pd.DataFrame({"id": texts, "prediction": labels}).to_csv(tmp_path / "answers.csv", index=False)
    large = ReplayModel(str(tmp_path / "answers.csv"), price={"per_call": 0.5})
    return ShuntClassifier(make_small("tfidf"), large, random_state=0).fit(texts[:400], labels[:400])


def test_saved_shunt_routes_exactly_like_the_original(fitted, sentiment, tmp_path):
    texts, _ = sentiment
    loaded = load(save(fitted, tmp_path / "model"), large_options={"table": str(tmp_path / "answers.csv")})
    pd.testing.assert_frame_equal(loaded.route(texts[400:]), fitted.route(texts[400:]))
    assert loaded.threshold_ == fitted.threshold_
    pd.testing.assert_frame_equal(loaded.sweep_, fitted.sweep_)
    assert loaded.get_params()["random_state"] == 0


def test_saved_files_hold_no_pickle_and_no_secret(tmp_path, sentiment, monkeypatch):
    monkeypatch.setenv("MY_KEY", "sk-very-secret")
    texts, labels = sentiment
    large = OpenAIChatModel("m", base_url="http://127.0.0.1:9/v1", api_key_env="MY_KEY")
    shunt = ShuntClassifier(make_small("tfidf"), large, threshold=0.7).fit(texts, labels)
    folder = save(shunt, tmp_path / "model")
    for file in folder.iterdir():
        assert b"sk-very-secret" not in file.read_bytes()
    large = json.loads((folder / "model.json").read_text())["stages"][1]
    assert large == {"name": "large", "kind": "backend", "backend": "openai", "options": large["options"]}
    assert large["options"]["api_key_env"] == "MY_KEY" and "cache" not in large["options"]
    assert load(folder, trust_saved_locations=True).large_.base_url == "http://127.0.0.1:9/v1"


def test_corrupt_or_incomplete_folders_raise(fitted, tmp_path):
    folder = save(fitted, tmp_path / "model")
    (folder / "stage_0.skops").write_bytes(b"garbage")
    with pytest.raises(ModelFileError, match="stage_0.skops is corrupt"):
        load(folder)
    (folder / "model.json").write_text("{not json")
    with pytest.raises(ModelFileError, match="model.json is corrupt"):
        load(folder)
    with pytest.raises(ModelFileError, match="is not a saved shunt"):
        load(tmp_path / "nowhere")


def test_untrusted_types_are_refused(fitted, tmp_path, monkeypatch):
    folder = save(fitted, tmp_path / "model")
    import skops.io

    monkeypatch.setattr(skops.io, "get_untrusted_types", lambda file: ["evil.module.Thing"])
    with pytest.raises(ModelFileError, match=r"not trusted: \['evil.module.Thing'\]"):
        load(folder)


def test_in_memory_replay_table_cannot_be_saved(sentiment, tmp_path):
    texts, labels = sentiment
    large = ReplayModel(pd.DataFrame({"id": texts, "prediction": labels}))
    shunt = ShuntClassifier(make_small("tfidf"), large, threshold=0.5).fit(texts, labels)
    with pytest.raises(ConfigError, match="in-memory table cannot be saved"):
        save(shunt, tmp_path / "model")
    assert np.isfinite(shunt.threshold_)


def test_distilled_shunt_saves_its_learnable_model(fitted, sentiment, tmp_path):
    texts, labels = sentiment
    fitted.distill(texts[400:], X_train=texts[:400], y_train=labels[:400])
    loaded = load(save(fitted, tmp_path / "model"), trust_saved_locations=True)
    pd.testing.assert_frame_equal(loaded.route(texts[400:]), fitted.route(texts[400:]))
    assert (tmp_path / "model" / "learnable.skops").is_file() and loaded.learnable_ is not None


def test_tfidf_vocabulary_is_saved_as_arrays_and_round_trips(tmp_path, sentiment):
    import skops.io

    texts, labels = sentiment
    model = make_small("tfidf").fit(texts, labels)
    state = model[0].__getstate__()
    assert "vocabulary_" not in state and state["vocabulary_terms_"].dtype.kind == "U"
    skops.io.dump(model, tmp_path / "m.skops")
    loaded = skops.io.load(tmp_path / "m.skops", trusted=skops.io.get_untrusted_types(file=tmp_path / "m.skops"))
    assert loaded[0].vocabulary_ == model[0].vocabulary_
    np.testing.assert_array_equal(loaded.predict_proba(texts), model.predict_proba(texts))


@pytest.mark.parametrize("threshold, saved", [(-5.0, -np.inf), (1.5, np.inf), (0.7, 0.7)])
def test_a_fixed_threshold_is_saved_as_the_one_that_routes_the_same(sentiment, tmp_path, threshold, saved):
    texts, labels = sentiment
    pd.DataFrame({"id": texts, "prediction": labels}).to_csv(tmp_path / "answers.csv", index=False)
    shunt = ShuntClassifier(make_small("tfidf"), ReplayModel(str(tmp_path / "answers.csv")), threshold=threshold)
    shunt.fit(texts[:400], labels[:400])
    folder = save(shunt, tmp_path / "model")
    assert json.loads((folder / "model.json").read_text())["thresholds"] == [saved]
    loaded = load(folder, large_options={"table": str(tmp_path / "answers.csv")})
    assert loaded.threshold_ == saved
    pd.testing.assert_frame_equal(loaded.route(texts[400:]), shunt.route(texts[400:]))


def test_label_names_round_trip_and_a_contradicting_one_cannot_be_saved(sentiment, tmp_path):
    texts, labels = sentiment
    large = ReplayModel(str(tmp_path / "answers.csv"))
    pd.DataFrame({"id": texts, "prediction": labels}).to_csv(tmp_path / "answers.csv", index=False)
    shunt = ShuntClassifier(make_small("tfidf"), large, threshold=0.7, label_names={"positive": "good"})
    shunt.fit(texts[:400], labels[:400])
    loaded = load(save(shunt, tmp_path / "model"), large_options={"table": str(tmp_path / "answers.csv")})
    assert loaded.labels_ == shunt.labels_ == ["negative", "good"]
    shunt.label_names = {"positive": "negative", "negative": "positive"}
    with pytest.raises(
        ConfigError,
        match="cannot save this model: label_names gives class 'negative' the word "
        "'positive', the name of class 'positive'",
    ):
        save(shunt, tmp_path / "swapped")


@pytest.mark.filterwarnings("ignore::datashunt.exceptions.DriftWarning")  # calibrated with another small model
def test_an_ensemble_of_trusted_models_loads_and_routes_like_the_original(fitted, sentiment, tmp_path):
    from sklearn.ensemble import VotingClassifier

    texts, labels = sentiment
    fitted.small_ = VotingClassifier(
        [("words", make_small("tfidf")), ("chars", make_small("tfidf", C=1.0))], voting="soft"
    ).fit(texts[:400], labels[:400])
    folder = save(fitted, tmp_path / "model")
    loaded = load(
        folder, large_options={"table": str(tmp_path / "answers.csv")}, trusted=["sklearn.utils._bunch.Bunch"]
    )
    pd.testing.assert_frame_equal(loaded.route(texts[400:]), fitted.route(texts[400:]))


def test_a_torch_small_model_passes_the_load_checks(fitted, sentiment, tmp_path):
    from datashunt.small.textcnn import TextCNNClassifier

    texts, labels = sentiment
    fitted.small_ = TextCNNClassifier(epochs=1, embedding_dim=8, n_filters=4, n_threads=1, random_state=0)
    fitted.small_.fit(texts[:400], labels[:400])
    loaded = load(save(fitted, tmp_path / "model"), large_options={"table": str(tmp_path / "answers.csv")})
    np.testing.assert_allclose(loaded.small_.predict_proba(texts[400:]), fitted.small_.predict_proba(texts[400:]))


def test_a_cascades_fixed_thresholds_are_saved_as_the_ones_that_route_the_same(sentiment, tmp_path):
    from datashunt import Cascade

    texts, labels = sentiment
    pd.DataFrame({"id": texts, "prediction": labels, "conf": 0.9}).to_csv(tmp_path / "answers.csv", index=False)
    stages = [
        ("small", make_small("tfidf")),
        ("recorded", ReplayModel(str(tmp_path / "answers.csv"), confidence_column="conf")),
    ]
    cascade = Cascade(stages, thresholds=[[-1.0, 0.8]]).fit(texts[:400], labels[:400])
    folder = save(cascade, tmp_path / "model")
    assert json.loads((folder / "model.json").read_text())["thresholds"] == [[-np.inf, 0.8]]
    loaded = load(folder, large_options={"recorded": {"table": str(tmp_path / "answers.csv")}})
    pd.testing.assert_frame_equal(loaded.route(texts[400:]), cascade.route(texts[400:]))
