"""What the journal raises."""

from __future__ import annotations


class DuplicateIntent(Exception):
    """An intent with this client id (or slot) is already journaled."""


class JournalError(Exception):
    pass


class RunBusy(JournalError):
    """The run is RUNNING under another process that is alive: it is never executed twice at once."""

    def __init__(self, run_id: str, holder: str | None) -> None:
        from runner.liveness import describe

        who = describe(holder) if holder else "another process"
        super().__init__(f"run {run_id} is running in {who}: refused, nothing was sent")
        self.run_id = run_id
        self.holder = holder
