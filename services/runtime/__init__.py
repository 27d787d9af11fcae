"""Shared runtime of every ccbridge process (not a service): the component shape and its
start/stop (``component``), gRPC server bootstrap and the error policy (``server``,
``errors``), client channels, settings, logging, ports, Redis and leases, and the one
far-side HTTP client and policy (``http_client``, ``farside``)."""
