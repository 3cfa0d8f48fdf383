"""The three demonstrations behind ``datashunt demo``, ``demo-images`` and ``demo-generate``:
each builds a task from data the setup installed, fits a shunt, compares it with each model
alone on held-out items and writes a report folder."""

import time
from pathlib import Path

import numpy as np
from rich.markup import escape
from sklearn.model_selection import train_test_split

from .backends.fewshot import FewShotImageModel
from .backends.generate.llama_cpp import LlamaCppGenerator
from .backends.llama_cpp import LlamaCppModel
from .display import console, say_destination, show_generation, show_groups, show_summary, with_progress
from .estimators.generator import ShuntGenerator
from .estimators.shunt import ShuntClassifier
from .eval.compare import collaboration, compare, describe_calibration, describe_collaboration, write_report
from .eval.generation import compare_generation
from .eval.generation import describe_calibration as describe_generation
from .eval.generation import write_report as write_generation_report
from .io.datasets.ddtp import translation_instruction, translation_task
from .io.datasets.fashion_mnist import long_tailed_task
from .io.datasets.vader import load_vader
from .jobs.paths import check_output_folder
from .small import make_small

DEMO_INSTRUCTION = "Is the sentiment of this movie review sentence positive or negative?"


def sentiment(
    *, small: str, model: str, n_validation: int, calibration_calls: int, n_test: int, policy: str, seed: int, out: Path
) -> None:
    """Movie-review sentiment end to end: small only, large only and Data Shunt on held-out sentences.

    δ comes with a promise certified on ``n_validation`` labelled sentences: the small model is
    judged on all of them from their labels, the LLM asked about at most ``calibration_calls``.
    """
    from .io.persist import save  # noqa: PLC0415 (io.persist loads skops: kept off the CLI's start)

    check_output_folder(out, "--out")
    frame = load_vader("movies")
    rest, test = train_test_split(frame, test_size=n_test, random_state=seed, stratify=frame["label"])
    train, val = train_test_split(rest, test_size=n_validation, random_state=seed, stratify=rest["label"])
    console.print(f"VADER movie sentences: train {len(train)}, validation {len(val)}, test {len(test)} (seed {seed})")
    large = LlamaCppModel(model, prompt=DEMO_INSTRUCTION)
    say_destination(large)
    shunt = with_progress(
        ShuntClassifier(
            make_small(small, random_state=seed),
            large,
            policy=policy,
            max_calibration_calls=calibration_calls,
            random_state=seed,
        )
    )
    start = time.perf_counter()
    shunt.fit(train["text"], train["label"], X_val=val["text"], y_val=val["label"])
    console.print(
        escape(
            f"fitted in {time.perf_counter() - start:.0f} s; δ = {shunt.threshold_:.4f}; "
            f"{describe_calibration(shunt.calibration_)}"
        )
    )
    evaluation = compare(shunt, test["text"], test["label"], progress=True)
    show_summary(evaluation, f"held-out test, {len(test)} sentences")
    console.print(escape(describe_collaboration(collaboration(shunt, evaluation))))
    info = {
        "command": "datashunt demo",
        "small": small,
        "large": model,
        "seed": seed,
        "n_train": len(train),
        "n_validation": len(val),
        "calibration_calls": calibration_calls,
        "n_test": len(test),
        "seconds": round(time.perf_counter() - start, 1),
    }
    write_report(out, evaluation, shunt, info, texts=test["text"])
    save(shunt, out / "model")
    console.print(f"report: {out}/report.html (one page), {out}/report.json, fitted shunt: {out}/model")


def long_tailed_images(
    *,
    small: str,
    epochs: int,
    ratio: float,
    shots: int,
    n_validation: int,
    n_test: int,
    max_large_rate: float,
    seed: int,
    out: Path,
) -> None:
    """Long-tailed Fashion-MNIST: a ResNet-32 trained on the long tail against a few-shot generalist, by group.

    δ follows the paper's setting, a budget of large calls: the most accurate δ on validation whose
    share sent stays within ``max_large_rate`` with probability 0.9. (Here the small model is the
    more accurate one overall, so the default ``match_large`` would keep every image.)
    """
    from .io.persist import save  # noqa: PLC0415 (io.persist loads skops: kept off the CLI's start)

    check_output_folder(out, "--out")
    task = long_tailed_task(ratio, n_validation=n_validation, random_state=seed)
    rng = np.random.default_rng(seed)
    per_class = max(n_test // 10, 1)
    test = np.concatenate(
        [rng.choice(np.flatnonzero(task.y_test == c), per_class, replace=False) for c in np.unique(task.y_test)]
    )
    console.print(
        f"Fashion-MNIST-LT (ratio {ratio:g}): train {len(task.y_train)} images "
        f"({', '.join(f'{c} {n}' for c, n in task.counts.items())}), validation {len(task.y_val)}, "
        f"test {len(test)} (seed {seed})"
    )
    large = FewShotImageModel(shots=shots, random_state=seed)
    say_destination(large)
    shunt = with_progress(
        ShuntClassifier(
            make_small(small, epochs=epochs, random_state=seed),
            large,
            policy="max_last_rate",
            max_large_rate=max_large_rate,
            random_state=seed,
        )
    )
    start = time.perf_counter()
    shunt.fit(task.X_train, task.y_train, X_val=task.X_val, y_val=task.y_val)
    console.print(
        escape(
            f"fitted in {time.perf_counter() - start:.0f} s; δ = {shunt.threshold_:.4f}; "
            f"{describe_calibration(shunt.calibration_)}"
        )
    )
    evaluation = compare(shunt, task.X_test[test], task.y_test[test], progress=True, groups=task.group_of)
    show_summary(evaluation, f"held-out test, {len(test)} images")
    show_groups(evaluation.per_group)
    info = {
        "command": "datashunt demo-images",
        "small": small,
        "epochs": epochs,
        "ratio": ratio,
        "max_large_rate": max_large_rate,
        "large": large.describe() + " (a few-shot stand-in for zero-shot CLIP)",
        "seed": seed,
        "n_train": len(task.y_train),
        "n_validation": len(task.y_val),
        "n_test": len(test),
    }
    write_report(out, evaluation, shunt, info)
    save(shunt, out / "model")
    console.print(f"report: {out}/report.json, figure: {out}/sweep.png, fitted shunt: {out}/model")


def translation(
    *,
    lang: str,
    small: str,
    large: str,
    shots: int,
    n_validation: int,
    n_test: int,
    tolerance: float,
    seed: int,
    out: Path,
) -> None:
    """Debian package synopses into German: a small and a large model shown the same examples, Data Shunt.

    Items are English one-line synopses, references the translations Debian's volunteers wrote.
    Both models see the ``shots`` closest training pairs, so the large model is at its best and
    routing, not prompting, makes the difference. δ keeps the fewest items on the large model
    whose validation chrF is at least the large model's alone, less ``tolerance`` chrF points.
    """
    from .io.persist import save  # noqa: PLC0415 (io.persist loads skops: kept off the CLI's start)

    check_output_folder(out, "--out")
    train, val, test = translation_task(lang, n_validation, n_test, seed)
    console.print(
        f"Debian synopses English -> {lang}: {len(train)} training pairs (examples only), "
        f"validation {len(val)}, test {len(test)} (seed {seed})"
    )
    ask = translation_instruction(lang)
    stages = [
        ("small", LlamaCppGenerator(small, instruction=ask, shots=shots, stop=["\n"], max_new_tokens=64)),
        ("large", LlamaCppGenerator(large, instruction=ask, shots=shots, stop=["\n"], max_new_tokens=64)),
    ]
    shunt = ShuntGenerator(stages, metric="chrf", tolerance=tolerance, random_state=seed, progress=True)
    say_destination(shunt)
    start = time.perf_counter()
    shunt.fit(train.text.tolist(), train.reference.tolist(), val.text.tolist(), val.reference.tolist())
    console.print(
        escape(
            f"fitted in {time.perf_counter() - start:.0f} s; δ = {shunt.thresholds_[0]:.4f}; "
            f"{describe_generation(shunt.calibration_)}"
        )
    )
    evaluation = compare_generation(shunt, test.text.tolist(), test.reference.tolist())
    show_generation(evaluation, f"held-out test, {len(test)} synopses (chrF, sacrebleu)")
    info = {
        "command": "datashunt demo-generate",
        "lang": lang,
        "small": f"{small}, {shots} retrieved examples",
        "large": f"{large}, {shots} retrieved examples",
        "tolerance": tolerance,
        "seed": seed,
        "n_train": len(train),
        "n_validation": len(val),
        "n_test": len(test),
    }
    write_generation_report(out, evaluation, shunt, info)
    save(shunt, out / "model")
    console.print(f"report: {out}/report.json, routes: {out}/routes.csv, fitted shunt: {out}/model")
