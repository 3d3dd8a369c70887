"""What a customer test case may touch: read-only SQL and declared HTTP hosts, checked at load and at run."""
