"""The delivery baseline: the fastest the Segment library's ``request.post`` can feed the fake.

Messages are built beforehand (the service's own MessageBuilder on the fixture templates,
each copy with its own messageId), then posted in batches of the worker's size by a plain
loop: no store, no translation, no bookkeeping. What the worker adds on top is the cost of
the service.

``python direct_post.py FAKE_URL WRITE_KEY COUNT BATCH_SIZE``; prints ``DIRECT_RESULT {json}``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import workload  # noqa: E402
from segment.analytics.request import post  # noqa: E402

from drift_segment_source.destinations.segment import MessageBuilder  # noqa: E402
from drift_segment_source.sources.drift.translators import TRANSLATORS, translate  # noqa: E402


def prebuilt(count: int) -> list[dict[str, object]]:
    """``count`` realistic messages, cycling over the templates, each with its own id."""
    builder = MessageBuilder()
    models = []
    for number, template in enumerate(workload.interleaved(workload.load_templates())):
        event_type, org_id, _, payload, _ = workload.stored_form(template.body(str(number)))
        translator = TRANSLATORS[event_type]
        data = translator.validate(json.loads(payload)["data"])
        models += [builder.build(call)
                   for call in translate(translator, org_id, data, workload.RECEIVED)]
    return [dict(models[number % len(models)], messageId=f"direct-{number}")
            for number in range(count)]


def main() -> None:
    url, write_key, count, batch_size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(
        sys.argv[4])
    messages = prebuilt(count)
    started = time.perf_counter()
    batches = 0
    for start in range(0, count, batch_size):
        post(write_key, url, timeout=15, batch=messages[start:start + batch_size])
        batches += 1
    seconds = time.perf_counter() - started
    print("DIRECT_RESULT " + json.dumps({"seconds": seconds, "batches": batches}), flush=True)


if __name__ == "__main__":
    main()
