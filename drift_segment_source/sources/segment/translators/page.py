"""``page`` and ``screen`` → a timeline event named ``Page - <name>`` (as Segment's Drift
destination names them), for the same contact a ``track`` would use.

The name is the call's ``name``, else ``properties.name``, else ``properties.title``
(analytics.js puts the document title there when ``page()`` is called without a name); a
call with none of them is not relayed, since ``Page - `` alone would tell nothing.
"""

from __future__ import annotations

from .base import (
    Action,
    Message,
    NotRelayed,
    SegmentTranslator,
    Timeline,
    contact_of,
    event_time_ms,
    object_field,
)

PAGE_PREFIX = "Page - "


def page_name(message: Message) -> str | None:
    """The page's (or screen's) name, if the call gives one."""
    properties = object_field(message, "properties")
    for candidate in (message.get("name"), properties.get("name"), properties.get("title")):
        if isinstance(candidate, str) and candidate.strip():
            return candidate
    return None


def build(message: Message, received_ms: int) -> list[Action]:
    name = page_name(message)
    if name is None:
        raise NotRelayed(f"{message.get('type')} without a name (nor properties.name or "
                         "properties.title): the Drift event would be a bare 'Page - '")
    external_id, contact_id = contact_of(message)
    return [Timeline(PAGE_PREFIX + name, event_time_ms(message, received_ms), external_id,
                     contact_id)]


PAGE = SegmentTranslator(call_type="page", build=build)
SCREEN = SegmentTranslator(call_type="screen", build=build)
