import numpy as np
import pytest
from fakes import FakeLargeModel

from datashunt import ShuntClassifier
from datashunt.backends.prompt import Prompt
from datashunt.collab.pruning import class_report, hard_candidates, soft_hint
from datashunt.exceptions import ConfigError
from datashunt.small import make_small


@pytest.fixture(scope="module")
def three_classes():
    """'sport' is easy for the small model; 'politics' and 'science' share their words."""
    rng = np.random.default_rng(0)
    texts, labels = [], []
    for i in range(900):
        label = ["sport", "politics", "science"][i % 3]
        words = ["goal", "match", "league"] if label == "sport" else ["report", "study", "debate", "vote"]
        texts.append(f"{rng.choice(words)} {rng.choice(words)} {rng.choice(words)} item {i}")
        labels.append(label)
    return texts, labels


class RecordingLarge(FakeLargeModel):
    def _score(self, messages, labels):
        self.prompts = getattr(self, "prompts", []) + [(messages[-1]["content"], list(labels))]
        return super()._score(messages, labels)


def test_prompt_puts_text_last_and_lists_labels():
    content = Prompt("Classify.").messages("some text", ["a", "b"], hint="prior")[-1]["content"]
    assert content.splitlines()[1] == "Answer with exactly one word from this list: a, b."
    assert content.index("prior") < content.index("Text: some text") and content.endswith("Text: some text")


def test_class_report_marks_only_classes_above_the_level():
    report = class_report(["a"] * 10 + ["b"] * 10, ["a"] * 10 + ["a"] * 3 + ["b"] * 7, ["a", "b"], 0.9)
    assert report["excels"].tolist() == [False, False]
    assert class_report(["a", "b"], ["a", "b"], ["a", "b"], 0.9)["excels"].tolist() == [True, True]


def test_soft_hint_lists_only_excelled_classes():
    assert soft_hint([0.2, 0.8], ["a", "b"], []) is None
    assert "b with probability 0.80" in soft_hint([0.2, 0.8], ["a", "b"], [1])
    assert "a with" not in soft_hint([0.2, 0.8], ["a", "b"], [1])


def test_hard_candidates_never_leave_fewer_than_two():
    assert hard_candidates([0.5, 0.5], excelled=[0, 1], cutoff=0.9) == [0, 1]
    assert hard_candidates([0.01, 0.01, 0.98], excelled=[0, 1, 2], cutoff=0.99) in ([0, 2], [1, 2])


def test_soft_pruning_sends_small_model_probabilities_as_prior(three_classes):
    texts, labels = three_classes
    large = RecordingLarge(dict(zip(texts, labels)))
    shunt = ShuntClassifier(make_small("tfidf"), large, prompt_pruning="soft", random_state=0).fit(texts, labels)
    assert shunt.class_report_.set_index("class").loc["sport", "excels"]
    assert shunt.pruning_.excelled == (list(shunt.classes_).index("sport"),)
    prompt, offered = shunt.large_.prompts[-1]
    assert "sport with probability" in prompt and "politics with probability" not in prompt
    assert offered == ["politics", "science", "sport"]


def test_hard_pruning_removes_excelled_classes_the_small_model_rules_out(three_classes):
    texts, labels = three_classes
    large = RecordingLarge(dict(zip(texts, labels)))
    shunt = ShuntClassifier(make_small("tfidf"), large, prompt_pruning="hard", pruning_cutoff=0.2, random_state=0).fit(
        texts, labels
    )
    table = shunt.route(texts[:300])
    offered = [o for _, o in shunt.large_.prompts]
    assert any(o == ["politics", "science"] for o in offered)
    assert all(len(o) >= 2 for o in offered)
    sent = table[table["route"] == "large"]
    assert (sent["label"] != "sport").sum() > 0


def test_hard_pruning_with_two_classes_changes_nothing(sentiment):
    texts, labels = sentiment
    large = RecordingLarge(dict(zip(texts, labels)))
    shunt = ShuntClassifier(make_small("tfidf"), large, prompt_pruning="hard", pruning_cutoff=0.99, random_state=0).fit(
        texts, labels
    )
    assert all(o == ["negative", "positive"] for _, o in shunt.large_.prompts)


def test_unknown_pruning_mode_raises(sentiment):
    texts, labels = sentiment
    with pytest.raises(ConfigError, match="'prompt_pruning' parameter of ShuntClassifier must be a str among"):
        ShuntClassifier(make_small("tfidf"), FakeLargeModel(), prompt_pruning="medium").fit(texts, labels)
