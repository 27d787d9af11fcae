"""CCaaS simulator: the far side of ccbridge's generic ``webhook`` connector, for tests,
benchmarks and the demo (``python -m ccbridge.simulators.ccaas``)."""

from ccbridge.simulators.ccaas.app import create_app, signature
from ccbridge.simulators.ccaas.state import CcaasState

__all__ = ["CcaasState", "create_app", "signature"]
