"""Where events come from: each source receives, checks and translates its own webhooks.

``drift/`` takes Drift's webhooks (and backfills from Drift's API) and translates them into
Segment calls; ``segment/`` takes Segment's Webhooks destination and translates its calls
into Drift API actions. Both share ``door.py`` (body, JSON, what
can be carried, refusals) and hand what they accept to the store.
"""
