"""Draws the process model as a Mermaid flowchart, so the README's picture of the DAG cannot drift.

``python -m managed_upgrade.process.diagram`` prints it; a unit test checks the README embeds exactly this.
"""

from __future__ import annotations

from managed_upgrade.process.model import Activity, ProcessModel, Role, load_process_model

_ROLE_LABEL = {Role.CUSTOMER: "customer", Role.CONSULTANT: "consultant", Role.PROJECT_MANAGER: "PM"}


def _node(activity: Activity) -> str:
    shape_open, shape_close = ("{{", "}}") if activity.is_gate else ("[", "]")
    who = _ROLE_LABEL[activity.owner]
    return f'    {activity.stage}_{activity.id}{shape_open}"{activity.title}<br/><i>{who}</i>"{shape_close}'


def mermaid(model: ProcessModel) -> str:
    """Stages as subgraphs (with their budgets), gates as hexagons, edges from ``after``."""
    lines = ["flowchart TB"]
    for stage in model.stages:
        budgets = sorted(
            {u.title + f" {u.days}d" for a in stage.activities if (u := model.budget_unit_of(a.key))}
        )
        label = stage.title + (f" ({', '.join(budgets)})" if budgets else "")
        lines.append(f'  subgraph {stage.id}["{label}"]')
        lines.extend(_node(activity) for activity in stage.activities)
        lines.append("  end")
    for activity in model.activities:
        for upstream in activity.after:
            lines.append(f"  {upstream.replace('.', '_')} --> {activity.stage}_{activity.id}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(mermaid(load_process_model()), end="")
