"""Simulators of the far sides ccbridge talks to (Infobip, a CCaaS), part of the product:
they power the tests, the benchmarks and the local demo. Each follows the documented API
of the system it stands in for and adds a small ``/_sim/`` control API."""
