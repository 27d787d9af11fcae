"""Test support: a real Redis server, free ports, component processes."""
