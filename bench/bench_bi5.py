"""Decode speed and memory of a month of Dukascopy .bi5 hour files.

Generates a synthetic month (720 hours x ~3,000 ticks, FORMAT_ALONE like Dukascopy) into
a temp dir, then reads it back hour by hour the way the importer does (read file ->
decompress -> decode -> RawBatch bytes, one hour in memory at a time) and reports
ticks/s and peak RSS. Peak memory must not grow with the month: the decode keeps only
one hour, so the peak is set by the largest hour, not by the total.

    python bench/bench_bi5.py [--hours 720] [--ticks 3000] [--out bench/results/bi5.md]
"""

from __future__ import annotations

import argparse
import random
import resource
import sys
import tempfile
import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.sources.dukascopy.bi5 import (
    SOURCE,
    decode_bi5,
    decompress_bi5,
    encode_bi5,
    hour_path,
)
from app.wire.codec import encode_tick_records

START = datetime(2024, 1, 1, tzinfo=UTC)
SYMBOL = "EURUSD"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def generate(root: Path, hours: int, ticks: int) -> tuple[int, int]:
    """A random-walk month; returns (ticks written, compressed bytes)."""
    rng = random.Random(42)
    price, total, size = 108_000, 0, 0
    for h in range(hours):
        n = max(1, int(ticks * rng.uniform(0.7, 1.3)))
        times = sorted(rng.randrange(3_600_000) for _ in range(n))
        records = []
        for ms in times:
            price += rng.choice((-1, 0, 1))
            spread = rng.randint(1, 4)
            records.append((ms, price + spread, price, rng.choice((0.75, 1.5, 3.0)), 1.0))
        path = root / hour_path(SYMBOL, START + timedelta(hours=h))
        path.parent.mkdir(parents=True, exist_ok=True)
        data = encode_bi5(records, preset=1)
        path.write_bytes(data)
        total += n
        size += len(data)
    return total, size


def run_pass(root: Path, hours: int, encode: bool) -> tuple[int, float]:
    count = 0
    begin = time.perf_counter()
    for h in range(hours):
        hour = START + timedelta(hours=h)
        ticks = decode_bi5((root / hour_path(SYMBOL, hour)).read_bytes(), SYMBOL, hour)
        if encode:
            for i in range(0, len(ticks), 1000):
                encode_tick_records(ticks[i : i + 1000], SOURCE)
        count += len(ticks)
    return count, time.perf_counter() - begin


def time_decompress(root: Path, hours: int) -> float:
    begin = time.perf_counter()
    for h in range(hours):
        decompress_bi5((root / hour_path(SYMBOL, START + timedelta(hours=h))).read_bytes())
    return time.perf_counter() - begin


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=int, default=720)
    parser.add_argument("--ticks", type=int, default=3000)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "bi5.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bi5-bench-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        total, size = generate(root, args.hours, args.ticks)
        gen_s = time.perf_counter() - t0
        rss_before = peak_rss_mb()
        lzma_s = time_decompress(root, args.hours)
        decoded, decode_s = run_pass(root, args.hours, encode=False)
        encoded, encode_s = run_pass(root, args.hours, encode=True)
        rss_after = peak_rss_mb()
        tracemalloc.start()
        traced_hours = min(args.hours, 48)
        run_pass(root, traced_hours, encode=True)
        _, traced_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert decoded == encoded == total
    rows = [
        ("hour files", f"{args.hours}"),
        ("ticks", f"{total:,}"),
        ("compressed size", f"{size / 1e6:.1f} MB"),
        ("LZMA decompress only", f"{total / lzma_s:,.0f} ticks/s ({lzma_s:.2f} s)"),
        ("decompress + decode to Tick", f"{total / decode_s:,.0f} ticks/s ({decode_s:.2f} s)"),
        (
            "decode + RawBatch encoding (importer path)",
            f"{total / encode_s:,.0f} ticks/s ({encode_s:.2f} s)",
        ),
        ("peak RSS before decoding (after generating)", f"{rss_before:.0f} MB"),
        ("peak RSS after the month's two decode passes", f"{rss_after:.0f} MB"),
        (f"tracemalloc peak, {traced_hours} hours (importer path)", f"{traced_peak / 1e6:.1f} MB"),
    ]
    lines = [
        f"# .bi5 decode benchmark ({datetime.now(UTC):%Y-%m-%d}, `python bench/bench_bi5.py`)",
        "",
        f"Synthetic month: {args.hours} hours x ~{args.ticks} ticks of {SYMBOL}, LZMA alone "
        f"format; generated in {gen_s:.0f} s (not measured). One process, one core.",
        "",
        "| measure | value |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in rows),
        "",
        f"Peak RSS grew by {rss_after - rss_before:.0f} MB while decoding the whole month: "
        "only one hour's file and ticks are alive at a time, so memory does not scale "
        "with the length of the range.",
        "",
    ]
    text = "\n".join(lines)
    sys.stdout.write(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
