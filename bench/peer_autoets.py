"""The peer of bench/forecast_quality.py: statsforecast's AutoETS on given rolling origins.

Run by forecast_quality.py inside its own virtual environment (`make peer-venv`:
statsforecast 2.1 requires pandas < 3, the project runs on pandas 3), so nothing of the
project is imported here. Reads an .npz with `close` (one series) and `rows` (origin rows),
refits AutoETS (no seasonality) on close[0..o] at every origin o and writes the mean of
its `horizon` daily point forecasts per origin to OUT.npy.

    python bench/peer_autoets.py IN.npz HORIZON OUT.npy
"""

from __future__ import annotations

import sys

import numpy as np
from statsforecast.models import AutoETS


def main(path: str, horizon: int, out: str) -> None:
    data = np.load(path)
    close, rows = data["close"], data["rows"]
    forecasts = np.empty(len(rows))
    for i, row in enumerate(rows):
        fitted = AutoETS(season_length=1).forecast(y=close[: row + 1], h=horizon)
        forecasts[i] = float(np.mean(fitted["mean"]))
    np.save(out, forecasts)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
