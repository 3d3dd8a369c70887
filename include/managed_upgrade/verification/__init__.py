"""Customer test cases: run against an environment and judged against the pre-upgrade baseline."""
