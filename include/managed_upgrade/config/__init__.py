"""Customer configs: the validated contract between ops' YAML files and the upgrade DAGs.

``python -m managed_upgrade.config validate FILE...`` checks files before they are deployed.
"""

from managed_upgrade.config.base import ENVIRONMENT_NAMES, EnvironmentName
from managed_upgrade.config.loader import (
    CUSTOMERS_DIR_VARIABLE,
    DEFAULT_CUSTOMERS_DIR,
    CustomerConfigError,
    customer_config_paths,
    customers_dir,
    load_customer_config,
    load_customer_configs,
    parse_customer_config,
)
from managed_upgrade.config.models import (
    Alerts,
    Calendar,
    ChangeFreeze,
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
    UpgradeWindow,
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
from managed_upgrade.dag_ids import DAG_ID_PREFIX, dag_id_for
from managed_upgrade.process.model import USER_ROLES, Role

__all__ = [
    "CUSTOMERS_DIR_VARIABLE",
    "DAG_ID_PREFIX",
    "DEFAULT_CUSTOMERS_DIR",
    "ENVIRONMENT_NAMES",
    "USER_ROLES",
    "Alerts",
    "Calendar",
    "ChangeFreeze",
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
    "Role",
    "SqlExpect",
    "SqlTestCase",
    "TestCase",
    "UpgradeWindow",
    "Users",
    "Versions",
    "customer_config_paths",
    "customers_dir",
    "dag_id_for",
    "load_customer_config",
    "load_customer_configs",
    "parse_customer_config",
]
