"""results.json -> results.md (tables with the ratios mlserve/peer and
mlserve/limit) and PNG plots (throughput and latency against concurrency)."""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

Run = dict[str, Any]


def _key(run: Run) -> str:
    return f"{run['server']} {run['mode']}" + (" batching" if run.get("batched") else "")


def _fmt(value: float, digits: int = 0) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:,.{digits}f}"


def _preferred_note(results: dict[str, Any], model: str) -> str:
    settings = results["settings"]
    sizes = settings.get("preferred_batch_size", {})
    if model not in sizes:  # runs recorded before the batched models preferred a size
        return ""
    # Runs recorded before the rule was named followed the first one.
    rule = settings.get("preferred_batch_rule", "the smallest raw size within 2% of the fastest")
    size = sizes[model]
    preference = "sets no preferred size" if size is None else f"prefers batches of {size}"
    sweep = settings.get("preferred_batch_sweep", {}).get(model)
    measured = (
        "; requests/s by preferred size: "
        + ", ".join(f"{label} {_fmt(rate)}" for label, rate in sweep.items())
        if sweep
        else ""
    )
    grpcio = settings.get("grpcio_batching")  # runs before it shared one repository
    on_grpcio = f"; on grpcio, {grpcio}" if grpcio else ""
    return f"; `{model}_batched` {preference} ({rule}{measured}){on_grpcio}"


def markdown(results: dict[str, Any]) -> str:
    runs: list[Run] = results["runs"]
    concurrencies = results["settings"]["concurrency"]
    lines = [
        f"Server on core {results['settings']['server_cpu']}, load generator on core "
        f"{results['settings']['client_cpu']}; {results['settings']['windows']} window(s) of "
        f"{results['settings']['seconds']} s per point, median shown. Throughput counts "
        "successes only (server-side counts for mlserve, response bytes for gRPC peers, 2xx "
        "for wrk). CPU = server process tree CPU time per success.",
        "",
    ]
    for model in results["models"]:
        raw = results["raw_onnxruntime_rows_per_s"].get(model, {})
        best_raw = max(raw.values(), default=float("nan"))
        lines += [
            f"### {model}",
            "",
            f"raw onnxruntime rows/s ({results['settings']['intra_op_threads']} thread(s), "
            "server cores), batch "
            + " / ".join(f"{b}: {_fmt(r)}" for b, r in raw.items())
            + _preferred_note(results, model),
            "",
            "| server / mode | "
            + " | ".join(f"c={c} req/s | CPU us" for c in concurrencies)
            + " | best vs raw |",
            "| --- | " + " | ".join("--- | ---" for _ in concurrencies) + " | --- |",
        ]
        keyed: dict[str, dict[int, Run]] = {}
        for run in runs:
            if run["model"] in (model, "-"):
                keyed.setdefault(_key(run), {})[run["concurrency"]] = run
        for key, by_c in keyed.items():
            cells = []
            for c in concurrencies:
                point = by_c.get(c)
                if point is None:
                    cells.append("- | -")
                elif "error" in point:
                    cells.append("error | -")
                else:
                    cells.append(f"{_fmt(point['rps'])} | {_fmt(point['cpu_us'])}")
            best = max((r.get("rps", 0.0) for r in by_c.values()), default=0.0)
            floor = key.startswith("floor")  # answers without running the model
            vs_raw = f"{best / best_raw:.0%}" if best_raw > 0 and not floor else "-"
            lines.append(f"| {key} | " + " | ".join(cells) + f" | {vs_raw} |")
        lines += ["", *_ratios(runs, model, concurrencies), ""]
        lines += _in_server(runs, model, raw, max(concurrencies))
        lines += _batching_pairs(runs, model, concurrencies, raw)
        lines += _against_raw_pairs(runs, model, max(concurrencies))
        lines += _against_floor_pairs(runs, model, max(concurrencies))
    errors = [r for r in runs if "error" in r]
    if errors:
        lines += ["### Not timed (wrong or failed answers)", ""]
        lines += [f"- {_key(r)} {r['model']}: {r['error']}" for r in errors]
        lines.append("")
    if results.get("perf_analyzer"):
        lines += [
            "### mlserve by perf_analyzer, beside h2load/wrk",
            "",
            "| model | mode | c | perf_analyzer infer/s | p50 us | p99 us | h2load/wrk req/s |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for row in results["perf_analyzer"]:
            if "rps" in row:
                lines.append(
                    f"| {row['model']} | {row['mode']} | {row['concurrency']} | "
                    f"{_fmt(row['rps'])} | {_fmt(row['p50_us'])} | {_fmt(row['p99_us'])} | "
                    f"{_fmt(row.get('ours_rps', float('nan')))} |"
                )
            else:
                lines.append(
                    f"| {row['model']} | {row['mode']} | {row['concurrency']} | "
                    f"failed ({row.get('error')}) | | | |"
                )
    return "\n".join(lines) + "\n"


def _in_server(runs: list[Run], model: str, raw: dict[Any, float], top: int) -> list[str]:
    """onnxruntime inside mlserve (its V2 statistics, over the windows of each
    mlserve run at the top concurrency) against raw onnxruntime in process, at
    the batch size that carried most rows: how much of the gap to raw's rows/s
    is the model running slower in the server, and how much the cost around it."""
    raw_us = {int(b): 1e6 / r for b, r in raw.items() if r > 0}
    cells = []
    for run in runs:
        if run["server"] != "mlserve" or run["model"] != model or run["concurrency"] != top:
            continue
        sizes = {int(b): v for b, v in run.get("batches", {}).items()}
        if not sizes:
            continue
        size, (batches, ns) = max(sizes.items(), key=lambda item: item[0] * item[1][0])
        us = ns / batches / size / 1e3
        versus = f", raw {raw_us[size]:.1f}: {us / raw_us[size]:.2f}x" if size in raw_us else ""
        cells.append(f"{_key(run).removeprefix('mlserve ')} batch {size}: {us:.1f}{versus}")
    if not cells:
        return []
    return [
        f"onnxruntime inside mlserve at c={top}, us per row at the batch size carrying "
        "most rows (V2 statistics' compute_infer, every window): " + "; ".join(cells),
        "",
    ]


def pair_ratios(on: Run, off: Run, field: str) -> list[float]:
    """on/off for each pair of windows measured back to back (the runner
    alternates them), so drift between pairs cancels out."""
    return [
        a[field] / b[field]
        for a, b in zip(on["windows"], off["windows"], strict=False)
        if b[field] > 0
    ]


def _batching_pairs(
    runs: list[Run], model: str, concurrencies: list[int], raw: dict[str, float] | None = None
) -> list[str]:
    """mlserve with batching on against off, as the median of its window pairs
    (the range in brackets): steadier than the ratio of the table's medians
    where the machine's noise is the size of the effect (c=1). Raw
    onnxruntime's own gain, its best batch against batch 1, follows: a
    server's gain stays under it by as much as its own cost per request."""
    by_key = {
        (r["mode"], r["concurrency"], bool(r.get("batched"))): r
        for r in runs
        if r["server"] == "mlserve" and r["model"] == model and r.get("windows")
    }
    modes = sorted({mode for mode, _, _ in by_key}, key=str)
    rows = []
    for mode in modes:
        cells = []
        for c in concurrencies:
            on, off = by_key.get((mode, c, True)), by_key.get((mode, c, False))
            rps = pair_ratios(on, off, "rps") if on and off else []
            p50 = pair_ratios(on, off, "p50_us") if on and off else []
            if not rps:
                cells.append("- | -")
                continue
            cells.append(
                " | ".join(
                    f"{statistics.median(v):.2f}x ({min(v):.2f}-{max(v):.2f})" if v else "-"
                    for v in (rps, p50)
                )
            )
        if any(cell != "- | -" for cell in cells):
            rows.append(f"| {mode} | " + " | ".join(cells) + " |")
    if not rows:
        return []
    return [
        f"mlserve, batching on / off, median of adjacent window pairs (range): {model}",
        "",
        "| mode | " + " | ".join(f"c={c} req/s | p50" for c in concurrencies) + " |",
        "| --- | " + " | ".join("--- | ---" for _ in concurrencies) + " |",
        *rows,
        "",
        *_raw_gain(raw or {}),
    ]


def _against_raw_pairs(runs: list[Run], model: str, top: int) -> list[str]:
    """mlserve's requests/s (one row each) over raw onnxruntime's rows/s at its
    best batch, window by window: raw measured right after each round of the
    server's windows, so both saw the machine at the same speed."""
    cells = []
    for run in runs:
        if not (
            run["server"] == "mlserve"
            and run["model"] == model
            and run.get("batched")
            and run["concurrency"] == top
        ):
            continue
        ratios = [
            w["rps"] / w["raw_rows_per_s"]
            for w in run.get("windows", [])
            if w.get("raw_rows_per_s", 0) > 0
        ]
        if ratios:
            batch = run["windows"][0]["raw_batch"]
            cells.append(
                f"{run['mode']} {statistics.median(ratios):.0%} "
                f"({min(ratios):.0%}-{max(ratios):.0%})"
            )
    if not cells:
        return []
    return [
        f"mlserve with batching against raw onnxruntime at batch {batch}, c={top}, "
        "each window over raw's window measured right after it on the same cores "
        "(median, range): " + "; ".join(cells),
        "",
    ]


# The empty grpcio servicer measured window by window beside mlserve on
# grpcio (benchmarks.load's run_mlserve), so that the aim "within 1.3x of
# it" is read against the machine's speed of the same minute.
PAIRED_FLOOR = "floor-paired"


def _against_floor_pairs(runs: list[Run], model: str, top: int) -> list[str]:
    """mlserve on grpcio against the empty grpcio servicer, server CPU per
    request, window by window: the two took turns (A B C C B A ...), so each
    ratio compares windows a few seconds apart, not points minutes apart."""
    cells = []
    for mode in ("grpc", "grpc-stream"):
        found = {
            (r["server"], bool(r.get("batched"))): r
            for r in runs
            if r["model"] == model and r["mode"] == mode and r["concurrency"] == top
        }
        floor = found.get((PAIRED_FLOOR, False))
        if floor is None:
            continue
        for batched in (False, True):
            ours = found.get(("mlserve-grpcio", batched))
            if ours is None:
                continue
            ratios = [
                a["cpu_us"] / b["cpu_us"]
                for a, b in zip(ours["windows"], floor["windows"], strict=True)
                if b["cpu_us"] > 0 and not math.isnan(a["cpu_us"])
            ]
            if ratios:
                cells.append(
                    f"{mode}{' batching' if batched else ''} "
                    f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f}x)"
                )
    if not cells:
        return []
    return [
        f"mlserve on grpcio against the empty grpcio servicer, c={top}, server CPU per "
        "request, each window over the servicer's window of the same round (median, "
        "range): " + "; ".join(cells),
        "",
    ]


def _raw_gain(raw: dict[str, float]) -> list[str]:
    """Why on/off has a ceiling: with T1 raw's time per row at batch 1, Tb at
    its best batch and c the server's cost per request (transport, decode,
    answer), batching gives at most (T1 + c) / (Tb + c) < T1 / Tb."""
    rates = {str(batch): rate for batch, rate in raw.items()}  # int keys until JSON'd
    single = rates.get("1", 0.0)
    best_batch, best = max(rates.items(), key=lambda item: item[1], default=("1", 0.0))
    if single <= 0 or best_batch == "1":
        return []
    return [
        f"raw onnxruntime's own gain from batching, batch {best_batch} against batch 1: "
        f"{best / single:.2f}x. A server that spends c us on each request besides the "
        "model gains at most (T1 + c) / (Tb + c), T1 and Tb raw's us per row at those "
        "batches: less than raw's own gain.",
        "",
    ]


def _ratios(runs: list[Run], model: str, concurrencies: list[int]) -> list[str]:
    """mlserve's best setting against each peer and floor, per protocol, at the top concurrency."""
    top = max(concurrencies)

    def best_run(server: str, modes: tuple[str, ...]) -> Run | None:
        found = [
            r
            for r in runs
            if r["server"] == server
            and r["model"] in (model, "-")
            and r["mode"] in modes
            and r["concurrency"] == top
            and "rps" in r
        ]
        return max(found, key=lambda r: r["rps"], default=None)

    def best(server: str, modes: tuple[str, ...]) -> float:
        run = best_run(server, modes)
        return float("nan") if run is None else float(run["rps"])

    out = []
    for label, modes in (("gRPC", ("grpc",)), ("HTTP", ("http-binary", "http-json"))):
        ours = best("mlserve", modes)
        for peer in ("mlserver", "kserve"):
            theirs = best(peer, ("grpc",) if label == "gRPC" else ("http-binary", "http-json"))
            if not math.isnan(ours) and not math.isnan(theirs) and theirs > 0:
                out.append(f"- {label}, c={top}: mlserve / {peer} = {ours / theirs:.1f}x")
    # The two gRPC transports of mlserve, and mlserve against the transports' floors.
    for mode in ("grpc", "grpc-stream"):
        native, grpcio = best_run("mlserve", (mode,)), best_run("mlserve-grpcio", (mode,))
        if native is not None and grpcio is not None:
            out.append(
                f"- {mode}, c={top}: server CPU per request, mlserve on grpcio / on native = "
                f"{grpcio['cpu_us'] / native['cpu_us']:.1f}x ({grpcio['cpu_us']:.0f} vs "
                f"{native['cpu_us']:.0f} us); throughput native / grpcio = "
                f"{native['rps'] / grpcio['rps']:.1f}x"
            )
        for ours_name, floor_name in (("mlserve", "floor-native"), ("mlserve-grpcio", "floor")):
            ours_run, floor_run = best_run(ours_name, (mode,)), best_run(floor_name, (mode,))
            if ours_run is not None and floor_run is not None:
                out.append(
                    f"- {mode}, c={top}: {ours_name} CPU per request / {floor_name}'s = "
                    f"{ours_run['cpu_us'] / floor_run['cpu_us']:.1f}x"
                )
    return out


def plots(results: dict[str, Any], out_dir: Path) -> list[Path]:
    """Throughput and p50/p99 latency against concurrency, one figure per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for model in results["models"]:
        series: dict[str, list[Run]] = {}
        for run in results["runs"]:
            if run["model"] in (model, "-") and "rps" in run:
                series.setdefault(_key(run), []).append(run)
        if not series:
            continue
        fig, (ax_rps, ax_lat) = plt.subplots(1, 2, figsize=(15, 5.5))
        palette = plt.get_cmap("tab20")
        for index, (key, points) in enumerate(sorted(series.items())):
            color = palette(index % 20)
            points.sort(key=lambda r: r["concurrency"])
            cs = [r["concurrency"] for r in points]
            style = ":" if key.startswith("floor") else "-"
            ax_rps.plot(
                cs, [r["rps"] for r in points], marker="o", linestyle=style, color=color, label=key
            )
            ax_lat.plot(cs, [r["p50_us"] / 1e3 for r in points], marker="o", color=color)
            ax_lat.plot(
                cs, [r["p99_us"] / 1e3 for r in points], marker="x", linestyle="--", color=color
            )
        raw = results["raw_onnxruntime_rows_per_s"].get(model, {})
        if raw:
            ax_rps.axhline(
                max(raw.values()), color="black", linestyle=":", label="raw onnxruntime best"
            )
        ax_rps.set(
            title=f"{model}: successes/s (floors dotted)",
            xlabel="concurrency",
            ylabel="req/s",
            xscale="log",
            yscale="log",
        )
        ax_lat.set(
            title=f"{model}: latency p50 (o) / p99 (x, dashed)",
            xlabel="concurrency",
            ylabel="ms",
            xscale="log",
            yscale="log",
        )
        for axis in (ax_rps, ax_lat):
            axis.set_xticks(results["settings"]["concurrency"])
            axis.set_xticklabels([str(c) for c in results["settings"]["concurrency"]])
            axis.minorticks_off()
        fig.legend(*ax_rps.get_legend_handles_labels(), loc="center right", fontsize=8)
        fig.tight_layout(rect=(0, 0, 0.86, 1))
        path = out_dir / f"{model}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)
    return written
