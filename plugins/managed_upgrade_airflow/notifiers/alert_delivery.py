"""Sends one alert on every channel the customer config asks for, reporting each channel's outcome.

The SLA watcher (a worker task or a trigger, through ``asyncio.to_thread``) calls :func:`send_alert`
after claiming an alert in the ledger and stores the returned outcomes with
``Ledger.mark_alert_notified``. A channel that fails is reported, not raised: the other channel
still goes out, and the ledger shows which one needs attention.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from managed_upgrade.sla.alerts import Alert, alert_recipients, webhook_payload
from managed_upgrade_airflow.email_sender import DEFAULT_SMTP_CONN_ID
from managed_upgrade_airflow.notifiers.sla_email_notifier import SlaEmailNotifier
from managed_upgrade_airflow.notifiers.webhook_notifier import GLOBAL_WEBHOOK_CONN_ID, WebhookNotifier

if TYPE_CHECKING:
    from managed_upgrade.config import CustomerConfig

log = logging.getLogger(__name__)

SENT = "sent"


def webhook_conn_id_for(config: CustomerConfig) -> str | None:
    """The customer's webhook connection, else the global one if it is defined, else none."""
    if config.alerts.webhook_conn_id:
        return config.alerts.webhook_conn_id
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        BaseHook.get_connection(GLOBAL_WEBHOOK_CONN_ID)
    except AirflowNotFoundException:
        return None
    return GLOBAL_WEBHOOK_CONN_ID


def send_alert(
    alert: Alert, config: CustomerConfig, *, smtp_conn_id: str = DEFAULT_SMTP_CONN_ID
) -> dict[str, str]:
    """Send ``alert`` by e-mail (if ``alerts.email``) and webhook; ``{channel: "sent" | "error: ..."}``.

    Channels are ``email`` and ``webhook``; a channel the config does not use is absent. Never raises
    for a delivery failure, so one channel failing does not stop the other.
    """
    outcomes: dict[str, str] = {}
    if config.alerts.email:
        try:
            to, cc = alert_recipients(alert, config)
            SlaEmailNotifier(alert, to, cc, smtp_conn_id=smtp_conn_id).notify({})
            outcomes["email"] = SENT
        except Exception as exc:  # reported to the caller and the ledger, not raised
            log.error("SLA alert e-mail for %s/%s failed: %s", alert.dag_id, alert.budget_unit, exc)
            outcomes["email"] = f"error: {exc}"
    try:
        conn_id = webhook_conn_id_for(config)
        if conn_id is not None:
            WebhookNotifier(webhook_payload(alert), conn_id).notify({})
            outcomes["webhook"] = SENT
    except Exception as exc:
        log.error("SLA alert webhook for %s/%s failed: %s", alert.dag_id, alert.budget_unit, exc)
        outcomes["webhook"] = f"error: {exc}"
    return outcomes
