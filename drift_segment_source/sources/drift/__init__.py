"""Drift → Segment, the way in: the webhook endpoint (``webhooks``), its envelope and
token check, one translator per Drift event type (``translators/``), and backfill."""
