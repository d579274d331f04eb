"""What leaves the pipeline: versioned bundles, the registry, forecasts from champions."""
