"""Benchmarks: idemkit against bare apps and peer libraries. Results go to docs/BENCHMARKS.md."""
