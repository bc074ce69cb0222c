"""The progress bar of long runs: network-epochs done, and an ETA only once it can be estimated.

A run's first progress comes after its programs are compiled, which may take longer than many epochs: a rate
measured from the start would promise an ETA of days. The bar says "compiling" until work is seen, then estimates
the rate from the work done since (its elapsed time stays the true one). Counts are whole network-epochs, so
the bar never passes its total.
"""

from __future__ import annotations

import time

# Seconds of measured work before an ETA is shown (a rate from one or two updates is noise).
_MEASURE = 2.0


class ProgressBar:
    """A tqdm bar over ``total`` network-epochs, fed with network-records (``parts`` a network-epoch)."""

    def __init__(self, total: int, desc: str, parts: int = 1):
        from tqdm.auto import tqdm

        self.total, self.parts = int(total), int(parts)
        self.records = 0  # network-records reported
        self._first: tuple[float, int] | None = None  # (time, network-epochs shown) at the first progress
        # (k and M from 10,000 on; below, whole counts rather than "16.0/640")
        self.bar = tqdm(total=self.total, unit="net-epoch", unit_scale=self.total >= 10_000, desc=desc,
                        bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]",
                        postfix="compiling")

    def update(self, records: int) -> None:
        """``records`` more network-records done (``parts`` make a network-epoch)."""
        self.records += int(records)
        shown = min(self.records // self.parts, self.total)
        now = time.monotonic()
        if shown > self.bar.n and self._first is None:  # the rate is measured from here: before, it was compiling
            self._first = (now, shown)
        self.bar.set_postfix_str(self._eta(now, shown), refresh=False)
        if shown > self.bar.n:
            self.bar.update(shown - self.bar.n)

    def _eta(self, now: float, shown: int) -> str:
        if self._first is None:
            return "compiling"
        since, start = now - self._first[0], self._first[1]
        if since < _MEASURE or shown <= start:
            return "measuring"
        from tqdm import tqdm
        return "ETA " + tqdm.format_interval((self.total - shown) * since / (shown - start))

    def write(self, line: str) -> None:
        self.bar.write(line)

    def close(self) -> None:
        self.bar.close()
