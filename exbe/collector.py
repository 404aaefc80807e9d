"""Python's cyclic garbage collector while servers run (issue 26).

Every server's conversation allocates tens of thousands of short-lived objects (XML elements, PSRP messages,
deserialized objects); with CPython's defaults the collector runs a young collection every 700 allocations and a
full one every hundred of those, each full one walking every object the imports made. In a 100-server verify that
was about 3 ms of CPU per server, a twelfth of exbe's. While a fleet runs, :func:`quiet` puts what exists before the
run (the imports, the settings) out of the collector's way (``gc.freeze``) and lets the young generation grow to
:data:`YOUNG_THRESHOLD` allocations before a collection; reference counting frees almost everything anyway, and
cycles are still collected. Afterwards the collector is as it was (in-process callers such as the test suite keep
no frozen objects).
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

#: Allocations (less deallocations) between young collections while a fleet runs; CPython's default is 700.
YOUNG_THRESHOLD = 20_000


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Inside: start-up objects frozen, young collections every :data:`YOUNG_THRESHOLD` allocations."""
    threshold = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, *threshold[1:])
    try:
        yield
    finally:
        gc.set_threshold(*threshold)
        gc.unfreeze()
