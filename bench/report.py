"""Results of one benchmark run as Markdown (bench/results/latest.md) and a PNG chart."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem_kb = next(
            int(line.split()[1])
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        )
        ram = f"{mem_kb / 1024 / 1024:.1f} GiB"
    except (OSError, StopIteration, ValueError):
        ram = "unknown"
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "ram": ram,
        "os": platform.platform(),
        "load average (1/5/15 min) at the end": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def versions(libs_dir: Path) -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("faust-streaming", "aiokafka", "quixstreams", "confluent-kafka", "protobuf",
                 "rocksdict", "nats-py"):  # fmt: skip
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    jars = sorted(p.name for p in libs_dir.glob("kafka_2.13-*.jar")) if libs_dir.is_dir() else []
    out["kafka"] = jars[0].removeprefix("kafka_2.13-").removesuffix(".jar") if jars else "unknown"
    try:
        out["nats-server"] = subprocess.run(
            ["nats-server", "--version"], capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:
        out["nats-server"] = "unknown"
    return out


def _fmt(value: float, digits: int = 0) -> str:
    return f"{value:,.{digits}f}"


def markdown(results: dict[str, Any], settings: dict[str, Any], env: dict[str, Any]) -> str:
    lines = ["# Benchmark results", ""]
    lines.append(f"Run: `{settings['command']}` at {settings['started']}.")
    lines.append("")
    if "throughput" in results:
        t = results["throughput"]
        lines += [
            "## Throughput (ticks/s, one process unless stated)", "",
            "| run | ticks/message | input ticks | output msgs | output ticks | rejects "
            "| ticks/s | vs limit | CPU s | ticks/CPU-s |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]  # fmt: skip
        for row in t["rows"]:
            cpu = row.get("cpu_s")
            per_cpu = _fmt(row["input_ticks"] / cpu) if cpu else "-"
            lines.append(
                f"| {row['name']} | {row['batch']} | {_fmt(row['input_ticks'])} | "
                f"{_fmt(row['output_messages'])} | {_fmt(row['output_ticks'])} | "
                f"{_fmt(row['rejects'])} | **{_fmt(row['ticks_per_s'])}** | "
                f"{row['vs_limit']:.2f}x | {cpu if cpu else '-'} | {per_cpu} |"
            )
        lines.append("")
    if "scaleout" in results:
        s = results["scaleout"]
        lines += [
            "## Scale-out (faust workers of one app id, ready before the input is produced)", "",
            "| workers | ticks/s |", "|---|---|",
        ]  # fmt: skip
        for row in s["rows"]:
            lines.append(f"| {row['workers']} | {_fmt(row['ticks_per_s'])} |")
        lines += ["", f"Two workers / one worker: **{s['ratio']:.2f}x**.", ""]
    if "latency" in results:
        lines += [
            "## Latency: raw-topic produce -> NATS `market.data-ingestion.ticks`", "",
            "| ticks/s | ticks/message | seconds | sent | received | p50 ms | p90 ms | p99 ms "
            "| max ms |",
            "|---|---|---|---|---|---|---|---|---|",
        ]  # fmt: skip
        for row in results["latency"]["rows"]:
            lines.append(
                f"| {row['rate']} | 1 | {row['seconds']:.0f} | {row['sent']} | {row['received']} | "
                f"{row['p50_ms']:.1f} | {row['p90_ms']:.1f} | **{row['p99_ms']:.1f}** | "
                f"{row['max_ms']:.1f} |"
            )
        lines.append("")
    if "e2e" in results:
        lines += e2e_table(results["e2e"])
    if "codec" in results:
        lines += [
            "## Codec: MarketDataStream protobuf vs `json` (same content, per tick)", "",
            "| ticks/message | pb B | json B | size ratio | pb enc us | json enc us | pb dec us "
            "| json dec us | round-trip speed-up | pb parse us | json loads us "
            "| speed-up, parse only |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]  # fmt: skip
        for row in results["codec"]["rows"]:
            lines.append(
                f"| {row['batch']} | {row['proto_bytes_per_tick']:.0f} | "
                f"{row['json_bytes_per_tick']:.0f} | **{row['size_ratio']:.2f}x** | "
                f"{row['proto_encode_us']:.2f} | {row['json_encode_us']:.2f} | "
                f"{row['proto_decode_us']:.2f} | {row['json_decode_us']:.2f} | "
                f"**{row['round_trip_speedup']:.2f}x** | {row['proto_parse_us']:.2f} | "
                f"{row['json_parse_us']:.2f} | {row['parse_only_speedup']:.2f}x |"
            )
        lines.append("")
    if results.get("targets"):
        lines += ["## Targets", "", "| target | measured | met |", "|---|---|---|"]
        for name, measured, met in results["targets"]:
            lines.append(f"| {name} | {measured} | {'yes' if met else '**no**'} |")
        lines.append("")
    lines += ["## Machine and versions", ""]
    for key, value in {**env["machine"], **env["versions"]}.items():
        lines.append(f"- {key}: {value}")
    lines += ["", "## Settings", ""]
    for key, value in settings.items():
        if key not in ("command", "started"):
            lines.append(f"- {key}: {value}")
    lines.append("")
    return "\n".join(lines)


E2E_TARGETS = "p99 <= 5 ms at 1,000/s; p99 <= 10 ms at 10,000/s; keeps up at 50,000/s"


def e2e_table(e2e: dict[str, Any]) -> list[str]:
    """The simulator -> NATS table (bench/e2e.py) with the issue's targets as its last row."""
    lines = [
        "## End-to-end: simulator -> NATS `market.data-ingestion.ticks`", "",
        "From the source's `receive_time_ns` (stamped when the worker read the line) to the "
        "tick's arrival on the NATS subject, same machine clock; each tick counted once; "
        "best_price.max_age_ms=0.001 so each emission is the tick that caused it.", "",
        "| target ticks/s | achieved ticks/s (simulator /stats) | seconds | ticks received on "
        "NATS | p50 ms | p99 ms | max ms | raw Kafka msgs/s | market-data-stream msgs/s "
        "| worker CPU % | worker waiting for CPU % | simulator CPU % | Kafka CPU % "
        "| source -> raw produce p50/p99 ms | linger ms | raw send round trip ms "
        "| lines per raw msg | predicted raw msgs/s | load avg 1 min | kept up |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for row in e2e["rows"]:
        kept = "yes" if row["kept_up"] else "**no** (" + "; ".join(row["why_not"]) + ")"
        ge = "" if row.get("complete", True) else ">="  # not drained: lower bounds
        lines.append(
            f"| {_fmt(row['rate'])} | {_fmt(row['achieved'])} | {row['seconds']:.1f} | "
            f"{_fmt(row['received'])} of {_fmt(row['sent'])} sent | {ge}{row['p50_ms']:.1f} | "
            f"**{ge}{row['p99_ms']:.1f}** | {ge}{row['max_ms']:.1f} | "
            f"{_fmt(row['raw_messages_per_s'])} | "
            f"{_fmt(row['out_messages_per_s'])} | {row['worker_cpu_pct']:.0f} | "
            f"{row.get('worker_wait_pct', float('nan')):.0f} | "
            f"{row['simulator_cpu_pct']:.0f} | {row['kafka_cpu_pct']:.0f} | "
            f"{row['raw_p50_ms']:.0f} / {row['raw_p99_ms']:.0f} | "
            f"{row.get('linger_ms', 0):g} | {row.get('send_rtt_ms', float('nan')):.1f} | "
            f"{row.get('ticks_per_raw_message', float('nan')):.1f} | "
            f"{_fmt(row.get('predicted_raw_per_s', float('nan')))} | "
            f"{row.get('load_avg_1m', 0):.1f} | {kept} |"
        )
    lines += [
        f"| targets (issue #21) | | | | | {E2E_TARGETS} | | | | | | | | | | | | | | |", "",
        "Batching arithmetic: the raw writer keeps one message in flight per partition of "
        "raw.broker.ticks, so it sends at most min(tick rate, partitions / max(send round "
        "trip, linger)) messages per second; 'predicted' is that bound with the round trip "
        "measured in the run (mean send -> Kafka ack, from /health broker_writer).", "",
        f"Kept up = {e2e['kept_up']}. CPU % is of one core; waiting for CPU = "
        "the worker's event-loop thread runnable but not running (/proc/<pid>/schedstat), "
        "i.e. the machine's other load. Source -> raw produce: from "
        "receive_time_ns to the raw message's CreateTime (1 ms resolution), the part of the "
        "latency before Kafka. >= marks lower bounds (the worker had not drained: ticks of "
        "the window still on their way are missing).", "",
    ]  # fmt: skip
    return lines


def chart(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [k for k in ("throughput", "latency", "codec") if k in results]
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.5), squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=True):
        if panel == "throughput":
            rows = results["throughput"]["rows"] + [
                {"name": f"faust x{r['workers']} (burst)", "batch": "",
                 "ticks_per_s": r["ticks_per_s"]}
                for r in results.get("scaleout", {}).get("rows", [])
            ]  # fmt: skip
            names = [f"{r['name'].split(' (')[0]}\n{r['batch']}/msg" if r["batch"] else r["name"]
                     for r in rows]  # fmt: skip
            ax.barh(names, [r["ticks_per_s"] for r in rows], color="tab:blue")
            ax.axvline(30_000, color="tab:red", linestyle="--", label="target 30k ticks/s")
            ax.set_xlabel("ticks/s")
            ax.set_title("Throughput")
            ax.legend(loc="lower right")
            ax.tick_params(axis="y", labelsize=7)
        elif panel == "latency":
            rows = results["latency"]["rows"]
            labels = ["p50", "p90", "p99", "max"]
            for row in rows:
                ax.plot(labels, [row["p50_ms"], row["p90_ms"], row["p99_ms"], row["max_ms"]],
                        marker="o", label=f"{row['rate']} ticks/s")  # fmt: skip
            ax.axhline(10, color="tab:red", linestyle="--", label="p99 target 10 ms")
            ax.set_yscale("log")
            ax.set_ylabel("ms")
            ax.set_title("Produce -> NATS latency")
            ax.legend()
        else:
            rows = results["codec"]["rows"]
            labels = [f"{r['batch']}/msg" for r in rows]
            x = range(len(rows))
            ax.bar([i - 0.3 for i in x], [r["proto_encode_us"] for r in rows], 0.2, label="pb enc")
            ax.bar([i - 0.1 for i in x], [r["json_encode_us"] for r in rows], 0.2, label="json enc")
            ax.bar([i + 0.1 for i in x], [r["proto_decode_us"] for r in rows], 0.2, label="pb dec")
            ax.bar([i + 0.3 for i in x], [r["json_decode_us"] for r in rows], 0.2, label="json dec")
            ax.set_xticks(list(x), labels)
            ax.set_ylabel("us per tick")
            ax.set_title("Codec")
            ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
