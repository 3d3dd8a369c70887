"""Human gates: HITL operators whose body shows run-time facts and whose answers enter the ledger.

Every gate of the process derives from :class:`FactsGate`, so mirroring answers into the audit trail
happens in one place and no gate can forget it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypedDict

from airflow.providers.standard.operators.hitl import HITLOperator

from managed_upgrade_airflow.ledger_access import open_ledger

if TYPE_CHECKING:
    from airflow.sdk import Context


class HitlUser(TypedDict):
    """An assignee as HITL operators take it (the shape of the task SDK's ``HITLUser``)."""

    id: str
    name: str


def hitl_users(usernames: list[str] | tuple[str, ...]) -> list[HitlUser]:
    """``assigned_users`` for HITL operators from Airflow usernames (simple auth manager: id == name)."""
    return [{"id": name, "name": name} for name in usernames]


class FactsGate(HITLOperator):
    """A HITL gate whose markdown body is rendered when it opens and whose answer is audited.

    Subclasses override :meth:`render_body` (facts from XCom or the ledger) and :meth:`on_answer`
    (what the answer sets in motion). The body is rendered in ``execute`` rather than templated
    because the facts come from the ledger, not only from XCom.
    """

    def render_body(self, context: Context) -> str:
        return self.body or ""

    def execute(self, context: Context) -> Any:
        self.body = self.render_body(context)
        return super().execute(context)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        answer = super().execute_complete(context, event)
        self.record_answer(context, answer)
        return self.on_answer(context, answer)

    def record_answer(self, context: Context, answer: dict[str, Any]) -> None:
        ti = context["ti"]
        user = answer.get("responded_by_user") or {}
        with open_ledger() as ledger:
            ledger.record_gate_answer(
                ti.dag_id,
                ti.run_id,
                ti.task_id,
                ti.try_number,
                user.get("name") or user.get("id") or "unknown",
                answer["responded_at"],
                list(answer.get("chosen_options") or []),
                dict(answer.get("params_input") or {}),
            )

    def on_answer(self, context: Context, answer: dict[str, Any]) -> Any:
        """What the answer sets in motion; by default the answer is the task's result."""
        return {
            "chosen_options": list(answer.get("chosen_options") or []),
            "params_input": dict(answer.get("params_input") or {}),
            "responded_by": (answer.get("responded_by_user") or {}).get("name"),
            "responded_at": answer["responded_at"].isoformat(),
        }
