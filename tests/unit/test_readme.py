"""The README stays true: its picture of the process is the one the model draws."""

import re
from pathlib import Path

from managed_upgrade.process.diagram import mermaid
from managed_upgrade.process.model import load_process_model

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_diagram_matches_the_process_model():
    text = README.read_text(encoding="utf-8")
    match = re.search(
        r"<!-- process-diagram:start -->\n```mermaid\n(.*?)```\n<!-- process-diagram:end -->", text, re.S
    )
    assert match, "README.md lost its process-diagram markers"
    assert match[1] == mermaid(load_process_model()), (
        "run: python -m managed_upgrade.process.diagram and paste it"
    )


def test_diagram_shows_every_activity_and_gate_shape():
    model = load_process_model()
    drawn = mermaid(model)
    for activity in model.activities:
        node = f"{activity.stage}_{activity.id}"
        assert node + ("{{" if activity.is_gate else "[") in drawn
    assert "prod_customer_sign_off --> closure_verify_target_versions" in drawn
