"""acechat benchmarks: `python -m bench` runs them all and prints a table (see bench/README.md)."""
