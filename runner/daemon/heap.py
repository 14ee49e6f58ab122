"""The daemon's long-lived heap kept out of the cyclic GC's full collections.

What a daemon loads once and keeps (playbooks and their models, calendars, instrument masters, broker
clients) is most of its heap, and every full (generation 2) collection walked all of it: at 3,000
playbooks over 100 accounts one took 0.8-1.1 s with the interpreter lock held. One landing in the second
before an instant stalled the claim-lease renewal thread past its lease, and a lone daemon forfeited
~770 of 1,000 fires due together (bench/scaleout.py). :func:`freeze` moves everything alive into the
permanent generation (``gc.freeze``) after a load, so collections walk only what fires allocate.
"""

from __future__ import annotations

import gc


def freeze(*, collect: bool = False) -> int:
    """Freeze what is alive now; with ``collect``, drop the garbage first (at start: a full collection
    then, outside any instant, rather than later inside one). Returns the frozen object count."""
    if collect:
        gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
