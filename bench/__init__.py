"""Benchmarks: each script prints one JSON object of figures (see bench/README.md).

Run them as modules from the project root, `python -m bench.<name> [--quick]` (`make bench`
runs them all). Nothing in the product or the tests imports this package.
"""
