"""The benchmarks, run from the repository's root as modules (`python -m bench.paper`), by
`make bench` and its siblings. Each writes its results as JSON under bench/results/, with the
machine it ran on (env.py); report.py turns the newest ones into bench/results/latest.md."""
