"""Build the bundled offline sample, data/sample/<TICKER>.parquet, from Yahoo CSV exports.

Usage: python data/build_sample.py [CSV_DIR]   (default: ../shared/data/prices)

The CSVs are real Yahoo Finance exports (see data/sample/README.md); they go through the
same strict parser and validation as `--source csv`, so Yahoo's all-null rows are
dropped here exactly as ingest drops them.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SAMPLE_DIR = ROOT / "data" / "sample"  # the repository's copy, which the package ships

from tickercast.market.schema import to_price_table  # noqa: E402
from tickercast.market.sources import load_csv  # noqa: E402
from tickercast.market.validate import validate_prices  # noqa: E402


def main(csv_dir: Path) -> None:
    SAMPLE_DIR.mkdir(parents=True, exist_ok=True)
    for path in sorted(csv_dir.glob("*.csv")):
        loaded = load_csv(path)
        validate_prices(loaded.prices, path.stem)
        target = SAMPLE_DIR / f"{path.stem.upper()}.parquet"
        pq.write_table(to_price_table(loaded.prices), target, compression="zstd")
        print(
            f"{target.name}: {len(loaded.prices)} rows, "
            f"{loaded.dropped_null_rows} null rows dropped"
        )


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT.parent / "shared" / "data" / "prices")
