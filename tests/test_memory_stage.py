"""The translation memory as a generation stage: free answers for texts solved before."""

import pytest
from fakes import FakeGenerator

from datashunt import ShuntGenerator
from datashunt.exceptions import ConfigError, DataError
from datashunt.small.memory import MemoryGenerator

SEEN = {
    "This package contains the development files.": "Dieses Paket enthält die Entwicklungsdateien.",
    "This package contains the documentation.": "Dieses Paket enthält die Dokumentation.",
    "A free game for children.": "Ein freies Spiel für Kinder.",
}
NEW = "Xylophone quartz jumbo wizard."


def memory():
    return MemoryGenerator().fit(list(SEEN), list(SEEN.values()))


def test_a_seen_text_is_answered_sure_and_a_new_one_unsure():
    got = memory().generate([*SEEN, NEW])
    assert got.text[:3] == list(SEEN.values())
    assert got.confidence[:3].tolist() == pytest.approx([1.0] * 3)
    assert got.confidence[3] < 0.3 and got.text[3] in SEEN.values()
    assert got.cost.sum() == 0 and got.prompt_tokens.sum() == 0


def test_bad_items_are_flagged_per_row_and_bad_training_data_refused():
    got = memory().generate(["A free game for children.", None, "  "])
    assert got.text[0] == "Ein freies Spiel für Kinder." and got.text[1:] == [None, None]
    assert got.flag[1] == "missing text (None/NaN); not looked up" and got.flag[2] == "blank text; not looked up"
    with pytest.raises(DataError, match="one reference per text"):
        MemoryGenerator().fit(["a", "b"], ["x"])
    with pytest.raises(DataError, match=r"references must be texts: rows \[1\]"):
        MemoryGenerator().fit(["a", "b"], ["x", 3])
    with pytest.raises(ConfigError, match="got 1 hints for 2 inputs"):
        memory().generate(["a", "b"], hints=["draft"])
    with pytest.raises(ConfigError, match="answers about texts, not image"):
        memory().check_modality("image")


def test_as_first_stage_the_memory_settles_what_it_has_seen_and_the_model_gets_the_rest():
    large = FakeGenerator({NEW: ("Neu.", [0.9])} | {s: (t, [0.9]) for s, t in SEEN.items()}, name="large")
    shunt = ShuntGenerator([("memory", MemoryGenerator()), ("large", large)], thresholds=[0.95])
    shunt.fit(list(SEEN), list(SEEN.values()), list(SEEN), list(SEEN.values()))
    table = shunt.route(["This package contains the documentation.", NEW])
    assert table["text"].tolist() == ["Dieses Paket enthält die Dokumentation.", "Neu."]
    assert table["route"].tolist() == ["memory", "large"]
    assert shunt.stages_[1][1].calls == [NEW]  # only the new text cost a call


def test_save_and_load_keep_the_memory_and_refuse_a_tampered_one(tmp_path):
    from datashunt.io.persist import load, save

    model = ShuntGenerator(
        [("memory", MemoryGenerator()), ("large", _http_generator())], thresholds=[0.95], confidence="mean_proba"
    ).fit(list(SEEN), list(SEEN.values()), list(SEEN), list(SEEN.values()))
    folder = save(model, tmp_path / "m")
    loaded = load(folder, large_options={"large": {"model": "big", "base_url": "http://127.0.0.1:9/v1"}})
    assert (
        loaded.stages_[0][1].generate([NEW, "A free game for children."]).text
        == memory().generate([NEW, "A free game for children."]).text
    )
    with pytest.raises(ValueError, match="must hold only the memory's texts and answers"):
        MemoryGenerator().__setstate__({"texts": [], "code": "import os"})
    with pytest.raises(ValueError, match="two non-empty string arrays"):
        MemoryGenerator().__setstate__({"texts": ["a"], "answers": ["b"]})


def _http_generator():
    from datashunt.backends.generate.openai_chat import OpenAIChatGenerator

    return OpenAIChatGenerator("big", base_url="http://127.0.0.1:9/v1", instruction="Translate.")
