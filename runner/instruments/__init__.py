"""The brokers' own instrument masters, synced: content-hashed daily snapshots (``snapshots``), anomaly
checks against the last good one (``checks``), the journal's index of them (``index``), sync with
quarantine (``sync``), what an adapter loads (``load``) and ``runner instruments search`` (``search``)."""
