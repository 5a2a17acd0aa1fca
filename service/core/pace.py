"""The least pace a transfer from outside must keep: ``MinimumRate``.

One bound for every body wanhook takes from a peer it does not control, a video host's answer
(``videofetch.py``) as much as a client's request body (``web/bodies.py``): a peer that drips its bytes just
inside each read's timeout would otherwise hold what it was given (a download slot, a connection, a large
body's slot) for ever.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["MinimumRate"]


class MinimumRate:
    """Whether a transfer keeps up ``rate`` bytes a second over each ``window`` seconds (0: any pace): the
    bound that frees a slot from a host that drips its bytes just inside the read timeout."""

    def __init__(self, rate: int, window: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.window = window
        self._clock = clock
        self._since = clock()
        self._mark = 0  # bytes received by the start of the current window

    def window_ends(self) -> float | None:
        """When the current window ends (on the clock given), or None with no pace to keep: a peer that sends
        nothing at all is checked then, not only when its next bytes come."""
        return self._since + self.window if self.rate else None

    def keeps_up(self, received: int) -> bool:
        now = self._clock()
        if not self.rate or now - self._since < self.window:
            return True
        if received - self._mark < self.rate * (now - self._since):
            return False
        self._since, self._mark = now, received  # the next window starts here
        return True
