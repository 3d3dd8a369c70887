"""The simulated CRM estate: real sshd hosts, config databases, a release repository and a fake
vendor installer, so the upgrade DAGs and their tests meet real systems on the loopback interface.

Shell: ``scripts/estate up|down|status|env|release|fault|reset``. Python: ``Estate.load()``.
"""

from crm_estate.estate import (
    ComponentStatus,
    Estate,
    EstateError,
    down,
    host_conn_id,
    is_running,
    reset,
    status,
    up,
)
from crm_estate.installation import Installation

__all__ = [
    "ComponentStatus",
    "Estate",
    "EstateError",
    "Installation",
    "down",
    "host_conn_id",
    "is_running",
    "reset",
    "status",
    "up",
]
