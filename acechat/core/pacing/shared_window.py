"""One process's share of a limit that several processes draw on together (Discord's global limit of a
bot token, whichever process makes the call).

`SharedWindow` is an `InFlightWindow` (so it plugs into the scheduler like any limit) holding
`count // members` of the calls: with every process keeping to its share, their sum stays under the
limit. Who the members are is told from outside (storage.shared_budget, through PostgreSQL). Until it
has joined, and whenever it cannot tell who else draws on the limit, a process spends nothing; when it
joins it waits long enough for the others to have seen it, and for their calls under the larger shares
they held until then to leave the window.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from acechat.core.pacing.limits import InFlightWindow


class SharedWindow(InFlightWindow):
    def __init__(self, count: int, window: float, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(count, window, clock)
        self.total = count
        self.members = 0
        self._opens_at = math.inf  # closed until it has joined

    def share(self, members: int, *, settle: float | None = None) -> None:
        """`members` processes (this one included) draw on the limit now. `settle`: this process has
        just joined (or come back), and spends from that many seconds on."""
        self.members = max(members, 1)
        self._count = max(self.total // self.members, 1)
        if settle is not None:
            self._opens_at = self._clock() + settle

    def close(self) -> None:
        """Spend nothing until `share` is told again with `settle` (the members are unknown)."""
        self._opens_at = math.inf

    def _closed_for(self) -> float:
        return max(self._opens_at - self._clock(), 0.0)

    def available(self) -> float:
        return 0.0 if self._closed_for() > 0 else super().available()

    def try_acquire(self, reserve: int = 0) -> bool:
        return self._closed_for() <= 0 and super().try_acquire(reserve)

    def delay(self, reserve: int = 0) -> float:
        # While closed with no end known, look again after a window.
        return max(min(self._closed_for(), self._window), super().delay(reserve))
