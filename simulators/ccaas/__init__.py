"""CCaaS simulator: the far side of ccbridge's generic ``webhook`` connector, for tests,
benchmarks and the demo (``python -m simulators.ccaas``)."""

from simulators.ccaas.app import create_app, signature
from simulators.ccaas.state import CcaasState

__all__ = ["CcaasState", "create_app", "signature"]
