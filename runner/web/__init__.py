"""The read-only status page and JSON API of ``runner serve --http`` (issue 14 §2): server, auth, pages,
api and the snapshot builder shared with ``runner status --json``."""
