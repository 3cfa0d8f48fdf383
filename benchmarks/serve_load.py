"""Load test of ``datashunt serve`` on loopback: /v1/classify at 1, 8 and 32 concurrent clients,
with and without micro-batching, against the in-process ``ShuntClassifier.predict`` rate.

The shunt: the demo's small model (MiniLM-L6 fine-tuned on the VADER movie sentences of the demo's
training split, seed 0) and, as its large stage, a replay of the sentences' gold labels (no LLM:
the service, not the LLM, is measured), δ calibrated on the demo's validation split for a budget
of 30% sent on (``max_large_rate``). It is saved to a folder and served by ``datashunt serve`` in
a subprocess; the clients (httpx, asyncio) run in this process, each sending requests of 8 test
sentences back to back for ``--seconds``. Self-stopping: at most about 2 minutes of load.

    .venv/bin/python benchmarks/serve_load.py --seed 0

``--mixed`` measures instead whether bad clients hurt good ones (``serve_load_mixed.json``): 32
normal clients alone, then the same 32 with 16 slow-body connections (each declares a body and
trickles it one byte every half second) and 8 poisoned clients (lone surrogates, deep JSON, bodies
over ``max_body_bytes`` with and without Content-Length, bodies that are not JSON or not a list of
items, one after another with a 0.1 s pause) mixed in. It reports the normal clients' errors and
latency in both runs and the statuses the bad clients got, by kind.

    .venv/bin/python benchmarks/serve_load.py --seed 0 --mixed
"""

import argparse
import asyncio
import collections
import json
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
from core import RESULTS, split

from datashunt import ShuntClassifier
from datashunt.backends.replay import ReplayModel
from datashunt.io.persist import save
from datashunt.small import make_small

ITEMS_PER_REQUEST = 8
MAX_BODY_BYTES = 1 << 20  # the service's default max_body_bytes
SLOW_BODY_BYTES, TRICKLE_SECONDS = 2_000, 0.5


def fit_shunt(seed: int, folder: Path, small: str = "minilm"):
    train, val, test = split(seed, 500, 300)  # the test sentences of `datashunt demo`; 500 to calibrate on
    frame = pd.concat([train, val, test]).drop_duplicates("text")
    table = folder / "answers.csv"
    pd.DataFrame({"id": frame["text"], "prediction": frame["label"]}).to_csv(table, index=False)
    shunt = ShuntClassifier(
        make_small(small, random_state=seed),
        ReplayModel(str(table)),
        policy="max_large_rate",
        max_large_rate=0.3,
        confidence="max_proba",
        random_state=seed,
    )
    start = time.perf_counter()
    shunt.fit(train["text"], train["label"], X_val=val["text"], y_val=val["label"])
    print(f"fitted in {time.perf_counter() - start:.0f} s; δ = {shunt.threshold_:.4f}", flush=True)
    save(shunt, folder / "model")
    (folder / "serve.toml").write_text(f'[large]\nbackend = "replay"\ntable = "{table}"\n')
    return shunt, test["text"].tolist()


def in_process(shunt, texts, seconds: float) -> float:
    """Items per second of ``shunt.predict`` on batches of 8, one after another."""
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        i = (done // ITEMS_PER_REQUEST) % (len(texts) // ITEMS_PER_REQUEST)
        shunt.predict(texts[i * ITEMS_PER_REQUEST : (i + 1) * ITEMS_PER_REQUEST])
        done += ITEMS_PER_REQUEST
    return done / (time.perf_counter() - start)


async def load(url: str, texts, concurrency: int, seconds: float, warmup: float = 2.0, bad=()) -> dict:
    """Normal clients' throughput and latency; ``bad`` clients (coroutine functions of the URL and
    the stop time, returning a Counter of (kind, outcome)) run alongside, and their tally is returned."""
    batches = [
        texts[i : i + ITEMS_PER_REQUEST] for i in range(0, len(texts) - ITEMS_PER_REQUEST + 1, ITEMS_PER_REQUEST)
    ]
    latencies, errors, small, items = [], 0, 0, 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        begin = time.perf_counter()
        measure_from, stop_at = begin + warmup, begin + warmup + seconds

        async def client_loop(k):
            nonlocal errors, small, items
            j = k
            while (now := time.perf_counter()) < stop_at:
                try:
                    answer = await client.post("/v1/classify", json={"items": batches[j % len(batches)]})
                    ok = answer.status_code == 200
                except httpx.HTTPError:
                    ok = False
                end = time.perf_counter()
                j += concurrency
                if now < measure_from:
                    continue
                if not ok:
                    errors += 1
                    continue
                latencies.append(end - now)
                routes = [r["route"] for r in answer.json()["results"]]
                small += sum(r == "small" for r in routes)
                items += len(routes)

        tallies = await asyncio.gather(
            *[client_loop(k) for k in range(concurrency)], *[client(url, stop_at) for client in bad]
        )
        elapsed = time.perf_counter() - measure_from
    ms = np.array(latencies) * 1000
    got = sum((t for t in tallies if t), collections.Counter())
    tally = {
        kind: dict(sorted((outcome, n) for (k, outcome), n in got.items() if k == kind))
        for kind in sorted({k for k, _ in got})
    }
    run = {
        "concurrency": concurrency,
        "seconds": round(elapsed, 2),
        "requests": len(latencies),
        "requests_per_s": len(latencies) / elapsed,
        "items_per_s": items / elapsed,
        "p50_ms": float(np.percentile(ms, 50)) if len(ms) else None,
        "p95_ms": float(np.percentile(ms, 95)) if len(ms) else None,
        "p99_ms": float(np.percentile(ms, 99)) if len(ms) else None,
        "errors": errors,
        "small_share": small / items if items else None,
    }
    return {**run, "bad_clients": tally} if bad else run


def poisoned_bodies() -> dict:
    """Requests no normal client sends, by kind: (body bytes or chunks, the status the service should give)."""
    huge = b'{"items": ["' + b"x" * MAX_BODY_BYTES + b'"]}'
    return {
        "lone_surrogate": (b'{"items": ["fine", "x \\ud800"]}', 200),  # answered, the bad item flagged
        "deep_json": (b"[" * 100_000 + b"]" * 100_000, 400),
        "huge_body": (huge, 413),
        "huge_chunked_body": ([huge[i : i + 65536] for i in range(0, len(huge), 65536)], 413),
        "not_json": (b'{"items": ["unfinished', 422),
        "items_not_a_list": (b'{"items": "one text"}', 422),
        "odd_items": (b'{"items": [null, {"a": 1}, 42, ""]}', 200),  # answered, every item flagged
    }


async def chunked(parts: list):
    """A body sent in chunks, without Content-Length."""
    for part in parts:
        yield part


async def poisoned_client(url: str, stop_at: float, offset: int = 0) -> collections.Counter:
    """Sends the poisoned bodies in turn until ``stop_at``; counts (kind, status or error) per request."""
    tally, kinds = collections.Counter(), list(poisoned_bodies().items())
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        k = offset
        while time.perf_counter() < stop_at:
            kind, (body, _) = kinds[k % len(kinds)]
            content = chunked(body) if isinstance(body, list) else body
            try:
                answer = await client.post(
                    "/v1/classify", content=content, headers={"Content-Type": "application/json"}
                )
                tally[kind, str(answer.status_code)] += 1
            except httpx.HTTPError as exc:
                tally[kind, type(exc).__name__] += 1
            k += 1
            await asyncio.sleep(0.1)
    return tally


async def slow_body_client(url: str, stop_at: float) -> collections.Counter:
    """One connection at a time that declares a body and trickles it; counts what the service answered."""
    host, port = url.removeprefix("http://").split(":")
    tally = collections.Counter()
    head = (
        f"POST /v1/classify HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {SLOW_BODY_BYTES}\r\n\r\n"
    ).encode()
    while time.perf_counter() < stop_at:
        reader, writer = await asyncio.open_connection(host, int(port))
        status = asyncio.create_task(reader.readline())
        try:
            writer.write(head + b'{"items": ["')
            while not status.done() and time.perf_counter() < stop_at:
                writer.write(b"x")
                await writer.drain()
                await asyncio.wait([status], timeout=TRICKLE_SECONDS)
            if status.done():
                line = status.result()
                tally["slow_body", line.split(b" ")[1].decode() if line else "closed"] += 1
        except OSError as exc:
            tally["slow_body", type(exc).__name__] += 1
        finally:
            status.cancel()
            writer.close()
    return tally


def serve(folder: Path, micro_batching: bool):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [
        str(Path(sys.executable).parent / "datashunt"),
        "serve",
        str(folder / "model"),
        "--config",
        str(folder / "serve.toml"),
        "--port",
        str(port),
        "--max-concurrency",
        "64",
        "--micro-batching" if micro_batching else "--no-micro-batching",
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(url + "/readyz").status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("the service did not start")


def mixed(folder: Path, texts, seconds: float, command: str, out: Path, threshold: float, body_timeout: float) -> None:
    """The 32 normal clients alone, then with slow-body and poisoned clients mixed in (module docstring)."""
    with open(folder / "serve.toml", "a") as config:
        config.write(f"[serve]\nbody_timeout = {body_timeout}\n")
    expected = {kind: str(status) for kind, (_, status) in poisoned_bodies().items()}
    expected["slow_body"] = "408"
    bad = [slow_body_client] * 16 + [lambda url, stop, k=k: poisoned_client(url, stop, k) for k in range(8)]
    runs = {}
    process, url = serve(folder, True)
    try:
        for name, clients in (("alone", ()), ("mixed", bad)):
            runs[name] = asyncio.run(load(url, texts, 32, seconds, bad=clients))
            print(name, json.dumps(runs[name]), flush=True)
    finally:
        process.terminate()
        process.wait(10)
    alone, mixed_run = runs["alone"], runs["mixed"]
    unexpected = {
        kind: {o: n for o, n in outcomes.items() if o != expected[kind]}
        for kind, outcomes in mixed_run["bad_clients"].items()
    }
    results = {
        "command": command,
        "machine": f"{platform.machine()}, 2 CPU cores, no GPU",
        "threshold": threshold,
        "service": f"datashunt serve, micro-batching, --max-concurrency 64, body_timeout {body_timeout:g} s, "
        "other settings at their defaults",
        "normal_clients": 32,
        "slow_body_connections": 16,
        "poisoned_clients": 8,
        "expected_status": expected,
        "alone": alone,
        "mixed": mixed_run,
        "bar": {
            "normal_errors_mixed": mixed_run["errors"],
            "p99_mixed_vs_alone": (mixed_run["p99_ms"] / alone["p99_ms"]) if alone["p99_ms"] else None,
            "bad_clients_unexpected": {k: v for k, v in unexpected.items() if v},
            "met": mixed_run["errors"] == 0 and not any(unexpected.values()),
        },
    }
    out.write_text(json.dumps(results, indent=1))
    print(json.dumps(results["bar"]), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seconds", type=float, default=15.0, help="Measured seconds per run (after 2 s warm-up).")
    parser.add_argument("--mixed", action="store_true", help="Normal clients with slow and poisoned ones mixed in.")
    parser.add_argument("--small", default="minilm", help="The small model (tfidf: a quick check of the script).")
    parser.add_argument("--out", type=Path, default=None, help="Results file (default: benchmarks/results/).")
    parser.add_argument("--body-timeout", type=float, default=10.0, help="--mixed: the service's body_timeout.")
    args = parser.parse_args()
    command = "python benchmarks/serve_load.py " + " ".join(sys.argv[1:])
    print(command, flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        shunt, texts = fit_shunt(args.seed, folder, args.small)
        if args.mixed:
            mixed(
                folder,
                texts,
                args.seconds,
                command,
                args.out or RESULTS / "serve_load_mixed.json",
                shunt.threshold_,
                args.body_timeout,
            )
            return
        rate = in_process(shunt, texts, args.seconds)
        print(f"in process: {rate:.1f} items/s", flush=True)
        runs = []
        for micro in (True, False):
            process, url = serve(folder, micro)
            try:
                for concurrency in (1, 8, 32):
                    run = {"micro_batching": micro, **asyncio.run(load(url, texts, concurrency, args.seconds))}
                    run["vs_in_process"] = run["items_per_s"] / rate
                    runs.append(run)
                    print(json.dumps(run), flush=True)
            finally:
                process.terminate()
                process.wait(10)
    best32 = max(r["items_per_s"] for r in runs if r["concurrency"] == 32)
    results = {
        "command": command,
        "seed": args.seed,
        "machine": f"{platform.machine()}, 2 CPU cores, no GPU",
        "items_per_request": ITEMS_PER_REQUEST,
        "threshold": shunt.threshold_,
        "large": "replay of the gold labels (the service is measured, not an LLM)",
        "in_process_items_per_s": rate,
        "runs": runs,
        "bar": {
            "zero_errors_at_32": all(r["errors"] == 0 for r in runs if r["concurrency"] == 32),
            "best_items_per_s_at_32_vs_in_process": best32 / rate,
            "met": all(r["errors"] == 0 for r in runs if r["concurrency"] == 32) and best32 >= 0.5 * rate,
        },
    }
    (args.out or RESULTS / "serve_load.json").write_text(json.dumps(results, indent=1))
    print(json.dumps(results["bar"]), flush=True)


if __name__ == "__main__":
    main()
