"""Comparing runs: the results page, sweeps' rows, costs."""
