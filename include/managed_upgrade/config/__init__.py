"""Customer configs: the validated contract between ops' YAML files and the upgrade DAGs.

``python -m managed_upgrade.config validate FILE...`` checks files before they are deployed.
"""

from managed_upgrade.config.base import ENVIRONMENT_NAMES, EnvironmentName
from managed_upgrade.config.loader import (
    CustomerConfigError,
    customer_config_paths,
    load_customer_config,
    load_customer_configs,
    parse_customer_config,
)
from managed_upgrade.config.models import (
    DAG_ID_PREFIX,
    Alerts,
    Calendar,
    Contact,
    Contacts,
    CustomerConfig,
    CustomerWait,
    Environment,
    Environments,
    FixLoop,
    Questionnaire,
    ReleaseSource,
    RequestCase,
    Users,
    Versions,
)
from managed_upgrade.config.test_cases import (
    CommandExpect,
    CommandTestCase,
    HttpExpect,
    HttpTestCase,
    SqlExpect,
    SqlTestCase,
    TestCase,
)

__all__ = [
    "DAG_ID_PREFIX",
    "ENVIRONMENT_NAMES",
    "Alerts",
    "Calendar",
    "CommandExpect",
    "CommandTestCase",
    "Contact",
    "Contacts",
    "CustomerConfig",
    "CustomerConfigError",
    "CustomerWait",
    "Environment",
    "EnvironmentName",
    "Environments",
    "FixLoop",
    "HttpExpect",
    "HttpTestCase",
    "Questionnaire",
    "ReleaseSource",
    "RequestCase",
    "SqlExpect",
    "SqlTestCase",
    "TestCase",
    "Users",
    "Versions",
    "customer_config_paths",
    "load_customer_config",
    "load_customer_configs",
    "parse_customer_config",
]
