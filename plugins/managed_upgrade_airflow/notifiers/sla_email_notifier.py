"""Sends an SLA alert as a plain-text e-mail through the SMTP provider's connection.

Alerts are read in mail clients, pagers and ticket systems that all handle plain text; the wording
comes from :mod:`managed_upgrade.sla.alerts`, the delivery (connection, TLS, login) from the SMTP
provider's hook, as the customer messages of :mod:`managed_upgrade_airflow.email_sender` do.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseNotifier

from managed_upgrade.sla.alerts import Alert, email_body, email_subject
from managed_upgrade_airflow.email_sender import (
    DEFAULT_SMTP_CONN_ID,
    EmailDeliveryError,
    _MultipartSmtpHook,
)

if TYPE_CHECKING:
    from airflow.sdk import Context


class SlaEmailNotifier(BaseNotifier):
    """E-mail ``alert`` to ``to`` (copying ``cc``); raises :class:`EmailDeliveryError` if it is not sent."""

    def __init__(
        self,
        alert: Alert,
        to: Sequence[str],
        cc: Sequence[str] = (),
        smtp_conn_id: str = DEFAULT_SMTP_CONN_ID,
        *,
        from_email: str | None = None,
    ) -> None:
        super().__init__()
        self.alert = alert
        self.to = list(to)
        self.cc = list(cc)
        self.smtp_conn_id = smtp_conn_id
        self.from_email = from_email
        self.sent: dict[str, Any] | None = None
        """What was sent (message id, recipients), for the caller's log."""

    def build_message(self, from_email: str) -> EmailMessage:
        message = EmailMessage()
        message["Subject"] = email_subject(self.alert)
        message["From"] = from_email
        message["To"] = ", ".join(self.to)
        if self.cc:
            message["Cc"] = ", ".join(self.cc)
        message["Date"] = formatdate(localtime=False)
        message["Message-ID"] = make_msgid(domain=from_email.rpartition("@")[2] or None)
        message["X-Managed-Upgrade-Alert"] = (
            f"{self.alert.kind}; {self.alert.dag_id}; {self.alert.budget_unit}"
        )
        message.set_content(email_body(self.alert))
        return message

    def notify(self, context: Context) -> None:
        where = (
            f"{self.alert.kind} alert {email_subject(self.alert)!r} via SMTP connection {self.smtp_conn_id} "
            f"to {', '.join([*self.to, *self.cc]) or '(nobody)'}"
        )
        if not self.to:
            raise EmailDeliveryError(
                f"cannot send {where}: no recipient; check the contacts (and their user) in the "
                "customer config"
            )
        try:
            hook = _MultipartSmtpHook(smtp_conn_id=self.smtp_conn_id)
            with hook:  # logs in; its __enter__ returns this same hook, declared as a plain SmtpHook
                sender = self.from_email or hook.from_email
                if not sender:
                    raise EmailDeliveryError(
                        f"cannot send {where}: no sender address; set the extra from_email of connection "
                        f"{self.smtp_conn_id}"
                    )
                message = self.build_message(sender)
                refused = hook.send_message(message)
        except EmailDeliveryError:
            raise
        except Exception as exc:  # connection, auth, protocol: one clear message for the log
            raise EmailDeliveryError(f"sending {where} failed: {type(exc).__name__}: {exc}") from exc
        if refused:
            detail = ", ".join(f"{address} ({code})" for address, (code, _) in refused.items())
            raise EmailDeliveryError(f"{where}: the server refused {detail}; the others were sent")
        self.sent = {"message_id": message["Message-ID"], "to": self.to, "cc": self.cc}

    async def async_notify(self, context: Context) -> None:
        """For the triggerer (Deadline Alerts): the blocking SMTP exchange runs in a worker thread."""
        await asyncio.to_thread(self.notify, context)
