"""The Ray Data engine (``datashunt predict --engine ray``, the ``ray`` extra): the same job as
:func:`datashunt.jobs.batch.run_batch`, for inputs and clusters larger than one machine.

It runs every kind of saved model (a shunt, a cascade, a generator) through the same engine.
Ray Data reads the input in blocks; every stage but the last (:meth:`~datashunt.estimators.engine.Engine.first_stages`)
runs with ``map_batches`` on a pool of actors, each holding the loaded model; a second, smaller
pool finishes each batch with :meth:`~datashunt.estimators.engine.Engine.route`, which asks the
last stage only about the items still open, so the pool's size bounds the calls in flight. Rows
keep their order and the output, a folder of Parquet files, holds the same rows and values as the
local engine's. Answers go through the call cache (one SQLite file per machine, shared by its workers).

Point it at a running cluster with ``RAY_ADDRESS`` (or :func:`ray.init` with ``address=`` before
calling :func:`run_ray`); without one, a local Ray instance is started.
"""

import os
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pyarrow import csv

from ..estimators.engine import PARTIAL
from ..exceptions import ConfigError, DataError, require
from ..io.config import model_options
from ..io.datasets.files import as_text
from .batch import exclusive
from .paths import check_distinct


def _load(folder, cfg: dict, trust: bool):
    from ..io.persist import load  # noqa: PLC0415 (io.persist loads skops at import)

    return load(folder, large_options=model_options(cfg), trust_saved_locations=trust)


class EarlyStages:
    """A Ray actor: the answers of every stage but the last for each batch."""

    def __init__(self, folder, cfg, trust, column):
        self.model, self.column = _load(folder, cfg, trust), column

    def __call__(self, batch):
        first = self.model.first_stages(as_text(batch[self.column]).to_numpy())
        return pd.concat([batch.reset_index(drop=True), first], axis=1)


class LastStage:
    """A Ray actor: routes each batch, asking the last stage only about the items still open."""

    def __init__(self, folder, cfg, trust, column, item_name, keep):
        self.model, self.column, self.item_name, self.keep = _load(folder, cfg, trust), column, item_name, keep

    def __call__(self, batch):
        first = batch[[c for c in batch.columns if c.startswith(PARTIAL)]].reset_index(drop=True)
        table = self.model.route(as_text(batch[self.column]).to_numpy(), first_stage=first)
        table.insert(0, self.item_name, batch[self.column].to_numpy())
        for extra in reversed([c for c in self.keep if c != self.column]):
            table.insert(0, extra, batch[extra].to_numpy())
        return table


def _read(ray, path: Path, columns: list, column: str):
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        return ray.data.read_csv(
            str(path),
            parse_options=csv.ParseOptions(delimiter="\t" if suffix == ".tsv" else ","),
            convert_options=csv.ConvertOptions(
                column_types={column: pa.string()}, strings_can_be_null=True, include_columns=columns
            ),
        )
    if suffix == ".jsonl":
        return ray.data.read_json(str(path), lines=True).select_columns(columns)
    if suffix == ".parquet":
        return ray.data.read_parquet(str(path), columns=columns)
    raise DataError(f"{path}: the Ray engine reads .csv, .tsv, .jsonl or .parquet, not {suffix!r}")


def run_ray(
    folder,
    cfg: dict,
    input_path,
    output,
    *,
    column: str,
    item_name: str,
    keep=(),
    chunk_rows: int = 10_000,
    trust_locations: bool = False,
    small_workers: int = 1,
    large_workers: int = 1,
) -> int:
    """Route every row of ``input_path`` with the shunt saved in ``folder`` into ``output`` (a folder
    of Parquet files) on Ray Data; returns the number of rows. ``cfg`` is the config the large
    model's location comes from, as for the local engine."""
    ray = require("ray", "ray")
    input_path, output = Path(input_path), Path(output)
    if output.suffix.lower() != ".parquet":
        raise ConfigError(f"the Ray engine writes Parquet: give an output ending in .parquet, not {output.name!r}")
    if not input_path.is_file():
        raise DataError(f"{input_path}: no such file")
    check_distinct(input_path, output)
    _load(folder, cfg, trust_locations)  # a folder that cannot load fails here, before Ray starts
    if not ray.is_initialized():
        address = os.environ.get("RAY_ADDRESS")
        # A local instance gets at least 4 logical CPUs: the reader, the small-model actor and the
        # large-model actor must all be placed at once (on 2 cores, Ray would wait for ever).
        ray.init(
            address=address,
            num_cpus=None if address else max(os.cpu_count() or 1, 4),
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
        )
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # the output keeps the input's order
    context.enable_progress_bars = False
    columns = [column] + [c for c in keep if c != column]
    data = _read(ray, input_path, columns, column)
    data = data.map_batches(
        EarlyStages,
        fn_constructor_args=(folder, cfg, trust_locations, column),
        batch_size=chunk_rows,
        batch_format="pandas",
        concurrency=small_workers,
    )
    data = data.map_batches(
        LastStage,
        fn_constructor_args=(folder, cfg, trust_locations, column, item_name, list(keep)),
        batch_size=chunk_rows,
        batch_format="pandas",
        concurrency=large_workers,
        num_cpus=0.25,
    )
    with exclusive(output):
        if output.is_dir():
            for old in output.glob("*.parquet"):
                old.unlink()
        data.write_parquet(str(output))
    return sum(pq.ParquetFile(part).metadata.num_rows for part in output.glob("*.parquet"))
