"""Markdown tables (pasted into benchmarks/README.md) and figures from the committed results.

.venv/bin/python benchmarks/tables.py
"""

import json
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def core_tables(result: dict) -> str:
    made = {}  # the command behind each small model's row
    for name, r in result["small_models"].items():
        made.setdefault(r.get("command", result["command"]), []).append(name)
    lines = [
        "; ".join(f"`{command}` ({', '.join(names)})" for command, names in made.items())
        + f" (seed {result['seed']}; train {result['n_train']}, validation "
        f"{result['n_validation']}, test {result['n_test']}; large model {result['large']})",
        "",
        "| small model | calibrated on | small only | large only | Data Shunt (default: guaranteed) "
        "| sent to large (test) | δ | sent to large (validation) | point estimate (`match_z=0`) | sent to large "
        "| former default (`match_z=2`) | sent to large | fit + calibration (s) | calibration calls |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in result["small_models"].items():
        rows = {row["system"]: row for row in r["summary"]}
        point, guarded = r["point_estimate_match_z_0"], r["point_estimate_match_z_2"]
        pool = r["calibration"]["n_validation"]
        where = f"cv={r['cv']}: {pool:,} labels" if r.get("cv") else f"{pool:,} held out"
        lines.append(
            f"| {name} | {where} | {rows['small only']['accuracy']:.4f} | {rows['large only']['accuracy']:.4f} | "
            f"{rows['data shunt']['accuracy']:.4f} | {rows['data shunt']['large_rate']:.1%} | "
            f"{r['threshold']:.4f} | {r['calibration']['large_rate']:.1%} | {point['accuracy']:.4f} | "
            f"{point['large_rate']:.1%} | {guarded['accuracy']:.4f} | {guarded['large_rate']:.1%} | "
            f"{r['fit_seconds']:.0f} | {r['calibration'].get('large_calls', {}).get('asked', '')} |"
        )
    lines += [
        "",
        "| small model | small path, direct `predict_proba` (items/s) | through the shunt (items/s) | overhead |",
        "|---|---|---|---|",
    ]
    for name, r in result["small_models"].items():
        o = r["routing_overhead"]
        lines.append(
            f"| {name} | {o['direct_items_per_s']:,.0f} | {o['shunt_items_per_s']:,.0f} | {o['overhead']:+.1%} |"
        )
    speed = result.get("large_call_speed")
    if speed:
        s = speed["seconds_per_call"]
        lines += [
            "",
            f"Large calls ({speed['items']} test sentences, no cache): "
            f"{s['without_prefix_reuse']:.3f} s each without reusing the shared prompt prefix, "
            f"{s['with_prefix_reuse']:.3f} s with it"
            + (
                f", {s['with_prefix_reuse_4_per_decode']:.3f} s with four prompts per llama.cpp decode (the default)."
                if "with_prefix_reuse_4_per_decode" in s
                else "."
            ),
        ]
    return "\n".join(lines)


def sweep_table(result: dict, name: str, every: float = 0.1) -> str:
    """The validation sweep at a few large-call rates, for one small model."""
    sweep = result["small_models"][name]["validation_sweep"]
    lines = [f"| sent to large | accuracy ({name}, validation) | δ |", "|---|---|---|"]
    target = 0.0
    rates, deltas = sweep.get("last_rate", sweep.get("large_rate")), sweep.get("threshold_1", sweep.get("threshold"))
    for rate, acc, delta in zip(rates, sweep["accuracy"], deltas):  # older results name the columns as before
        if rate >= target - 1e-9:
            lines.append(f"| {rate:.0%} | {acc:.4f} | {'-' if delta is None else f'{delta:.4f}'} |")
            target += every
    return "\n".join(lines)


def calibration_table(result: dict) -> str:
    lines = [
        f"`{result['command']}` ({result['repeats']} random halves of {result['half']} validation sentences: "
        "δ calibrated on one half, judged on the other)",
        "",
        "| small model | `match_z` | shunt − LLM on the other half (mean) | 5th percentile | halves below the LLM "
        "| sent to the LLM (mean) |",
        "|---|---|---|---|---|---|",
    ]
    for name, rows in result["small"].items():
        for r in rows:
            if r.get("method", "match_z") == "match_z" and not r.get("tolerance"):
                lines.append(
                    f"| {name} | {r['match_z']:g} | {r['mean_gap']:+.4f} | {r['gap_5th_percentile']:+.4f} | "
                    f"{r['share_below_llm']:.0%} | {r['mean_large_rate']:.1%} |"
                )
    guaranteed = [(name, r) for name, rows in result["small"].items() for r in rows if r.get("method") == "guaranteed"]
    if guaranteed:
        lines += [
            "",
            "| small model | `confidence_level` | `tolerance` | shunt − LLM on the other half (mean) | "
            "5th percentile | halves below the LLM − tolerance (promise broken) | sent to the LLM (mean) |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, r in guaranteed:
            lines.append(
                f"| {name} | {r['confidence_level']:g} | {r['tolerance']:g} | {r['mean_gap']:+.4f} | "
                f"{r['gap_5th_percentile']:+.4f} | {r['share_below_tolerance']:.0%} | "
                f"{r['mean_large_rate']:.1%} |"
            )
    return "\n".join(lines)


def guarantee_table(result: dict) -> str:
    """Violation rate and share sent to the large model, per setting, method, alpha and epsilon."""
    calls = (
        f", at most {result['calibration_calls']} large answers for `guaranteed`"
        if "calibration_calls" in result
        else ""
    )
    command = result.get("commands", {}).get("match") or result["command"]
    lines = [
        f"`{command}` (seed {result['seed']}; {result['draws']} validation draws of "
        f"{result['n_validation']} items per setting{calls})",
        "",
        "| setting | ε | method | α | violation rate | bar (α + 0.01) | sent to large (mean) | large answers used |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(
        result["simulation"],
        key=lambda r: (
            result["settings"].index(r["setting"]),
            r["epsilon"],
            r["method"] != "point_estimate",
            r["method"],
            r["alpha"] or 0,
        ),
    ):
        alpha = "" if r["alpha"] is None else f"{r['alpha']:g}"
        bar = "" if r["alpha"] is None else ("met" if r["violation_rate"] <= r["alpha"] + 0.01 else "**missed**")
        used = f"{r['calls']:,.0f}" if "calls" in r else ""
        lines.append(
            f"| {r['setting']} | {r['epsilon']:g} | {r['method']} | {alpha} | {r['violation_rate']:.1%} | "
            f"{bar} | {r['large_share']:.1%} | {used} |"
        )
    if result.get("policies"):
        lines += [
            "",
            f"`{result['commands']['policies']}`: the stratified guarantees of the other policies (target: "
            "the large model's true accuracy - 0.02; a random sample of "
            f"{result['calibration_calls']} items asked)",
            "",
            "| setting | policy | goal | α | violation rate | bar (α + 0.01) | sent to large (mean) | "
            "true accuracy (mean) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in sorted(
            result["policies"],
            key=lambda r: (result["settings"].index(r["setting"]), r["policy"], r["goal"], r["alpha"]),
        ):
            bar = "met" if r["violation_rate"] <= r["alpha"] + 0.01 else "**missed**"
            lines.append(
                f"| {r['setting']} | {r['policy']} | {r['goal']:.3f} | {r['alpha']:g} | "
                f"{r['violation_rate']:.1%} | {bar} | {r['large_share']:.1%} | {r['mean_true_accuracy']:.4f} |"
            )
    if result.get("learned"):
        lines += [
            "",
            f"`{result['commands']['learned']}`: the match promise certified on a learned routing score "
            "(cross-fitted deferral, the deployed scorer judged on 200,000 items of the population) and on "
            "the raw confidence, on the same draws",
            "",
            "| setting | ε | routing score | α | violation rate | bar (α + 0.01) | sent to large (mean) | "
            "true gap to the large model (mean) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in sorted(result["learned"], key=lambda r: (r["setting"], r["epsilon"], r["score"], r["alpha"])):
            bar = "met" if r["violation_rate"] <= r["alpha"] + 0.01 else "**missed**"
            lines.append(
                f"| {r['setting']} | {r['epsilon']:g} | {r['score']} | {r['alpha']:g} | {r['violation_rate']:.1%} | "
                f"{bar} | {r['large_share']:.1%} | {r['mean_true_gap']:+.4f} |"
            )
    movies = result.get("movies_split_half")
    if movies:
        lines += [
            "",
            f'`{movies["command"]}`: the promise "accuracy >= the LLM\'s - 0.01" on {movies["halves"]} '
            f"random halves of {movies['half']} movie sentences (δ from one half, judged on the other)",
            "",
            "| small model | method | α | promise broken | sent to the LLM (mean) |",
            "|---|---|---|---|---|",
        ]
        for r in movies["records"]:
            alpha = "" if r["alpha"] is None else f"{r['alpha']:g}"
            lines.append(
                f"| {r['small']} | {r['method']} | {alpha} | {r['violation_rate']:.1%} | {r['large_share']:.1%} |"
            )
    return "\n".join(lines)


def ablation_tables(result: dict) -> str:
    """Table 4: overall, per group and routed accuracy per system; routed accuracy per class; 2CD rounds."""
    systems = result["systems"]
    tiers = [g for g, members in result["groups"].items() if members]  # none worth naming with two classes
    tiers = tiers if len(tiers) == 3 else []
    groups = "".join(f"; {g}: {', '.join(result['groups'][g])}" for g in tiers)
    lines = [
        f"`{result['command']}` (seed {result['seed']}; small model {result['small']}, large model "
        f"{result['large']}; train {result['n_train']}, validation {result['n_validation']}, test "
        f"{result['n_test']}, unlabeled pool {result['n_pool']}{groups})",
        "",
        "| system | accuracy | " + "".join(f"{g} | " for g in tiers) + "sent to the LLM | "
        "LLM accuracy on the items sent | LLM prompt tokens |",
        "|---|---|" + "---|" * len(tiers) + "---|---|---|",
    ]
    for name, r in systems.items():
        lines.append(
            f"| {name} | {r['accuracy']:.4f} | "
            + "".join(f"{_num(r[f'{g}_accuracy'])} | " for g in tiers)
            + f"{r['large_rate']:.1%} | {_num(r['large_accuracy_on_routed'])} | {r['large_prompt_tokens']:,} |"
        )
    pp = [name for name in systems if name.endswith(" PP")]
    lines += [
        "",
        "| class | " + " | ".join(f"LLM on items sent, {name}" for name in ["DS", *pp]) + " |",
        "|---|" + "---|" * (len(pp) + 1),
    ]
    for c in result["classes"]:
        cells = [systems[name]["per_class_routed_large_accuracy"].get(c) for name in ["DS", *pp]]
        lines.append(f"| {c} | " + " | ".join(_num(v, 3) for v in cells) + " |")
    if result.get("pp_validation"):
        lines += [
            "",
            "Prompt Pruning level chosen on validation (LLM accuracy on the validation items sent):",
            "",
            "| mode | level | classes the small model excels in | with PP | without |",
            "|---|---|---|---|---|",
        ]
        for r in result["pp_validation"]:
            lines.append(
                f"| {r['mode']} | {r['level']:g} | {', '.join(r['excelled_classes'])} | "
                f"{r['large_accuracy_on_routed']:.4f} | {r['plain']:.4f} |"
            )
    for name, r in systems.items():
        if "rounds" in r:
            lines += [
                "",
                f"{name}, round by round (test):",
                "",
                "| round | δ | accuracy | sent to the LLM | "
                "answered by the learnable copy | learned from s1 | learned from the LLM |",
                "|---|---|---|---|---|---|---|",
            ]
            for row in r["rounds"]:
                lines.append(
                    f"| {row['round']} | {row['threshold']:.4f} | {row['accuracy']:.4f} | "
                    f"{row['large_rate']:.1%} | {row['learnable_rate']:.1%} | {_count(row.get('n_from_small'))} | "
                    f"{_count(row.get('n_from_large'))} |"
                )
    return "\n".join(lines)


def cascade_table(result: dict) -> str:
    """Cascades of recorded APIs on the Yelp replay: every candidate, reported on the held-out half."""
    lines = [
        f"`{result['command']}` (seed {result['seed']}; calibrated on {result['n_calibration']:,} reviews, "
        f"reported on {result['n_report']:,}; tolerance {result['tolerance']:g})",
        "",
        "| cascade | thresholds | routing score | accuracy | cost / Google's | share reaching the last stage | "
        "random routing, same share | APGR | CPT(50%) | CPT(80%) | calibration half: accuracy, cost / Google's | "
        "fit seconds |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
        f"| Google alone | - | - | {result['google']['accuracy']:.4f} | 1.000 | 100% | - | - | - | - | - | - |",
        f"| Amazon alone | - | - | {result['amazon']['accuracy']:.4f} | {result['amazon']['cost_ratio']:.3f} | - | - | "
        "- | - | - | - | - |",
    ]
    scores = {None: "service's score (arrays)", "max_proba": "max_proba (Cascade)", "learned": "learned (Cascade)"}
    for r in result["all"]:
        peers = " | ".join(_num(r.get(k), 3) if k == "apgr" else _share(r.get(k)) for k in ("apgr", "cpt_50", "cpt_80"))
        lines.append(
            f"| {r['cascade']} | {r['thresholds']} | {scores[r.get('confidence')]}"
            f"{', combined answer' if r.get('combined_answer') else ''} | {r['accuracy']:.4f} | "
            f"{r['cost_ratio']:.3f} | {r['large_share']:.1%} | {r['random_routing_accuracy']:.4f} | {peers} | "
            f"{r['calibration_accuracy']:.4f}, {r['calibration_cost_ratio']:.3f} | {_num(r.get('fit_seconds'), 2)} |"
        )
    best = result["cascade"]
    score = f", {best['confidence']} routing score" if best.get("confidence") else ""
    score += ", combined answer" if best.get("combined_answer") else ""
    lines += [
        "",
        f"Chosen on the calibration half (cheapest meeting its goal there): **{best['cascade']}, "
        f"{best['thresholds']} thresholds{score}**: accuracy {best['accuracy']:.4f} against Google's "
        f"{result['google']['accuracy']:.4f}, cost ratio {best['cost_ratio']:.3f}.",
    ]
    return "\n".join(lines)


def overhead_table(result: dict) -> str:
    """Items per second on the small-model path: direct, through ShuntClassifier and through Cascade."""
    lines = [
        f"`{result['command']}` (seed {result['seed']})",
        "",
        "| small model | direct `predict_proba` (items/s) | `ShuntClassifier` (items/s) | overhead | "
        "two-stage `Cascade` (items/s) | overhead |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in result["small_models"].items():
        lines.append(
            f"| {name} | {r['direct_items_per_s']:,.0f} | {r['shunt_items_per_s']:,.0f} | "
            f"{r['shunt_overhead']:+.1%} | {r['cascade_items_per_s']:,.0f} | {r['cascade_overhead']:+.1%} |"
        )
    return "\n".join(lines)


def longtail_tables(result: dict) -> str:
    """Table 2 (per ratio: small only, large only, Data Shunt by group) and Table 4 (the ablation)."""
    lines = [
        f"`{result['command']}` (seed {result['seed']}; {result['n_test']:,} balanced test images; small: "
        f"{result['small']}; large: {result['large']}; δ: {result['policy']})",
        "",
        "| ratio | system | head | medium | tail | overall | sent to large |",
        "|---|---|---|---|---|---|---|",
    ]
    ratios = [key for key in result if key.startswith("imbalance_")]
    for key in ratios:
        r = result[key]
        for system, name in (
            ("small", "small only"),
            ("large", "large only (few-shot stand-in)"),
            ("ds", "Data Shunt, default policy"),
            ("ds_budget", "Data Shunt, budget"),
        ):
            row = r[system]
            share = {"small": "0%", "large": "100%"}.get(system) or _share(row["large_share"])
            lines.append(
                f"| {key.removeprefix('imbalance_')} | {name} | {row['head']:.4f} | {row['medium']:.4f} | "
                f"{row['tail']:.4f} | {row['overall']:.4f} | {share} |"
            )
    lines += [
        "",
        "| ratio | training images (head → rarest) | validation | k shots | δ (default) | δ (budget) | "
        "ResNet-32 training (s, 2 cores) |",
        "|---|---|---|---|---|---|---|",
    ]
    for key in ratios:
        r = result[key]
        counts = list(r["train_counts"].values())
        lines.append(
            f"| {key.removeprefix('imbalance_')} | {r['n_train']} ({counts[0]} → {counts[-1]}) | "
            f"{r['n_validation']} | {r['shots']} | {r['threshold']:.4f} | {r['ds_budget']['threshold']:.4f} | "
            f"{r['small_train_seconds']:.0f} |"
        )
    first = result[ratios[0]]
    ablation = [
        ("DS (budget)", first["ds_budget"]),
        ("DS-PP (soft)", first.get("ds_pp_soft")),
        ("DS-PP (hard)", first.get("ds_pp_hard")),
        ("DS-2CD", first.get("ds_2cd")),
        ("DS-PP(hard)-2CD", first.get("ds_pp_2cd")),
    ]
    lines += [
        "",
        f"Ablation at ratio {ratios[0].removeprefix('imbalance_')} on the budget's δ (the paper's Table 4):",
        "",
        "| system | head | medium | tail | overall | sent to large |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in ablation:
        if row is not None:
            lines.append(
                f"| {name} | {row['head']:.4f} | {row['medium']:.4f} | {row['tail']:.4f} | "
                f"{row['overall']:.4f} | {_share(row['large_share'])} |"
            )
    return "\n".join(lines)


def scoring_table(rows: list) -> str:
    """The paper's routing score against the learned one (and ``auto``'s choice): per row a name,
    then (label, accuracy, share sent, δ, scoring record or None) for each score tried."""
    lines = [
        "| setting | routing score | accuracy | sent to large | δ | ROC AUC on validation (max_proba / learned) |",
        "|---|---|---|---|---|---|",
    ]
    for name, scores in rows:
        for label, accuracy, share, delta, scoring in scores:
            figures = (scoring or {}).get("validation") or {}
            auc = " / ".join(f"{figures[k]:.3f}" for k in ("max_proba", "learned") if k in figures) or "-"
            used = f" (uses {scoring['used']})" if label == "auto" and scoring else ""
            lines.append(f"| {name} | {label}{used} | {accuracy:.4f} | {_share(share)} | {delta:.4f} | {auc} |")
    return "\n".join(lines)


def core_scoring_rows(result: dict) -> list:
    rows = []
    for name, entry in result["small_models"].items():
        if "learned" not in entry:
            continue
        ds = {row["system"]: row for row in entry["summary"]}["data shunt"]
        scores = [("max_proba", ds["accuracy"], ds["large_rate"], entry["threshold"], None)]
        for label in ("learned", "auto"):
            r = entry["learned"][label]
            scores.append((label, r["accuracy"], r["large_rate"], r["threshold"], r["scoring"]))
        rows.append((name, scores))
    return rows


def longtail_scoring_rows(result: dict) -> list:
    rows = []
    for key in (k for k in result if k.startswith("imbalance_")):
        r = result[key]
        for policy, base, learned in (("default", "ds", "ds_learned"), ("budget", "ds_budget", "ds_budget_learned")):
            if learned not in r:
                continue
            delta = r["threshold"] if base == "ds" else r[base]["threshold"]
            scores = [
                ("max_proba", r[base]["overall"], r[base]["large_share"], delta, None),
                (
                    "learned",
                    r[learned]["overall"],
                    r[learned]["large_share"],
                    r[learned]["threshold"],
                    r[learned]["scoring"],
                ),
            ]
            rows.append((f"ratio {key.removeprefix('imbalance_')}, {policy} policy", scores))
    return rows


def facets_table(result: dict) -> str:
    """Data Shunt+ on the Debian facets: each system's exact match, macro-F1 per subtask and LLM tokens."""
    facets = result["facets"]
    names = list(facets["small"]["macro_f1"])
    n = facets["n"]
    lines = [
        f"`{facets['command']}` (packages: {n['train']:,} train, {n['validation']} validation, {n['test']} test; "
        f"subtasks {', '.join(names)})",
        "",
        "| system | exact match | " + " | ".join(f"macro-F1 {x}" for x in names) + " | LLM tokens per item | "
        "items asking the LLM |",
        "|---|---|" + "---|" * len(names) + "---|---|",
    ]
    labels = {
        "small": "small only (TF-IDF per subtask)",
        "large": "large only (Qwen2.5-Coder-1.5B, zero-shot)",
        "large_informed": "large only, informed (candidates from the small model, retrieved examples)",
        "ds_item": "Data Shunt on whole items",
        "ds_plus": "Data Shunt+ (Subtasks, context; default policy)",
        "ds_plus_informed": "Data Shunt+ with the informed LLM (budget policy)",
        "ds_plus_informed_guarded": "Data Shunt+ with the informed LLM (budget policy, noise guard)",
    }
    for key, label in labels.items():
        if key not in facets:
            continue
        row = facets[key]
        asked = {"small": "0%", "large": "100%", "large_informed": "100%"}.get(key)
        if asked is None:
            asked = _share(row["large_share"] if key == "ds_item" else row["items_asking_large"])
        lines.append(
            f"| {label} | {row['exact_match']:.4f} | "
            + " | ".join(f"{row['macro_f1'][x]:.3f}" for x in names)
            + f" | {row['large_tokens_per_item']:.1f} | {asked} |"
        )
    return "\n".join(lines)


def segments_table(result: dict) -> str:
    """Data Shunt+ on Debian descriptions: whole-description chrF with its interval and the large model's tokens."""
    seg = result["segments"]
    n, noun = seg["n"], {"lines": "paragraph", "sentences": "sentence"}[seg["unit"]]
    lines = [
        f"`{seg['command']}` (descriptions of 3 to 6 sentences: {n['train']:,} train, {n['validation']} validation, "
        f"{n['test']} test; {seg['parts_per_item']:.2f} {noun}s per test description)",
        "",
        "| system | chrF (95% CI) | large tokens per item | vs large | large share | large calls per item |",
        "|---|---|---|---|---|---|",
    ]
    labels = {
        "small": f"small side alone (memory where sure, else 0.5B + 2 examples; by {noun})",
        "small_model_only": f"0.5B + 2 examples alone, {noun} by {noun}",
        "small_whole_descriptions": "0.5B + 1 example alone, whole descriptions",
        "large_parts": f"1.5B + 1 example alone, {noun} by {noun}",
        "large": "large only (1.5B + 1 example, whole descriptions)",
        "memory_then_large": f"memory where sure, 1.5B on every other {noun} (no budget)",
        "ds_item": "Data Shunt on whole descriptions (memory → 0.5B → 1.5B, default policy)",
        "ds_item_budget": "Data Shunt on whole descriptions, at the budget",
        "ds_plus": f"Data Shunt+ (Segments by {noun}, budget held; open ones together)",
        "ds_plus_one_by_one": f"Data Shunt+ budget held, one call per open {noun}",
        "ds_plus_match": f"Data Shunt+ by {noun}, default policy",
        "ds_plus_sentences": "Data Shunt+ by sentence, budget held",
    }
    large = seg["large"]["large_tokens_per_item"]
    for key, label in labels.items():
        row = seg.get(key)
        if row is None:
            continue
        low, high = row["ci95"]
        if key.startswith("ds_plus") or key == "memory_then_large":
            unit = {"lines": "paragraphs", "sentences": "sentences"}[row.get("unit", seg["unit"])]
            share = f"{_share(row['large_share_of_parts'])} of {unit}"
            if row.get("held_back_share_of_parts"):
                share += f" ({_share(row['held_back_share_of_parts'])} held back)"
        else:
            share = _share(row.get("large_share", 1.0 if key.startswith("large") else 0.0))
        calls = {"large": 1.0, "large_parts": seg["parts_per_item"]}.get(key)
        if key == "memory_then_large":
            calls = row["large_share_of_parts"] * seg["parts_per_item"]
        calls = row.get("large_calls_per_item", calls)
        calls = row.get("large_share") if calls is None else calls
        lines.append(
            f"| {label} | {row['quality']:.2f} ({low:.2f}–{high:.2f}) | {row['large_tokens_per_item']:.0f} | "
            f"{row['large_tokens_per_item'] / large:.2f} | {share} | {_num(calls, 2) if calls else '0'} |"
        )
    return "\n".join(lines)


def prompts_table(result: dict) -> str:
    """How the large model is asked about the paragraphs the memory leaves (validation only)."""
    probe = result["prompts"]
    labels = {
        "small_side": "not at all (the small side alone)",
        "large_whole": "the 1.5B model on the whole descriptions instead",
        "together_context": "together, with what the small side wrote around them (as the earlier `ds_plus` run did)",
        "together_plain": "together, without it",
        "one_by_one_context": "one by one, with it",
        "one_by_one_plain": "one by one, without it",
        "together_plain_0_shots": "together, without it, no retrieved example",
    }
    lines = [
        "| how the 1.5B model is asked about the open paragraphs | chrF | large tokens per item |",
        "|---|---|---|",
    ]
    best = max(probe[key]["quality"] for key in labels)
    for key, label in labels.items():
        quality = f"{probe[key]['quality']:.2f}"
        quality = f"**{quality}**" if probe[key]["quality"] == best else quality
        lines.append(f"| {label} | {quality} | {probe[key]['large_tokens_per_item']:.0f} |")
    return "\n".join(lines)


def finetune_table(result: dict) -> str:
    """Fine-tuning the model itself against Data Shunt over the frozen large model, per task."""
    lines = [
        "| task | system | accuracy | trained on | training s | inference s per item | large-model tokens per item |",
        "|---|---|---|---|---|---|---|",
    ]
    for task, entry in result["finetune"].items():
        if not isinstance(entry, dict) or "lora" not in entry:
            continue
        tuned = list(entry.get("lora_by_model", {"lora": entry["lora"]}).values())
        rows = [(row, row.get("model", "fine-tuned")) for row in tuned]
        rows.append((entry["ds_plus"], "Data Shunt (frozen large model)"))
        if "ds_plus_same_data" in entry:
            rows.append((entry["ds_plus_same_data"], "Data Shunt, small model on the fine-tune's items only"))
        for row, label in rows:
            tokens = row.get("large_tokens_per_item")
            lines.append(
                f"| {task} | {label} | {row['accuracy']:.4f} | {_count(row.get('n_train'))} | "
                f"{row.get('train_seconds', float('nan')):.0f} | {_num(row.get('inference_seconds_per_item'), 3)} | "
                f"{'-' if tokens is None else f'{tokens:.1f}'} |"
            )
    return "\n".join(lines)


CONFIG_NAMES = {
    "zero": "0.5B zero-shot → 1.5B zero-shot",
    "shots": "0.5B + examples → 1.5B zero-shot",
    "hint": "0.5B + examples → 1.5B zero-shot given the draft",
    "shots_both": "0.5B + examples → 1.5B + examples",
}


def generation_tables(result: dict) -> str:
    """Each configuration: small, large and Data Shunt (default policy, eq. 8 confidence) on the test
    split; every sequence confidence; the quality-share curve (Fig. 3)."""
    task = result["task"]
    lines = [
        f"`{result['command']}` ({task['data']}; {task['n_train']:,} training pairs used only as retrieved "
        f"examples, {task['shots']} per item; validation {task['n_validation']}, test {task['n_test']}; seed "
        f"{task['seed']}; chrF by sacrebleu, bootstrap 95% intervals over test items)",
        "",
        "| configuration | small only | large only (95% interval) | Data Shunt (95% interval) | sent to large | "
        "δ | s/item small | s/item large | s/item Data Shunt |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    tolerance = task.get("tolerance", [0.0])
    for name, r in result["configs"].items():
        ds = r["ds"]
        lines.append(
            f"| {CONFIG_NAMES.get(name, name)} | {r['small']['quality']:.1f} | {r['large']['quality']:.1f} "
            f"({r['large']['ci95'][0]:.1f}–{r['large']['ci95'][1]:.1f}) | {ds['quality']:.1f} "
            f"({ds['ci95'][0]:.1f}–{ds['ci95'][1]:.1f}) | {_share(ds['large_share'])} | "
            f"{ds['threshold']:.3f} | {r['small']['seconds_per_item']:.2f} | "
            f"{r['large']['seconds_per_item']:.2f} | {ds['seconds_per_item']:.2f} |"
        )
    commands = {r.get("command", result["command"]) for r in result["configs"].values()}
    if len(commands) > 1:
        lines += [
            "",
            "Made by: "
            + "; ".join(
                f"{CONFIG_NAMES.get(n, n)}: `{r.get('command', result['command'])}`"
                for n, r in result["configs"].items()
            ),
        ]
    measures = ("mean_proba", "geometric_mean", "min_proba", "length_normalised", "learned", "auto")
    lines += [
        "",
        "Data Shunt by routing score (chrF, share sent to large; `learned`: the quality estimator, "
        "`auto`: it where it ranks the validation texts better by more than one standard error):",
        "",
        "| configuration | tolerance | " + " | ".join(measures) + " |",
        "|---|---|" + "---|" * len(measures),
    ]
    for name, r in result["configs"].items():
        own = tolerance if r.get("command", result["command"]) == result["command"] else [0.0]
        for i, tol in enumerate(own):
            row = r if i == 0 else r.get(f"tolerance_{tol:g}", {})
            cells = [
                f"{row[m]['quality']:.1f} ({_share(row[m]['large_share'])})" if m in row else "-" for m in measures
            ]
            lines.append(f"| {CONFIG_NAMES.get(name, name)} | {tol:g} | " + " | ".join(cells) + " |")
    for name, r in result["configs"].items():
        scoring = r.get("auto", {}).get("scoring")
        if scoring and scoring.get("validation"):
            figures = scoring["validation"]
            lines += [
                "",
                f"{CONFIG_NAMES.get(name, name)}: on validation, Spearman's correlation with the quality "
                f"difference {figures['mean_proba']:.3f} (mean_proba) against {figures['learned']:.3f} (learned), "
                f"one standard error of the difference {scoring['difference_se']:.3f}: auto uses "
                f"{scoring['used']}; training the estimator took {r['learned']['deferral_seconds']:.2f} s.",
            ]
    shares = [row["share"] for row in next(iter(result["configs"].values()))["curve"]]
    lines += [
        "",
        "Test chrF when the least confident share goes to the large stage (the paper's Fig. 3):",
        "",
        "| configuration | " + " | ".join(f"{s:.0%}" for s in shares) + " |",
        "|---|" + "---|" * len(shares),
    ]
    for name, r in result["configs"].items():
        lines.append(
            f"| {CONFIG_NAMES.get(name, name)} | " + " | ".join(f"{row['quality']:.1f}" for row in r["curve"]) + " |"
        )
    return "\n".join(lines)


def serve_table(result: dict) -> str:
    """The load test: each run's throughput, latency and errors, against the in-process rate."""
    lines = [
        f"`{result['command']}` (seed {result['seed']}; {result['items_per_request']} items per request; "
        f"in process, `ShuntClassifier.predict` on batches of {result['items_per_request']}: "
        f"**{result['in_process_items_per_s']:,.0f} items/s**)",
        "",
        "| micro-batching | clients | requests/s | items/s | vs in process | p50 ms | p95 ms | p99 ms | errors "
        "| answered by small |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["runs"]:
        lines.append(
            f"| {'on' if r['micro_batching'] else 'off'} | {r['concurrency']} | {r['requests_per_s']:,.1f} | "
            f"{r['items_per_s']:,.0f} | {r['vs_in_process']:.0%} | {r['p50_ms']:,.0f} | {r['p95_ms']:,.0f} | "
            f"{r['p99_ms']:,.0f} | {r['errors']} | {_share(r['small_share'])} |"
        )
    return "\n".join(lines)


def demo_table(result: dict) -> str:
    """The main job on an empty cache: time, calls and the three systems on the test sentences."""
    return "\n".join(
        [
            f"`{result['command']}` (seed {result['seed']}; `{result['demo']}`)",
            "",
            "| wall clock | calibration LLM calls (of labelled) | small only | LLM only | Data Shunt | sent to the LLM "
            "| δ | promise |",
            "|---|---|---|---|---|---|---|---|",
            f"| {result['seconds']:.0f} s | {result['calibration_large_calls']} (of {result['n_validation']}) | "
            f"{result['small']['accuracy']:.4f} | {result['large']['accuracy']:.4f} | {result['ds']['accuracy']:.4f} | "
            f"{result['ds']['large_share']:.1%} | {result['threshold']:.4f} | {result['promise']}"
            f"{', certified' if result['promise_certified'] else ', not certified'} |",
        ]
    )


def mixed_load_table(result: dict) -> str:
    """The service with slow and poisoned clients mixed in: the normal clients' errors and latency."""
    lines = [
        f"`{result['command']}` ({result['service']}; {result['normal_clients']} normal clients, "
        f"{result['slow_body_connections']} slow-body connections, {result['poisoned_clients']} poisoned "
        "clients)",
        "",
        "| normal clients | requests | requests/s | errors | p50 ms | p99 ms |",
        "|---|---|---|---|---|---|",
    ]
    for name in ("alone", "mixed"):
        r = result[name]
        lines.append(
            f"| {name} | {r['requests']:,} | {r['requests_per_s']:,.1f} | {r['errors']} | "
            f"{r['p50_ms']:,.0f} | {r['p99_ms']:,.0f} |"
        )
    lines += ["", "| bad client | statuses it got | expected |", "|---|---|---|"]
    for kind, outcomes in result["mixed"]["bad_clients"].items():
        got = ", ".join(f"{status}: {n}" for status, n in outcomes.items())
        lines.append(f"| {kind} | {got} | {result['expected_status'][kind]} |")
    return "\n".join(lines)


def batch_table(result: dict) -> str:
    """The batch runs (100,000 and 1,000,000 rows)."""
    lines = [
        f"`{result['command']}` (seed {result['seed']})",
        "",
        "| rows | input | chunk rows | wall clock | rows/s | peak RSS | every id once, in order | routes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["runs"]:
        routes = ", ".join(f"{k} {v:,}" for k, v in r["routes"].items())
        lines.append(
            f"| {r['rows']:,} | {r['input_bytes'] / 2**20:,.0f} MiB CSV | {r['chunk_rows']:,} | "
            f"{r['seconds']:,.0f} s | {r['rows_per_s']:,.0f} | {r['peak_rss_mib']:,.0f} MiB | "
            f"{'yes' if r['ids_exactly_once'] else 'NO'} | {routes} |"
        )
    return "\n".join(lines)


def large_batch_table(result: dict) -> str:
    """Items per second of the local LLM by batch_size, and agreement with one at a time."""
    lines = [
        f"`{result['command']}` (seed {result['seed']}; {result['n']} movie sentences, {result['model']}, no cache)",
        "",
        "| batch_size | items/s | speedup | accuracy | largest probability difference | labels changed |",
        "|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['batch_size']} | {r['items_per_s']:.2f} | {r['speedup']:.2f}× | {r['accuracy']:.3f} | "
            f"{r['max_proba_difference']:.3f} | {r['label_changes']:.1%} |"
        )
    return "\n".join(lines)


def _share(value) -> str:
    return "-" if value is None or value != value else f"{value:.1%}"


def _num(value, digits=4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _count(value) -> str:
    return "-" if value is None or value != value else f"{int(value):,}"  # round 0 learned nothing: NaN


def core_figure(result: dict, path: Path) -> None:
    """The paper's Figure 3 on the test split: one panel per small model (δ was chosen on validation)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import pandas as pd

    from datashunt.eval.plotting import plot_sweep

    names = list(result["small_models"])
    cols = min(2, len(names))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.5 * cols, 4 * rows), squeeze=False)
    for ax, name in zip(axes.ravel(), names):
        r = result["small_models"][name]
        sweep = pd.DataFrame(r["test_sweep_for_figure_only"]).rename(
            columns={"threshold": "threshold_1", "large_rate": "last_rate"}  # older results
        )
        sweep = sweep.astype({"threshold_1": float}).fillna({"threshold_1": np.inf})
        plot_sweep(sweep, ax=ax, threshold=r["threshold"], label=name)
        ax.set_title(f"{name} + {result['large']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main():
    core = RESULTS / "core.json"
    if core.is_file():
        result = json.loads(core.read_text())
        print(core_tables(result))
        for name in result["small_models"]:
            print()
            print(sweep_table(result, name))
        core_figure(result, RESULTS / "core_sweep.png")
    if core.is_file() and core_scoring_rows(json.loads(core.read_text())):
        print()
        print(scoring_table(core_scoring_rows(json.loads(core.read_text()))))
    learned_longtail = RESULTS / "longtail_learned.json"
    if learned_longtail.is_file():
        print()
        print(scoring_table(longtail_scoring_rows(json.loads(learned_longtail.read_text()))))
    ds_plus = RESULTS / "ds_plus.json"
    plus = json.loads(ds_plus.read_text()) if ds_plus.is_file() else {}
    parts = (
        ("facets", facets_table),
        ("segments", segments_table),
        ("prompts", prompts_table),
        ("finetune", finetune_table),
    )
    for part, table in parts:
        if part in plus:
            print()
            print(table(plus))
    calibration = RESULTS / "calibration.json"
    if calibration.is_file():
        print()
        print(calibration_table(json.loads(calibration.read_text())))
    guarantee = RESULTS / "guarantee.json"
    if guarantee.is_file():
        print()
        print(guarantee_table(json.loads(guarantee.read_text())))
    batched = RESULTS / "large_batch.json"
    if batched.is_file():
        print()
        print(large_batch_table(json.loads(batched.read_text())))
    overhead = RESULTS / "overhead.json"
    if overhead.is_file():
        print()
        print(overhead_table(json.loads(overhead.read_text())))
    longtail = RESULTS / "longtail.json"
    if longtail.is_file():
        print()
        print(longtail_tables(json.loads(longtail.read_text())))
    generation = RESULTS / "generation.json"
    if generation.is_file():
        print()
        print(generation_tables(json.loads(generation.read_text())))
    for name, table in (
        ("demo", demo_table),
        ("serve_load", serve_table),
        ("serve_load_mixed", mixed_load_table),
        ("batch_million", batch_table),
    ):
        if (RESULTS / f"{name}.json").is_file():
            print()
            print(table(json.loads((RESULTS / f"{name}.json").read_text())))
    for path in sorted(RESULTS.glob("cascade_yelp*.json")):
        print(f"\n### {path.stem}\n")
        print(cascade_table(json.loads(path.read_text())))
    for path in sorted(RESULTS.glob("ablation_*.json")):
        print(f"\n### {path.stem.removeprefix('ablation_')}\n")
        print(ablation_tables(json.loads(path.read_text())))


if __name__ == "__main__":
    main()
