"""One command for every benchmark: `python -m bench.run [--quick] [--only ...]`.

Starts (or reuses) its own local Kafka + NATS through devstack.stack (run dir
.run/bench-stack, ports from --port-base), pre-loads the raw topic and runs:

- codec:      protobuf vs json on the pipeline's real output (bench/codec_bench.py);
- throughput: aiokafka passthrough (the limit), the faust worker, the Quix Streams
              implementation, each over the same backlog, batched and one tick per message;
- scaleout:   one vs two faust workers of one app id;
- latency:    paced single-tick messages -> NATS subject, percentiles;
- e2e:        OANDA simulator (3 brokers x 10 symbols) -> worker -> NATS subject, from the
              source's receive time (bench/e2e.py).

Writes bench/results/latest.md, latest.json and latest.png. No timing is asserted anywhere:
the numbers are compared with the targets in the report only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shlex
import sys
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import codec_bench, report
from bench.data import backlog
from devstack import stack as local_stack

REPO = Path(__file__).resolve().parents[1]
PARTS = ("codec", "throughput", "scaleout", "latency", "e2e")
TARGET_TICKS_PER_S = 30_000
TARGET_P99_MS = 10.0
TARGET_SIZE_RATIO = 0.4
TARGET_CODEC_SPEEDUP = 5.0
E2E_P99_MS = {1000: 5.0, 10_000: 10.0}  # simulator -> NATS, issue #21
E2E_KEEP_UP_RATE = 50_000
log = logging.getLogger("bench")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--ticks", type=int, default=200_000, help="backlog size (200,000)")
    parser.add_argument("--quick", action="store_true", help="20,000 ticks, short latency run")
    parser.add_argument("--batch", type=int, default=200, help="records per RawBatch (200)")
    parser.add_argument("--single-ticks", type=int, default=10_000,
                        help="ticks of the one-tick-per-message runs (10,000)")  # fmt: skip
    parser.add_argument("--only", default=",".join(PARTS), help=f"subset of {','.join(PARTS)}")
    parser.add_argument("--latency-rates", default="1000", help="ticks/s, comma-separated")
    parser.add_argument("--latency-seconds", type=float, default=20.0)
    parser.add_argument(
        "--e2e-rates",
        default="1000,10000,50000",
        help="simulator ticks/s in total, comma-separated (1000,10000,50000)",
    )
    parser.add_argument(
        "--e2e-lingers",
        default="0",
        help="raw_writer.linger_ms values to run each rate with, comma-separated (0)",
    )
    parser.add_argument(
        "--e2e-seconds",
        type=float,
        default=20.0,
        help="measured seconds per rate, after a 3 s warm-up (20; --quick 8)",
    )
    parser.add_argument("--partitions", type=int, default=8, help="of every topic (8)")
    parser.add_argument("--port-base", type=int,
                        default=int(os.environ.get("BENCH_PORT_BASE", "25000")),
                        help="kafka base+92, nats base+222, monitor base+822")  # fmt: skip
    parser.add_argument("--stack-down", action="store_true", help="stop the stack at the end")
    parser.add_argument("--profile", action="store_true",
                        help="faust worker under cProfile (results/faust.prof)")  # fmt: skip
    parser.add_argument("--out", type=Path, default=report.RESULTS)
    args = parser.parse_args(argv)
    if args.quick:
        args.ticks, args.single_ticks, args.latency_seconds = 20_000, 3_000, 8.0
        args.e2e_seconds = 8.0
    args.parts = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = set(args.parts) - set(PARTS)
    if unknown:
        parser.error(f"unknown part(s) {sorted(unknown)}; choose from {','.join(PARTS)}")
    return args


def stack_config(base: int) -> local_stack.StackConfig:
    return local_stack.StackConfig(
        run_dir=REPO / ".run" / "bench-stack",
        kafka_port=base + 92,
        nats_port=base + 222,
        nats_monitor_port=base + 822,
    )


def run_codec(args: argparse.Namespace) -> dict[str, Any]:
    ticks = min(args.ticks, 50_000)
    rows = []
    for batch in (args.batch, 1):
        result = codec_bench.run(ticks=ticks, batch=batch)
        rows.append({**asdict(result), "size_ratio": result.size_ratio,
                     "round_trip_speedup": result.round_trip_speedup,
                     "parse_only_speedup": result.parse_only_speedup})  # fmt: skip
        log.info("codec %s/msg: %s", batch, rows[-1])
    return {"rows": rows}


async def run_throughput(args: argparse.Namespace, cfg: Any, run_dir: Path) -> dict[str, Any]:
    from bench import throughput as tp

    rows: list[dict[str, Any]] = []
    profile = args.out / "faust.prof" if args.profile else None
    for batch, ticks in ((args.batch, args.ticks), (1, args.single_ticks)):
        messages = [(k, v) for k, v, _ in backlog(ticks, batch)]
        load_s = await tp.load_backlog(cfg, messages, args.partitions)
        log.info("loaded %d ticks in %d messages in %.1fs", ticks, len(messages), load_s)
        runs = [
            tp.passthrough(cfg, ticks, len(messages)),
            tp.faust_backlog(cfg, ticks, len(messages), run_dir, args.partitions,
                             profile if batch > 1 else None),
            tp.quix_backlog(cfg, ticks, len(messages), run_dir),
        ]  # fmt: skip
        limit = None
        for coro in runs:
            result = await coro
            limit = limit or result.ticks_per_s
            rows.append({
                "name": result.name, "batch": batch, "input_ticks": ticks,
                "input_messages": len(messages), "output_messages": result.output.messages,
                "output_ticks": result.output.ticks, "rejects": result.rejects,
                "span_s": result.output.span_s, "ticks_per_s": result.ticks_per_s,
                "vs_limit": result.ticks_per_s / limit, **result.notes,
            })  # fmt: skip
            log.info("%s", rows[-1])
    return {"rows": rows}


async def run_scaleout(args: argparse.Namespace, cfg: Any, run_dir: Path) -> dict[str, Any]:
    from bench import throughput as tp

    messages = [(k, v) for k, v, _ in backlog(args.ticks, args.batch)]
    rows = []
    for workers in (1, 2):
        result = await tp.faust_live_burst(
            cfg, messages, args.ticks, workers, run_dir, args.partitions
        )
        rows.append({"workers": workers, "ticks_per_s": result.ticks_per_s,
                     "output_ticks": result.output.ticks, **result.notes})  # fmt: skip
        log.info("scale-out %s", rows[-1])
    return {"rows": rows, "ratio": rows[1]["ticks_per_s"] / rows[0]["ticks_per_s"]}


async def run_latency(args: argparse.Namespace, cfg: Any, run_dir: Path) -> dict[str, Any]:
    from bench import latency

    rows = []
    for rate in (int(r) for r in args.latency_rates.split(",")):
        result = await latency.run(cfg, run_dir, args.partitions, rate, args.latency_seconds)
        rows.append(asdict(result))
        log.info("latency %s", rows[-1])
    return {"rows": rows}


async def run_e2e(args: argparse.Namespace, cfg: Any, run_dir: Path) -> dict[str, Any]:
    from bench import e2e

    rows = []
    for rate in (int(r) for r in args.e2e_rates.split(",")):
        for linger in (float(x) for x in args.e2e_lingers.split(",")):
            result = await e2e.run(
                cfg, run_dir, args.partitions, rate, args.e2e_seconds, linger_ms=linger
            )
            rows.append(asdict(result))
            log.info("e2e %s", rows[-1])
    return {"rows": rows, "kept_up": e2e.KEPT_UP}


def _check(out: list[tuple[str, str, bool]], name: str, shown: str, met: bool) -> None:
    out.append((name, shown, met))


def targets(results: dict[str, Any], batch: int) -> list[tuple[str, str, bool]]:
    """(target, measured, met) for the issue's targets, from this run's numbers."""
    out: list[tuple[str, str, bool]] = []
    rows = {
        (r["name"].split(" ")[0], r["batch"]): r
        for r in results.get("throughput", {}).get("rows", [])
    }
    faust = rows.get(("faust", batch))
    quix = rows.get(("Quix", batch))
    if faust:
        tps = faust["ticks_per_s"]
        _check(out, f"faust >= {TARGET_TICKS_PER_S:,} ticks/s", f"{tps:,.0f}",
               tps >= TARGET_TICKS_PER_S)  # fmt: skip
        if quix:
            ratio = tps / quix["ticks_per_s"]
            _check(out, "faust faster than Quix", f"{ratio:.2f}x", ratio > 1)
        _check(out, "faust >= 0.5x aiokafka passthrough", f"{faust['vs_limit']:.2f}x",
               faust["vs_limit"] >= 0.5)  # fmt: skip
    for row in results.get("latency", {}).get("rows", []):
        if row["rate"] == 1000:
            _check(out, "p99 <= 10 ms at 1,000 ticks/s", f"{row['p99_ms']:.1f} ms",
                   row["p99_ms"] <= TARGET_P99_MS)  # fmt: skip
    for row in results.get("e2e", {}).get("rows", []):
        for rate, limit in E2E_P99_MS.items():
            if row["rate"] == rate:
                bound = "" if row["complete"] else ">= "  # not drained: a lower bound
                _check(out, f"simulator -> NATS p99 <= {limit:.0f} ms at {rate:,} ticks/s",
                       f"{bound}{row['p99_ms']:.1f} ms", row["p99_ms"] <= limit)  # fmt: skip
        if row["rate"] == E2E_KEEP_UP_RATE:
            _check(out, f"worker keeps up at {E2E_KEEP_UP_RATE:,} ticks/s",
                   "yes" if row["kept_up"] else "no: " + "; ".join(row["why_not"]),
                   row["kept_up"])  # fmt: skip
    for row in results.get("codec", {}).get("rows", []):
        if row["batch"] == batch:
            _check(out, "protobuf <= 0.4x JSON bytes", f"{row['size_ratio']:.2f}x",
                   row["size_ratio"] <= TARGET_SIZE_RATIO)  # fmt: skip
            speedup = row["round_trip_speedup"]
            shown = f"{speedup:.2f}x (parse only: {row.get('parse_only_speedup', 0):.2f}x)"
            _check(out, "protobuf encode+decode >= 5x json", shown,
                   speedup >= TARGET_CODEC_SPEEDUP)  # fmt: skip
    return out


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {}
    if "codec" in args.parts:
        results["codec"] = run_codec(args)
    kafka_parts = [p for p in args.parts if p != "codec"]
    if not kafka_parts:
        return results
    cfg = stack_config(args.port_base)
    log.info("stack: %s", local_stack.up(cfg))
    run_dir = REPO / ".run" / "bench"
    try:
        if "throughput" in args.parts:
            results["throughput"] = await run_throughput(args, cfg, run_dir)
        if "scaleout" in args.parts:
            results["scaleout"] = await run_scaleout(args, cfg, run_dir)
        if "latency" in args.parts:
            results["latency"] = await run_latency(args, cfg, run_dir)
        if "e2e" in args.parts:
            results["e2e"] = await run_e2e(args, cfg, run_dir)
    finally:
        if args.stack_down:
            local_stack.down(cfg)
    return results


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s bench: %(message)s")
    for noisy in ("aiokafka", "kafka", "nats"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    args = parse_args(argv)
    started = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    t0 = time.monotonic()
    results = asyncio.run(main_async(args))
    results["targets"] = targets(results, args.batch)
    settings = {
        "command": "python -m bench.run " + shlex.join(argv if argv is not None else sys.argv[1:]),
        "started": started,
        "backlog": f"{args.ticks:,} ticks (3 brokers x 10 symbols, OANDA v20 lines + parsed "
        f"MarketTick, 0.1% crossed quotes), {args.batch} records per RawBatch keyed by symbol; "
        f"one-tick-per-message runs: {args.single_ticks:,} ticks",
        "partitions": args.partitions,
        "faust worker": "python -m app worker, fresh app id, RocksDB tables, acks=all, "
        "NATS bridge running, live broker feeds disabled",
        "rate definition": "input ticks / (CreateTime of last output message - CreateTime of "
        "first output message); done when the group committed the raw topic's end offsets",
        "latency": f"{args.latency_seconds:.0f} s after 3 s warm-up, single-tick RawBatch "
        "messages, best_price.max_age_ms=1 so every tick is emitted as itself",
        "duration": f"{time.monotonic() - t0:.0f} s",
    }
    if "e2e" in results:
        from bench import e2e

        settings["e2e"] = (
            f"{args.e2e_seconds:.0f} s per rate after a 3 s warm-up; devstack.simulator, 3 "
            "profiles x 10 instruments, latency_ms=0; worker with the 3 OANDA brokers on it, "
            f"best_price.max_age_ms={e2e.MAX_AGE_MS} so each emission is the tick that caused "
            "it; latency = arrival on NATS - receive_time_ns stamped by the source, each tick "
            f"counted once (bench/e2e.py); kept up = {e2e.KEPT_UP}"
        )
    env = {"machine": report.machine(), "versions": report.versions(REPO / ".cache" / "kafka-libs")}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "latest.json").write_text(
        json.dumps({"results": results, "settings": settings, "env": env}, indent=2) + "\n"
    )
    (args.out / "latest.md").write_text(report.markdown(results, settings, env))
    report.chart(results, args.out / "latest.png")
    print(report.markdown(results, settings, env))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
