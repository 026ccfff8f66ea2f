"""Segment → Drift, the way in: the signed ``/webhooks/segment`` endpoint (``webhooks``) and
one translator per Segment call type (``translators/``)."""
