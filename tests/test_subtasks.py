"""Subtasks (Data Shunt+): each subtask routed on its own, the large model told what the small side settled."""

import json

import numpy as np
import pandas as pd
import pytest
from fakes import FakeLargeModel

from datashunt import ShuntClassifier, Subtasks
from datashunt.exceptions import ConfigError, DataError
from datashunt.small import make_small


def packages(n=300, seed=0):
    """Items whose section the words give away and whose interface only half of them do: the small
    model settles the section and the clear interfaces, the large model (always right) the rest."""
    rng = np.random.default_rng(seed)
    section = rng.choice(["games", "net"], n)
    interface = rng.choice(["x11", "commandline"], n)
    clear = rng.uniform(size=n) < 0.5
    texts = [
        f"pkg{i}: {'play fun level' if s == 'games' else 'socket proxy server'} "
        f"{('window mouse' if f == 'x11' else 'terminal shell') if c else 'tool'}"
        for i, (s, f, c) in enumerate(zip(section, interface, clear))
    ]
    return texts, pd.DataFrame({"section": section, "interface": interface}), clear


def subtasks(labels, texts, context=True):
    faces = []
    for name in ("section", "interface"):
        large = FakeLargeModel(dict(zip(texts, labels[name])), confidence=0.95, price={"per_call": 1.0})
        faces.append(
            (
                name,
                ShuntClassifier(
                    make_small("tfidf"), large, confidence="max_proba", confidence_level=None, random_state=0
                ),
            )
        )
    return Subtasks(faces, context=context)


def test_each_subtask_is_routed_on_its_own_and_the_large_model_hears_what_was_settled():
    texts, labels, clear = packages()
    model = subtasks(labels, texts).fit(texts[:150], labels[:150], texts[150:250], labels[150:250])
    table = model.route(texts[250:])
    assert list(table.columns[:5]) == ["section", "route_section", "confidence_section", "cost_section", "flag_section"]
    sent = table["route_interface"] == "large"
    assert sent.sum() > 0 and (table["route_section"] == "small").mean() > 0.9
    assert sent[~clear[250:]].mean() > sent[clear[250:]].mean()  # the unclear interfaces go to the large model
    assert table["large_calls"].tolist() == ((table["route_section"] == "large") + sent).astype(int).tolist()
    assert table["cost"].tolist() == pytest.approx(table["large_calls"].tolist())  # one paid call per open subtask
    assert table["route"].tolist() == np.where(table["large_calls"] > 0, "large", "small").tolist()
    prompt = model.subtasks_[1][1].large_.last_prompt
    assert "Known about this item: section: " in prompt
    assert model.score(texts[250:], labels[250:]) == pytest.approx(
        float((table[["section", "interface"]].to_numpy() == labels[250:].to_numpy()).all(axis=1).mean())
    )
    assert model.predict(texts[250:]).columns.tolist() == ["section", "interface"]


def test_without_context_the_prompts_carry_no_settled_answers():
    texts, labels, _ = packages()
    model = subtasks(labels, texts, context=False).fit(texts[:150], labels[:150], texts[150:250], labels[150:250])
    model.route(texts[250:])
    assert "Known about this item" not in model.subtasks_[1][1].large_.last_prompt


def test_bad_subtasks_and_labels_are_refused_with_the_reason():
    texts, labels, _ = packages(60)
    with pytest.raises(ConfigError, match="subtasks must be a non-empty list"):
        Subtasks([]).fit(texts, labels)
    with pytest.raises(ConfigError, match="subtask 'x' needs a ShuntClassifier or a Cascade, got str"):
        Subtasks([("x", "model")]).fit(texts, labels)
    face = subtasks(labels, texts).subtasks[0][1]
    with pytest.raises(ConfigError, match=r"subtask names must be distinct, got \['a', 'a'\]"):
        Subtasks([("a", face), ("a", face)]).fit(texts, labels)
    with pytest.raises(DataError, match=r"training labels have no column for subtask\(s\) \['use'\]"):
        Subtasks([("section", face), ("use", face)]).fit(texts, labels)
    with pytest.raises(DataError, match="validation: 10 items but 60 rows of labels"):
        Subtasks([("section", face)]).fit(texts, labels, texts[:10], labels)
    fitted = face.fit(texts, labels["section"].to_numpy(), X_val=texts, y_val=labels["section"].to_numpy())
    with pytest.raises(DataError, match=r"context needs one string \(or None\) per item \(3\), got 2"):
        fitted.route(texts[:3], context=["a", "b"])


def test_subtasks_are_saved_one_folder_each_and_load_like_the_original(tmp_path):
    from datashunt.backends.replay import ReplayModel
    from datashunt.exceptions import ModelFileError
    from datashunt.io.persist import load, save, saved_kind

    texts, labels, _ = packages()
    faces, options = [], {}
    for name in ("section", "interface"):
        table = tmp_path / f"{name}.csv"
        pd.DataFrame({"id": texts, "prediction": labels[name]}).to_csv(table, index=False)
        large = ReplayModel(str(table), name=name)
        faces.append((name, ShuntClassifier(make_small("tfidf"), large, confidence_level=None, random_state=0)))
        options[name] = {"table": str(table)}
    model = Subtasks(faces).fit(texts[:150], labels[:150], texts[150:250], labels[150:250])
    folder = save(model, tmp_path / "m")
    assert saved_kind(folder) == "Subtasks" and (folder / "subtask_1" / "model.json").is_file()
    loaded = load(folder, large_options=options)
    pd.testing.assert_frame_equal(loaded.route(texts[250:]), model.route(texts[250:]))
    with pytest.raises(ConfigError, match=r"large_options names subtasks \['use'\]"):
        load(folder, large_options={"use": {}})
    meta = json.loads((folder / "subtasks.json").read_text())
    (folder / "subtasks.json").write_text(json.dumps(meta | {"subtasks": ["section", "section"]}))
    with pytest.raises(ModelFileError, match=r"subtask names must be distinct and context true or false"):
        load(folder, large_options=options)
    (folder / "subtasks.json").write_text(json.dumps(meta | {"context": "yes"}))
    with pytest.raises(ModelFileError, match=r"subtask names must be distinct and context true or false"):
        load(folder, large_options=options)
    from datashunt import ShuntGenerator
    from datashunt.backends.generate.openai_chat import OpenAIChatGenerator

    stages = [(n, OpenAIChatGenerator(n, base_url="http://127.0.0.1:9/v1")) for n in ("a", "b")]
    save(ShuntGenerator(stages, thresholds=[0.5]).fit(texts[:8], texts[:8]), folder / "subtask_0")
    (folder / "subtasks.json").write_text(json.dumps(meta))
    with pytest.raises(ModelFileError, match="subtask 'section' is a ShuntGenerator; a subtask is a ShuntClassifier"):
        load(folder, trust_saved_locations=True, large_options={"interface": options["interface"]})
    (folder / "subtasks.json").write_text('{"format": 2, "kind": "Subtasks", "subtasks": [], "context": true}')
    with pytest.raises(ModelFileError, match=r"the keys must be \['classes', 'context', 'datashunt_version'"):
        load(folder, large_options=options)
    save(model, folder)  # whole again
    (folder / "subtasks.json").write_text(json.dumps(meta | {"subtasks": ["interface", "section"]}))  # swapped
    with pytest.raises(ModelFileError, match="subtask 'interface' does not have the classes its folder subtask_0"):
        load(folder, large_options=options)
    older = {k: v for k, v in meta.items() if k != "classes"} | {"format": 1}  # saved before classes were
    (folder / "subtasks.json").write_text(json.dumps(older))
    pd.testing.assert_frame_equal(load(folder, large_options=options).route(texts[250:]), model.route(texts[250:]))
    save(model, folder / "subtask_0")  # a Subtasks where a subtask's folder should be
    (folder / "subtasks.json").write_text(json.dumps(meta))
    with pytest.raises(ModelFileError, match="subtask 'section' is a Subtasks; a subtask is a ShuntClassifier"):
        load(folder, trust_saved_locations=True, large_options={"interface": options["interface"]})


def test_every_face_shows_a_context_line_to_its_large_stages_only():
    from fakes import FakeGenerator

    from datashunt import ShuntGenerator

    items = [f"item {i}" for i in range(40)]
    refs = [f"Ding {i}" for i in range(40)]
    small = FakeGenerator({x: ("falsch", [0.3]) for x in items}, name="small")
    large = FakeGenerator({x: (r, [0.9]) for x, r in zip(items, refs)}, name="large")
    model = ShuntGenerator([("small", small), ("large", large)], thresholds=[0.5]).fit(items, refs)
    table = model.route(items[:2], context=["Known about this item: topic: games", None])
    assert table["route"].tolist() == ["large", "large"]
    seen = str(model.stages_[1][1].last_messages)
    assert "topic: games" not in seen  # the last message asked was the second item's, without context
    model.route(items[:1], context=["Known about this item: topic: games"])
    assert "Known about this item: topic: games" in str(model.stages_[1][1].last_messages)
    assert "topic: games" not in str(model.stages_[0][1].last_messages)


def test_a_cascade_can_be_a_subtask():
    from datashunt import Cascade
    from datashunt.backends.replay import ReplayModel

    texts, labels, _ = packages(200)
    answers = pd.DataFrame({"id": texts, "prediction": labels["interface"], "sure": 0.9})
    cascade = Cascade(
        [
            ("tfidf", make_small("tfidf")),
            ("llm", ReplayModel(answers, confidence_column="sure", name="llm", price={"per_call": 1.0})),
        ],
        confidence="max_proba",
        random_state=0,
    )
    faces = [("section", subtasks(labels, texts).subtasks[0][1]), ("interface", cascade)]
    model = Subtasks(faces).fit(texts[:100], labels[:100], texts[100:160], labels[100:160])
    table = model.route(texts[160:])
    asked = table["route_interface"] == "llm"
    assert table["cost_interface"].tolist() == pytest.approx(asked.astype(float).tolist())
    truth = labels["interface"].to_numpy()[160:]
    assert (table["interface"].to_numpy()[asked] == truth[asked]).all()
    model.distill(texts[160:], X_train=texts[:100], y_train=labels[:100])
    assert model.distillation_["subtasks"]["interface"]["n_large_asked"] == asked.sum()
    assert model.subtasks_[1][1].learnable_ is not None
    faces[1][1].stages.reverse()  # a large model first: no copy to train, and no subtask learns
    model = Subtasks(faces).fit(texts[:100], labels[:100], texts[100:160], labels[100:160])
    with pytest.raises(ConfigError, match=r"subtask 'interface': the first stage \('llm'\) is a large model"):
        model.distill(texts[160:], X_train=texts[:100], y_train=labels[:100])
    assert not hasattr(model.subtasks_[0][1], "learnable_")


@pytest.mark.parametrize("context", [True, False])
def test_distillation_teaches_every_subtask_from_the_answers_route_paid_for(context):
    texts, labels, _ = packages(400)
    faces = []
    for name in ("section", "interface"):
        large = FakeLargeModel(dict(zip(texts, labels[name])), confidence=0.95, cache=True)
        face = ShuntClassifier(make_small("tfidf"), large, confidence="max_proba", confidence_level=None)
        faces.append((name, face.set_params(random_state=0)))
    model = Subtasks(faces, context=context).fit(texts[:150], labels[:150], texts[150:250], labels[150:250])
    pool = texts[250:350]
    routed = model.route(pool)
    paid = {name: face.large_.calls for name, face in model.subtasks_}
    model.distill(pool, X_train=texts[:150], y_train=labels[:150], X_val=texts[150:250], y_val=labels[150:250])
    assert {name: face.large_.calls for name, face in model.subtasks_} == paid  # the same prompts: all cached
    assert model.distillation_["n_large_asked"] == routed["large_calls"].sum() > 0
    assert model.distillation_["n_from_large"] > 0 and model.distillation_["n_pool"] == 100
    assert all(face.learnable_ is not None for _, face in model.subtasks_)
    assert set(model.distillation_["subtasks"]) == {"section", "interface"}
    with pytest.raises(DataError, match=r"training labels have no column for subtask\(s\) \['interface'\]"):
        model.distill(pool, X_train=texts[:150], y_train=labels[["section"]][:150])
    with pytest.raises(DataError, match="distill needs both the validation items and their labels, or neither"):
        model.distill(pool, X_val=texts[150:250])
    with pytest.raises(DataError, match=r"context needs one string \(or None\) per item \(100\), got 1"):
        model.subtasks_[0][1].distill(pool, X_train=texts[:150], y_train=labels["section"][:150], context=[None])


def test_a_failing_large_model_and_a_blank_item_are_flagged_per_row():
    from datashunt.exceptions import LargeModelError

    texts, labels, _ = packages()
    faces = []
    for name in ("section", "interface"):
        large = FakeLargeModel(dict(zip(texts, labels[name])), fail=tuple(texts[250:255]))
        faces.append((name, ShuntClassifier(make_small("tfidf"), large, threshold=1.1)))  # everything asked
    model = Subtasks(faces).fit(texts[:250], labels[:250], texts[:250], labels[:250])
    table = model.route(texts[250:260] + ["   "])
    assert table["flag"].iloc[0].startswith("section: large: simulated time-out")
    assert "interface: large: simulated time-out" in table["flag"].iloc[0]
    assert table["route_section"].iloc[0] == "fallback" and table["section"].iloc[0] is not None
    assert table["route_section"].iloc[-1] == "invalid" and pd.isna(table["section"].iloc[-1])
    assert pd.isna(table["flag"].iloc[5])
    with pytest.raises(LargeModelError, match=r"1 items lack an answer \(row 10: section: "):
        model.predict(texts[250:260] + ["   "])


def test_a_three_stage_cascade_subtask_distills_from_the_calls_route_paid_for():
    """Its middle model answers before the context exists and its last one hears it, in route and distill alike."""
    from datashunt import Cascade

    texts, labels, _ = packages(400)
    truth = dict(zip(texts, labels["interface"]))
    mid = FakeLargeModel(truth, accuracy=0.8, confidence=0.8, cache=True, seed=1, price={"per_call": 1.0})
    big = FakeLargeModel(truth, confidence=0.95, cache=True, seed=2, price={"per_call": 3.0})
    cascade = Cascade([("tfidf", make_small("tfidf")), ("mid", mid), ("big", big)], thresholds=[0.9, 0.85])
    faces = [("section", subtasks(labels, texts).subtasks[0][1]), ("interface", cascade)]
    model = Subtasks(faces, context=True).fit(texts[:150], labels[:150])
    pool = texts[250:350]
    routed = model.route(pool)
    face = model.subtasks_[1][1]
    paid = [m.calls for _, m in face.stages_[1:]]
    assert "Known about this item: section:" in face.stages_[2][1].last_prompt
    model.distill(pool, X_train=texts[:150], y_train=labels[:150])
    learned = model.distillation_["subtasks"]["interface"]
    assert [m.calls for _, m in face.stages_[1:]] == paid and learned["large_cost"] == 0.0
    assert learned["n_large_asked"] == (routed["route_interface"] == "big").sum() > 0
    assert learned["n_from_large"] > 0 and face.learnable_ is not None


def test_a_fit_that_fails_keeps_the_model_and_labels_are_checked_before_any_face_is_fitted():
    texts, labels, _ = packages()
    model = subtasks(labels, texts).fit(texts[:150], labels[:150])
    fitted = model.subtasks_
    broken = labels.assign(interface=None)
    with pytest.raises(DataError, match="training labels of subtask 'interface': 150 missing; drop those rows first"):
        model.fit(texts[:150], broken[:150])
    assert model.subtasks_ is fitted  # the earlier fit stands
    with pytest.raises(DataError, match="fit needs both the validation items and their labels, or neither"):
        model.fit(texts[:150], labels[:150], Y_val=labels[150:250])
    with pytest.raises(DataError, match="training labels: All arrays must be of the same length"):
        model.fit(texts[:150], {"section": ["games"] * 150, "interface": ["x11"] * 149})
    faces = [(name, face) for name, face in subtasks(labels, texts).subtasks]
    with pytest.raises(ConfigError, match="subtask name 'route_section' is a column of the route table"):
        Subtasks([faces[0], ("route_section", faces[1][1])]).fit(texts[:150], labels.assign(route_section="x")[:150])


def test_the_context_names_a_settled_class_by_its_label_word():
    texts, labels, _ = packages(300)
    coded = labels.assign(section=(labels["section"] == "games").astype(int))  # classes 0 and 1
    faces = subtasks(coded, texts).subtasks
    faces[0][1].set_params(label_names={0: "networking", 1: "games"})
    faces[0][1].large.truth = dict(zip(texts, coded["section"].map({0: "networking", 1: "games"})))
    model = Subtasks(faces).fit(texts[:150], coded[:150], texts[150:250], coded[150:250])
    model.route(texts[250:])
    prompt = model.subtasks_[1][1].large_.last_prompt
    assert "Known about this item: section: games" in prompt or "section: networking" in prompt
    assert "section: 0" not in prompt and "section: 1" not in prompt


def test_evaluation_counts_a_cascade_subtask_sent_to_its_last_stage():
    from datashunt import Cascade
    from datashunt.backends.replay import ReplayModel
    from datashunt.eval.plus import evaluate_subtasks

    texts, labels, _ = packages(200)
    answers = pd.DataFrame({"id": texts, "prediction": labels["interface"], "sure": 0.9})
    llm = ReplayModel(answers, confidence_column="sure", name="llm")
    cascade = Cascade([("tfidf", make_small("tfidf")), ("llm", llm)], confidence="max_proba", random_state=0)
    faces = [("section", subtasks(labels, texts).subtasks[0][1]), ("interface", cascade)]
    model = Subtasks(faces).fit(texts[:100], labels[:100], texts[100:160], labels[100:160])
    summary, table = evaluate_subtasks(model, texts[160:], labels[160:])
    asked = (table["route_interface"] == "llm").mean()
    assert summary["subtasks"]["interface"]["large_share"] == asked > 0
    assert summary["tokens_per_item"] == (table["prompt_tokens"] + table["completion_tokens"]).mean()
