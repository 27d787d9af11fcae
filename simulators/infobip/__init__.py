"""Infobip Conversations API simulator: the ``/ccaas/1`` endpoints ccbridge uses (same
paths and documented behaviour), the Subscriptions API call that registers the events
webhook, and a ``/_sim/`` control API for tests, benchmarks and the demo.

Run in-process under an ASGI transport (tests) or as a process with
``python -m ccbridge.simulators.infobip --port N``.
"""

from ccbridge.simulators.infobip.app import create_app
from ccbridge.simulators.infobip.state import Failure, InfobipSimState, SimError
from ccbridge.simulators.infobip.webhooks import SIGNATURE_HEADER, sign

__all__ = ["SIGNATURE_HEADER", "Failure", "InfobipSimState", "SimError", "create_app", "sign"]
