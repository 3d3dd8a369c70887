"""Sends the customer messages through the SMTP provider's connection, as plain text with an HTML twin.

The SMTP provider's ``send_email_smtp`` sends an HTML-only body; customers' mail clients and archives
deserve a ``multipart/alternative`` message with a plain-text part. The provider's hook still does
what it is good at (reading the Airflow connection, TLS, login, connect retries); this module only
builds the MIME message and hands it to the hook's client (``compat.smtp_client_of``: the hook has no
public accessor for it). The sending task's XCom gets the Message-ID and recipients, so an audit can
match the task to the mail server's log.
"""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any

from airflow.providers.smtp.hooks.smtp import SmtpHook

from managed_upgrade.messages.customer_emails import CustomerEmail
from managed_upgrade_airflow.compat import smtp_client_of

DEFAULT_SMTP_CONN_ID = "smtp_default"


class EmailDeliveryError(RuntimeError):
    """A customer message did not reach the mail server; says which connection, message and recipients."""


class _MultipartSmtpHook(SmtpHook):
    """:class:`SmtpHook` that can send a ready-made :class:`EmailMessage` (text + HTML alternatives)."""

    def send_message(self, message: EmailMessage) -> dict[str, tuple[int, bytes]]:
        client = smtp_client_of(self)
        if client is None:
            raise EmailDeliveryError(f"SMTP connection {self.smtp_conn_id} is not open")
        return client.send_message(message)


def new_message_id(from_email: str | None) -> str:
    """A fresh RFC 5322 Message-ID in the sender's domain."""
    return make_msgid(domain=(from_email or "").rpartition("@")[2] or None)


def build_mime_message(
    email: CustomerEmail, from_email: str, reply_to: str | None = None, message_id: str | None = None
) -> EmailMessage:
    """The RFC 5322 message: To the customer, Cc consultants and project managers, text + HTML.

    ``message_id``: the Message-ID to send under (a re-send of the same message keeps its id).
    """
    message = EmailMessage()
    message["Subject"] = email.subject
    message["From"] = from_email
    message["To"] = ", ".join(email.to)
    if email.cc:
        message["Cc"] = ", ".join(email.cc)
    if reply_to:
        message["Reply-To"] = reply_to
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = message_id or new_message_id(from_email)
    message.set_content(email.text)
    message.add_alternative(email.html, subtype="html")
    return message


def send_customer_email(
    email: CustomerEmail,
    *,
    smtp_conn_id: str = DEFAULT_SMTP_CONN_ID,
    from_email: str | None = None,
    reply_to: str | None = None,
    message_id: str | None = None,
) -> dict[str, Any]:
    """Send ``email``; returns ``{kind, message_id, subject, from, to, cc, smtp_conn_id}`` for XCom.

    ``from_email`` defaults to the connection's ``from_email`` extra; ``message_id`` to a new one.
    Every failure is raised as :class:`EmailDeliveryError` naming the connection, the message and
    all recipients.
    """
    recipients = [*email.to, *email.cc]
    where = (
        f"{email.kind} message {email.subject!r} via SMTP connection {smtp_conn_id} "
        f"to {', '.join(recipients) or '(nobody)'}"
    )
    if not email.to:
        raise EmailDeliveryError(f"cannot send {where}: no customer recipient (contacts.customer is empty)")
    try:
        hook = _MultipartSmtpHook(smtp_conn_id=smtp_conn_id)
        with hook:  # logs in; its __enter__ returns this same hook, declared as a plain SmtpHook
            sender = from_email or hook.from_email
            if not sender:
                raise EmailDeliveryError(
                    f"cannot send {where}: no sender address; set the extra from_email of connection "
                    f"{smtp_conn_id} or pass from_email"
                )
            message = build_mime_message(email, sender, reply_to, message_id)
            refused = hook.send_message(message)
    except EmailDeliveryError:
        raise
    except Exception as exc:  # connection, auth, protocol, refusal: one clear message for the task log
        raise EmailDeliveryError(f"sending {where} failed: {type(exc).__name__}: {exc}") from exc
    if refused:
        detail = ", ".join(f"{address} ({code} {reply.decode(errors='replace')})"
                           for address, (code, reply) in refused.items())  # fmt: skip
        raise EmailDeliveryError(f"{where}: the server refused {detail}; the others were sent")
    return {
        "kind": email.kind,
        "message_id": message["Message-ID"],
        "subject": email.subject,
        "from": sender,
        "to": list(email.to),
        "cc": list(email.cc),
        "smtp_conn_id": smtp_conn_id,
    }
