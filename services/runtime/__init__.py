"""Shared runtime of every ccbridge process (not a service): settings helpers, logging,
errors, gRPC server bootstrap, gRPC client channels, Redis, the Infobip HTTP client."""
