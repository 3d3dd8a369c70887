"""Customer e-mails a retried task does not send twice: claimed in the ledger, then sent, then marked.

A task that mails the customer and is retried after a crash (its worker killed, its heartbeat lost)
must not mail again what went out. The e-mail is claimed in the ledger under a key of the run with a
fresh Message-ID before it is handed to the mail server, and marked sent after. A retry that finds it
sent returns what was sent; one that finds it only claimed cannot know whether the server took it
(the try died in between) and sends it again under the same Message-ID, so a duplicate, if any, is
one message to the customer's mail client and to the archive. Both ledger calls survive a ledger
restart (:func:`again_after_outage`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from managed_upgrade_airflow.email_sender import DEFAULT_SMTP_CONN_ID, new_message_id, send_customer_email
from managed_upgrade_airflow.ledger_access import LEDGER_CONN_ID, again_after_outage, open_ledger

if TYPE_CHECKING:
    from managed_upgrade.ledger.store import CustomerEmailRow
    from managed_upgrade.messages.customer_emails import CustomerEmail

log = logging.getLogger(__name__)


def send_customer_email_once(
    email: CustomerEmail,
    *,
    dag_id: str,
    run_id: str,
    email_key: str,
    ledger_conn_id: str = LEDGER_CONN_ID,
    smtp_conn_id: str = DEFAULT_SMTP_CONN_ID,
    from_email: str | None = None,
) -> dict[str, Any]:
    """Send ``email`` unless this run's ``email_key`` went out already; the result as
    :func:`send_customer_email` gives it, plus ``delivery``: ``sent``, ``resent`` (same Message-ID,
    after an interrupted try) or ``already_sent`` (nothing sent now)."""

    def claim() -> CustomerEmailRow:
        with open_ledger(ledger_conn_id) as ledger:
            return ledger.claim_customer_email(dag_id, run_id, email_key, new_message_id(from_email))

    claimed = again_after_outage(claim)
    if claimed["sent_at"] is not None and claimed["sent"] is not None:
        log.info(
            "%s e-mail %s of %s went out at %s; not sent again",
            email_key,
            claimed["message_id"],
            run_id,
            claimed["sent_at"].isoformat(),
        )
        return {**claimed["sent"], "delivery": "already_sent"}
    delivery = "sent" if claimed["attempts"] == 1 else "resent"
    if delivery == "resent":
        log.warning(
            "%s e-mail %s of %s was claimed by an earlier try that did not record it sent; sending it "
            "again under the same Message-ID (attempt %d)",
            email_key,
            claimed["message_id"],
            run_id,
            claimed["attempts"],
        )
    sent = send_customer_email(
        email, smtp_conn_id=smtp_conn_id, from_email=from_email, message_id=claimed["message_id"]
    )

    def mark() -> bool:
        with open_ledger(ledger_conn_id) as ledger:
            return ledger.mark_customer_email_sent(dag_id, run_id, email_key, sent)

    again_after_outage(mark)
    return {**sent, "delivery": delivery}
