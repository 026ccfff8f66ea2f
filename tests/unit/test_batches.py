"""Batches respect Segment's limits (500 KB and 2,500 messages a batch)."""

from __future__ import annotations

import json


def test_batches_respect_segment_size_and_count_limits() -> None:
    from drift_segment_source.destinations.segment import MAX_BATCH_BYTES, batches

    small = [{"messageId": str(n), "padding": "x" * 100} for n in range(3000)]
    split = list(batches(small))
    assert [len(batch) for batch in split] == [2500, 500]
    large = [{"messageId": str(n), "padding": "x" * 30_000} for n in range(40)]
    split = list(batches(large))
    assert sum(len(batch) for batch in split) == 40 and len(split) == 3
    for batch in split:
        assert sum(len(json.dumps(large[i])) + 1 for i in batch) <= MAX_BATCH_BYTES
    assert list(batches([])) == []
    assert list(batches(small[:5])) == [[0, 1, 2, 3, 4]]

