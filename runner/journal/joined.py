"""A journal whose after-send bookkeeping joins the transaction of the next journal call.

A square-off sends its exits one after the other: each exit's intent is committed before its request
(that never changes), then its acknowledgement (order row and broker call row) was a commit of its own:
two commits per exit. Here the acknowledgement is queued (:data:`runner.journal.bookkeeping.QUEUED`, as
:class:`~runner.journal.bookkeeping.DeferredJournal` queues an armed run's) and written in the same
transaction as the next call that touches the journal: the next exit's intent, a note, a read, or the
batch's day-book read. One commit per exit.

Safety is the DeferredJournal's argument: only writes made after a request left are queued, and every
other call writes them first (in its own transaction), so anything read sees them. A crash before they
land leaves the intent PENDING, looked up by the next start, as a crash a moment before the ack's commit
always did. :meth:`JoinedJournal.write_queued` at the end of the batch writes what is left.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from runner.journal.bookkeeping import QUEUED, DeferredJournal, apply_writes


class JoinedJournal(DeferredJournal):
    """:class:`DeferredJournal` whose queue is written in the transaction of the next other call."""

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if not callable(attr) or name in QUEUED:
            return super().__getattr__(name)
        return self._joined(attr)

    def _joined(self, attr: Callable[..., Any]) -> Callable[..., Any]:
        def joined(*args: Any, **kw: Any) -> Any:
            queued, self._queued = self._queued, []
            if not queued:
                return attr(*args, **kw)
            try:
                with self.committer.fast.group():
                    apply_writes(queued, self.log)
                    return attr(*args, **kw)
            except Exception:
                # rolled back together (a duplicate intent, say): the queued rows alone, then its error
                self.committer.write_now(queued, self.log)
                raise

        return joined
