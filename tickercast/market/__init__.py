"""Market data in: Yahoo and file sources, validation, and the Parquet lake."""
