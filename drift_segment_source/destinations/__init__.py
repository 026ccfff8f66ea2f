"""Where events go: ``segment`` builds and posts Segment batches with the Segment library;
``drift`` applies Segment calls to Drift's contacts API."""
