"""ccbridge benchmarks: the whole mesh as processes against a bare Starlette + Redis
floor measured in the same run. ``make bench`` or ``python -m bench``; see README.md."""
