"""The one N-stage engine: every face returns the same route table, speaks the same policy names,
and can be run in two halves (the cheap stages here, the last one elsewhere)."""

import numpy as np
import pandas as pd
import pytest
from fakes import FakeGenerator, FakeLargeModel

from datashunt import Cascade, ShuntClassifier, ShuntGenerator
from datashunt.backends.replay import ReplayModel
from datashunt.exceptions import ConfigError, DataError
from datashunt.small import make_small

ITEMS = [f"item {i}" for i in range(60)]
REFS = [f"Referenz {i}" for i in range(60)]


def generator(**kw):
    small = {x: (r, [0.95]) if i % 3 else (f"falsch {i}", [0.4]) for i, (x, r) in enumerate(zip(ITEMS, REFS))}
    large = {x: (r, [0.9]) for x, r in zip(ITEMS, REFS)}
    stages = [("small", FakeGenerator(small, name="s")), ("large", FakeGenerator(large, name="l"))]
    return ShuntGenerator(stages, metric="exact_match", random_state=0, **kw)


def test_every_face_writes_the_same_route_table(sentiment, oracle):
    texts, labels = sentiment
    shunt = ShuntClassifier(make_small("tfidf"), oracle, threshold=0.9).fit(texts[:300], labels[:300])
    cascade = Cascade([("tfidf", make_small("tfidf")), ("llm", oracle)], thresholds=[0.9]).fit(
        texts[:300], labels[:300]
    )
    tables = {
        "shunt": shunt.route(texts[300:320] + [""]),
        "cascade": cascade.route(texts[300:320] + [""]),
        "generator": generator(thresholds=[0.7]).fit(ITEMS, REFS).route(ITEMS[:20] + [""]),
    }
    common = ["route", "stage", "reached", "confidence", "cost", "prompt_tokens", "completion_tokens", "cached", "flag"]
    for face, table in tables.items():
        answer = "text" if face == "generator" else "label"
        stages = [c for c in table.columns if c.startswith("confidence_")]
        assert [c for c in table.columns if c not in stages and c != answer] == common, face
        assert len(stages) == 2 and table["route"].iloc[-1] == "invalid" and table["stage"].iloc[-1] == -1
    shunt_routes, cascade_routes = tables["shunt"], tables["cascade"]
    np.testing.assert_array_equal(shunt_routes["stage"], cascade_routes["stage"])  # the same engine decides
    assert list(shunt_routes.columns[5:7]) == ["confidence_small", "confidence_large"]


def test_policy_aliases_calibrate_like_their_names(sentiment, oracle):
    texts, labels = sentiment

    def shunt(policy):
        return ShuntClassifier(
            make_small("tfidf"), oracle, policy=policy, confidence_level=None, match_z=0, random_state=0
        ).fit(texts[:400], labels[:400])

    old, new = shunt("match_large"), shunt("match_last")
    assert old.threshold_ == new.threshold_ and old.calibration_["policy"] == "match_last"
    cascade = Cascade([("tfidf", make_small("tfidf")), ("llm", oracle)], policy="match_large", random_state=0)
    assert cascade.fit(texts[:400], labels[:400]).calibration_["policy"] == "match_last"
    quality = generator(policy="target_quality", target_quality=100.0).fit(ITEMS, REFS)
    same = generator(policy="target_accuracy", target_quality=100.0).fit(ITEMS, REFS)
    assert quality.thresholds_ == same.thresholds_ and quality.calibration_["policy"] == "target_accuracy"
    with pytest.raises(ConfigError, match="'policy' parameter of ShuntClassifier must be a str among"):
        ShuntClassifier(make_small("tfidf"), oracle, policy="max_cost").fit(texts[:400], labels[:400])


def test_the_cheap_stages_and_the_last_one_can_run_apart():
    ids, truth = [f"r{i}" for i in range(40)], ["pos", "neg"] * 20
    conf = np.linspace(0.3, 1.0, 40)
    table = pd.DataFrame({"id": ids, "prediction": truth, "conf": conf})
    stages = [
        (n, ReplayModel(table, confidence_column="conf", name=n, price={"per_call": p}))
        for n, p in [("a", 0.0), ("b", 1.0), ("c", 3.0)]
    ]
    cascade = Cascade(stages, thresholds=[0.9, 0.75]).fit(ids, truth)
    items = ids + ["missing"]
    whole = cascade.route(items)
    for upto in (1, 2):
        early = cascade.first_stages(items, upto=upto)
        assert len(early) == len(items) and all(c.startswith("_datashunt_") for c in early.columns)
        pd.testing.assert_frame_equal(cascade.route(items, first_stage=early), whole)
    assert set(whole["route"]) == {"a", "b", "c", "invalid"}
    with pytest.raises(DataError, match="first_stage has 3 rows for 41 items"):
        cascade.route(items, first_stage=cascade.first_stages(items[:3]))
    with pytest.raises(ConfigError, match="upto must be between 1 and 2, got 3"):
        cascade.first_stages(items, upto=3)
    with pytest.raises(DataError, match=r"first_stage is not a table written by first_stages\(\) for this model"):
        cascade.route(items, first_stage=pd.DataFrame({"x": range(len(items))}))


def test_a_2cd_copy_answering_on_another_worker_keeps_its_route():
    rng = np.random.default_rng(0)
    old = {"positive": ["great", "superb"], "negative": ["awful", "dull"]}
    new = {"positive": ["great", "nifty", "spiffy"], "negative": ["awful", "clunky", "shoddy"]}

    def make(words, n, start):
        labels = [["negative", "positive"][i % 2] for i in range(n)]
        return [f"{rng.choice(words[y])} {rng.choice(words[y])} film {start + i}" for i, y in enumerate(labels)], labels

    (X, y), (pool, pool_y), (test, test_y) = make(old, 200, 0), make(new, 400, 1000), make(new, 200, 5000)
    large = FakeLargeModel(dict(zip(pool + test, pool_y + test_y)))
    shunt = ShuntClassifier(make_small("tfidf"), large, threshold=0.97).fit(X, y)
    shunt.distill(pool, X_train=X, y_train=y)
    whole = shunt.route(test)
    assert (whole["route"] == "learnable").any() and (whole["route"] == "large").any()
    pd.testing.assert_frame_equal(shunt.route(test, first_stage=shunt.first_stages(test)), whole)
