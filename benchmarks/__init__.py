"""The measurements (docs/performance.md), each run by path: `python benchmarks/<name>.py`."""
