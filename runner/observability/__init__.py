"""What the runner tells the outside world about itself: in-process hooks (no dependencies, called on the
hot path) and the Prometheus metrics built on them and on the journal (issue 14 §3)."""
