"""Load test of ``datashunt serve`` on loopback: /v1/classify at 1, 8 and 32 concurrent clients,
with and without micro-batching, against the in-process ``ShuntClassifier.predict`` rate.

The shunt: the demo's small model (MiniLM-L6 fine-tuned on the VADER movie sentences of the demo's
training split, seed 0) and, as its large stage, a replay of the sentences' gold labels (no LLM:
the service, not the LLM, is measured), δ calibrated on the demo's validation split for a budget
of 30% sent on (``max_large_rate``). It is saved to a folder and served by ``datashunt serve`` in
a subprocess; the clients (httpx, asyncio) run in this process, each sending requests of 8 test
sentences back to back for ``--seconds``. Self-stopping: at most about 2 minutes of load.

    .venv/bin/python benchmarks/serve_load.py --seed 0
"""

import argparse
import asyncio
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


def fit_shunt(seed: int, folder: Path):
    train, val, test = split(seed, 500, 300)  # the split of `datashunt demo`
    frame = pd.concat([train, val, test]).drop_duplicates("text")
    table = folder / "answers.csv"
    pd.DataFrame({"id": frame["text"], "prediction": frame["label"]}).to_csv(table, index=False)
    shunt = ShuntClassifier(make_small("minilm", random_state=seed), ReplayModel(str(table)),
                            policy="max_large_rate", max_large_rate=0.3, random_state=seed)
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
        shunt.predict(texts[i * ITEMS_PER_REQUEST:(i + 1) * ITEMS_PER_REQUEST])
        done += ITEMS_PER_REQUEST
    return done / (time.perf_counter() - start)


async def load(url: str, texts, concurrency: int, seconds: float, warmup: float = 2.0) -> dict:
    batches = [texts[i:i + ITEMS_PER_REQUEST] for i in range(0, len(texts) - ITEMS_PER_REQUEST + 1, ITEMS_PER_REQUEST)]
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

        await asyncio.gather(*[client_loop(k) for k in range(concurrency)])
        elapsed = time.perf_counter() - measure_from
    ms = np.array(latencies) * 1000
    return {"concurrency": concurrency, "seconds": round(elapsed, 2), "requests": len(latencies),
            "requests_per_s": len(latencies) / elapsed, "items_per_s": items / elapsed,
            "p50_ms": float(np.percentile(ms, 50)) if len(ms) else None,
            "p95_ms": float(np.percentile(ms, 95)) if len(ms) else None,
            "p99_ms": float(np.percentile(ms, 99)) if len(ms) else None,
            "errors": errors, "small_share": small / items if items else None}


def serve(folder: Path, micro_batching: bool):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [str(Path(sys.executable).parent / "datashunt"), "serve", str(folder / "model"), "--config",
               str(folder / "serve.toml"), "--port", str(port), "--max-concurrency", "64",
               "--micro-batching" if micro_batching else "--no-micro-batching"]
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


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seconds", type=float, default=15.0, help="Measured seconds per run (after 2 s warm-up).")
    args = parser.parse_args()
    command = "python benchmarks/serve_load.py " + " ".join(sys.argv[1:])
    print(command, flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        shunt, texts = fit_shunt(args.seed, folder)
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
        "command": command, "seed": args.seed, "machine": f"{platform.machine()}, 2 CPU cores, no GPU",
        "items_per_request": ITEMS_PER_REQUEST, "threshold": shunt.threshold_,
        "large": "replay of the gold labels (the service is measured, not an LLM)",
        "in_process_items_per_s": rate, "runs": runs,
        "bar": {"zero_errors_at_32": all(r["errors"] == 0 for r in runs if r["concurrency"] == 32),
                "best_items_per_s_at_32_vs_in_process": best32 / rate,
                "met": all(r["errors"] == 0 for r in runs if r["concurrency"] == 32) and best32 >= 0.5 * rate},
    }
    (RESULTS / "serve_load.json").write_text(json.dumps(results, indent=1))
    print(json.dumps(results["bar"]), flush=True)


if __name__ == "__main__":
    main()
