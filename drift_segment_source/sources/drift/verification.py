"""Is this webhook from Drift? Drift signs nothing: it sends the app's static verification
token, in the ``X-Verification-Token`` header and in the body's ``token`` field."""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Sequence


def token_is_valid(presented: Iterable[object], configured: Sequence[str]) -> bool:
    """True when a presented token equals a configured one, compared in constant time.

    Every pair is compared, even after a match, so timing tells nothing about which token
    (or how much of one) matched. Several configured tokens allow rotation.
    """
    valid = False
    for candidate in presented:
        if not isinstance(candidate, str) or not candidate:
            continue
        candidate_bytes = candidate.encode("utf-8", "surrogatepass")
        for token in configured:
            valid |= hmac.compare_digest(candidate_bytes, token.encode("utf-8"))
    return valid
