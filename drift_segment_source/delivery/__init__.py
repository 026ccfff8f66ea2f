"""From the store to a destination: the delivery loop (``loop``) claims due rows, prepares
them (Drift lookups, identity stitching), sends them through ``destinations`` and records
each row's outcome; ``breakers`` pause a destination that is down."""
