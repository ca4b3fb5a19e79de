"""The acked prefix: only an offset with everything before it acked may be stored."""

from __future__ import annotations

import random

from app.sinks.nats.resume import AckedPrefix


def test_out_of_order_acks_move_the_prefix_only_when_contiguous() -> None:
    prefix: AckedPrefix[str] = AckedPrefix()
    for offset in (10, 11, 12, 13):
        prefix.submitted("p0", offset, f"e{offset}")
    assert prefix.acked("p0", 12) is None  # 10 and 11 not on NATS yet
    assert prefix.acked("p0", 11) is None
    assert prefix.acked("p0", 10) == (12, "e12")
    assert prefix.acked("p0", 13) == (13, "e13")
    assert prefix.acked("p0", 13) is None  # already counted


def test_partitions_are_independent_and_a_re_read_starts_over() -> None:
    prefix: AckedPrefix[int] = AckedPrefix()
    prefix.submitted("a", 5, 5)
    prefix.submitted("b", 1, 1)
    assert prefix.acked("b", 1) == (1, 1)
    prefix.submitted("a", 6, 6)
    prefix.submitted("a", 3, 3)  # re-read from an earlier position: 5 and 6 forgotten
    assert prefix.acked("a", 5) is None
    assert prefix.acked("a", 3) == (3, 3)
    assert prefix.acked("unknown", 0) is None


def test_random_ack_order_never_passes_an_unacked_offset() -> None:
    rng = random.Random(3)
    for _ in range(200):
        prefix: AckedPrefix[None] = AckedPrefix()
        offsets = list(range(rng.randint(1, 30)))
        for offset in offsets:
            prefix.submitted("p", offset, None)
        acked: set[int] = set()
        stored = -1
        for offset in rng.sample(offsets, len(offsets)):
            acked.add(offset)
            moved = prefix.acked("p", offset)
            if moved is not None:
                assert moved[0] > stored
                stored = moved[0]
            contiguous = -1
            while contiguous + 1 in acked:
                contiguous += 1
            assert stored == contiguous  # never past a gap, never behind the acked prefix
        assert stored == offsets[-1]
