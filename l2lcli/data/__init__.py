"""Datasets from their standard files, one module per format or source. Missing data is an error that says how to
get it, never random stand-in data."""
