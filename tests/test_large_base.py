import numpy as np
import pandas as pd
import pytest
from fakes import FakeLargeModel

from datashunt.backends.base import LargeModel
from datashunt.backends.cache import CallCache
from datashunt.backends.pricing import Price
from datashunt.exceptions import CacheError, ConfigError, LargeModelError

TEXTS = ["great film", "awful film", "fine film"]
TRUTH = {"great film": "positive", "awful film": "negative", "fine film": "positive"}


def test_probabilities_are_renormalised_over_the_labels():
    result = FakeLargeModel(TRUTH).predict_proba(TEXTS, ["negative", "positive"])
    np.testing.assert_allclose(result.proba.sum(axis=1), 1.0)
    assert result.proba.argmax(axis=1).tolist() == [1, 0, 1]
    assert result.ok.all() and result.error == [None, None, None]


def test_cache_persists_across_instances_and_nothing_is_paid_twice(tmp_path):
    path = tmp_path / "calls.sqlite"
    price = {"per_call": 0.01, "per_million_input": 1000.0}
    first = FakeLargeModel(TRUTH, cache=path, price=price)
    paid = first.predict_proba(TEXTS, ["negative", "positive"])
    assert not paid.cached.any() and (paid.cost > 0.01).all() and first.calls == 3
    second = FakeLargeModel(TRUTH, cache=path, price=price)
    again = second.predict_proba(TEXTS + ["new film"], ["negative", "positive"])
    assert again.cached.tolist() == [True, True, True, False]
    assert (again.cost[:3] == 0).all() and again.cost[3] > 0
    assert second.calls == 1
    np.testing.assert_allclose(again.proba[:3], paid.proba)
    assert len(CallCache(path)) == 4


def test_cache_key_depends_on_labels_and_prompt(tmp_path):
    path = tmp_path / "calls.sqlite"
    FakeLargeModel(TRUTH, cache=path).predict_proba(TEXTS, ["negative", "positive"])
    other = FakeLargeModel(TRUTH, cache=path)
    assert not other.predict_proba(TEXTS, ["positive", "negative"]).cached.any()
    assert (
        not FakeLargeModel(TRUTH, cache=path)
        .set_params()
        .predict_proba(TEXTS, ["negative", "positive", "neutral"])
        .cached.any()
    )


def test_default_cache_lives_under_the_cache_dir_env(tmp_path, monkeypatch):
    monkeypatch.setenv("DATASHUNT_CACHE_DIR", str(tmp_path / "here"))
    FakeLargeModel(TRUTH, cache=True).predict_proba(TEXTS[:1], ["negative", "positive"])
    assert (tmp_path / "here" / "calls.sqlite").is_file()


def test_failures_and_off_label_answers_are_flagged_not_cached(tmp_path):
    path = tmp_path / "calls.sqlite"
    large = FakeLargeModel(TRUTH, fail=["awful film"], off_label=["fine film"], cache=path)
    result = large.predict_proba(TEXTS, ["negative", "positive"])
    assert result.ok.tolist() == [True, False, False]
    assert result.error[1] == "simulated time-out on 'awful film'"
    assert result.error[2].startswith("off-label answer: only 0.00% of the next-token probability")
    assert np.isnan(result.proba[1:]).all()
    assert len(CallCache(path)) == 1  # a retry will ask again


def test_labels_must_be_distinct():
    with pytest.raises(ConfigError, match="distinct"):
        FakeLargeModel(TRUTH).predict_proba(TEXTS, ["a", "a"])


def test_price_meter_counts_tokens_and_rejects_negative_prices():
    assert Price(per_call=1.0, per_million_input=2.0, per_million_output=4.0).cost(1_000_000, 500_000) == 5.0
    with pytest.raises(ConfigError, match="non-negative"):
        Price(per_call=-1)
    with pytest.raises(ConfigError, match="unknown price keys"):
        Price.coerce({"per_token": 1})


def test_base_class_requires_a_backend():
    with pytest.raises(TypeError, match="abstract"):
        LargeModel()

    class Unfinished(LargeModel):
        def identity(self):
            return "unfinished"

    with pytest.raises(NotImplementedError, match="Unfinished implements neither _score nor _score_many"):
        Unfinished().predict_proba(["x"], ["a", "b"])


def test_candidates_narrow_the_labels_offered_per_item(tmp_path):
    large = FakeLargeModel(TRUTH, cache=tmp_path / "c.sqlite")
    labels = ["negative", "positive", "neutral"]
    result = large.predict_proba(TEXTS, labels, candidates=[[0, 1], None, [1]])
    assert result.proba[0, 2] == 0.0 and result.proba[0, :2].sum() == pytest.approx(1.0)
    assert result.proba[1].min() > 0
    assert result.proba[2].tolist() == [0.0, 1.0, 0.0]
    again = FakeLargeModel(TRUTH, cache=tmp_path / "c.sqlite").predict_proba(
        TEXTS, labels, candidates=[[0, 1], None, [1]]
    )
    assert again.cached.all()
    np.testing.assert_allclose(again.proba, result.proba)


def test_hints_reach_the_prompt_and_change_the_cache_key(tmp_path):
    large = FakeLargeModel(TRUTH, cache=tmp_path / "c.sqlite")
    large.predict_proba(TEXTS[:1], ["negative", "positive"])
    hinted = large.predict_proba(TEXTS[:1], ["negative", "positive"], hints=["Prior knowledge: positive 0.9"])
    assert not hinted.cached.any()
    assert large.last_prompt.index("Prior knowledge: positive 0.9") < large.last_prompt.index("Text: great film")


def test_a_damaged_cached_answer_is_asked_again(tmp_path):
    path = tmp_path / "calls.sqlite"
    FakeLargeModel(TRUTH, cache=path).predict_proba(TEXTS, ["negative", "positive"])
    cache = CallCache(path)
    with cache._conn:
        cache._conn.execute("""UPDATE calls SET value = '{"proba": [NaN, NaN], "prompt_tokens": 3}'""")
    model = FakeLargeModel(TRUTH, cache=path)
    result = model.predict_proba(TEXTS, ["negative", "positive"])
    assert model.calls == 3 and not result.cached.any() and result.ok.all()


def test_impossible_label_logprobs_are_flagged_not_used():
    model = FakeLargeModel(TRUTH)
    with pytest.raises(LargeModelError, match=r"impossible log-probabilities \[nan, -1.0\]"):
        model._normalise(np.array([np.nan, -1.0]), ["negative", "positive"])
    with pytest.raises(LargeModelError, match=r"impossible log-probabilities \[0.5, -1.0\]"):
        model._normalise(np.array([0.5, -1.0]), ["negative", "positive"])


def test_a_cache_that_is_a_folder_or_not_a_database_is_named(tmp_path):
    (tmp_path / "folder.sqlite").mkdir()
    with pytest.raises(CacheError, match="the call cache .*folder.sqlite is a folder"):
        FakeLargeModel(TRUTH, cache=tmp_path / "folder.sqlite").predict_proba(TEXTS, ["negative", "positive"])
    (tmp_path / "junk.sqlite").write_bytes(b"this is not a database" * 100)
    with pytest.raises(
        CacheError,
        match=r"cannot open the call cache .*junk.sqlite: file is not a database; "
        "if it is corrupt, delete it",
    ):
        FakeLargeModel(TRUTH, cache=tmp_path / "junk.sqlite").predict_proba(TEXTS, ["negative", "positive"])


@pytest.mark.parametrize(
    "value",
    [
        "[1, 2]",
        '{"proba": [0.5, 0.5]}',
        '{"proba": [0.5, 0.5], "prompt_tokens": "x"}',
        '{"proba": [0.5, 0.5], "prompt_tokens": 3, "seconds": "x"}',
        '{"proba": "ab"}',
    ],
)
def test_a_cache_entry_of_the_wrong_shape_is_a_miss(tmp_path, value):
    path = tmp_path / "calls.sqlite"
    FakeLargeModel(TRUTH, cache=path).predict_proba(TEXTS, ["negative", "positive"])
    cache = CallCache(path)
    with cache._conn:
        cache._conn.execute("UPDATE calls SET value = ?", (value,))
    model = FakeLargeModel(TRUTH, cache=path)
    assert model.predict_proba(TEXTS, ["negative", "positive"]).ok.all() and model.calls == 3


def test_a_backend_from_outside_the_package_registers_saves_and_loads(tmp_path, sentiment):
    from datashunt import ShuntClassifier
    from datashunt.backends import make_large, register_backend
    from datashunt.io.persist import load, save
    from datashunt.small import make_small

    class EchoModel(FakeLargeModel):
        """A team's own backend: here, the fake with another name."""

    with pytest.raises(ConfigError, match="'openai' is a built-in backend"):
        register_backend("openai", EchoModel)
    with pytest.raises(ConfigError, match="must be a subclass of LargeModel"):
        register_backend("echo", dict)
    register_backend("echo", EchoModel)
    texts, labels = sentiment
    large = make_large("echo", truth=dict(zip(texts, labels)))
    shunt = ShuntClassifier(make_small("tfidf"), large, threshold=0.9, random_state=0).fit(texts[:300], labels[:300])
    loaded = load(save(shunt, tmp_path / "model"))
    assert type(loaded.large_) is EchoModel
    pd.testing.assert_frame_equal(loaded.route(texts[300:]), shunt.route(texts[300:]))


def test_shots_show_the_closest_labelled_training_items_in_the_prompt_never_the_item_itself():
    train = ["free strategy game", "image editing tool", "free puzzle game", "mail server daemon"]
    model = FakeLargeModel(TRUTH, shots=2).fit(train, ["games", "graphics", "games", "mail"])
    model.predict_proba(["free puzzle game"], ["games", "graphics", "mail"])
    shown = model.last_prompt.split("Solved examples like this one:\n")[1].split("\nText: ")[0]
    assert "free puzzle game -> games" not in shown  # an item never sees its own answer
    assert shown.splitlines()[-1] == "free strategy game -> games"  # the most similar last, nearest the item
    assert len(shown.splitlines()) == 2
    with pytest.raises(ConfigError, match="shots=2 needs the training pairs"):
        FakeLargeModel(TRUTH, shots=2).predict_proba(["free puzzle game"], ["games", "mail"])


def test_examples_are_part_of_the_cache_key_so_other_training_data_is_asked_again(tmp_path):
    path = tmp_path / "calls.sqlite"
    first = FakeLargeModel(TRUTH, shots=1, cache=path).fit(["great movie"], ["positive"])
    first.predict_proba(["great film"], ["negative", "positive"])
    second = FakeLargeModel(TRUTH, shots=1, cache=path).fit(["awful movie"], ["negative"])
    again = second.predict_proba(["great film"], ["negative", "positive"])
    assert not again.cached.any() and second.calls == 1
    same = FakeLargeModel(TRUTH, shots=1, cache=path).fit(["great movie"], ["positive"])
    assert same.predict_proba(["great film"], ["negative", "positive"]).cached.all()
