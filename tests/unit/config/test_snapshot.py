"""A run's config snapshot: the same config back, changes named, an invalid document refused."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from managed_upgrade.config import CustomerConfigError, load_customer_config, parse_customer_config
from managed_upgrade.config.snapshot import ConfigSnapshot, digest_of

CUSTOMERS = Path(__file__).resolve().parents[3] / "include" / "customers"
EXAMPLES = ("acme", "globex", "initech")


@pytest.mark.parametrize("customer_id", EXAMPLES)
def test_a_snapshot_restores_the_same_config_with_the_same_digest(customer_id: str) -> None:
    config = load_customer_config(CUSTOMERS / f"{customer_id}.yaml")
    snapshot = ConfigSnapshot.of(config)

    restored = snapshot.restore()

    assert restored.model_dump(mode="json") == config.model_dump(mode="json")
    assert ConfigSnapshot.of(restored).digest == snapshot.digest
    assert snapshot.customer_id == customer_id
    assert snapshot.source == config.source
    assert restored.source == f"{config.source} (snapshot {snapshot.digest[:12]})"


def test_the_snapshot_keeps_defaults_the_file_left_out() -> None:
    """A later release may change a default; the run keeps the one it started with."""
    data = yaml.safe_load((CUSTOMERS / "acme.yaml").read_text())
    data.pop("alerts", None)
    config = parse_customer_config(data, "acme.yaml", file_stem="acme")

    snapshot = ConfigSnapshot.of(config)

    assert snapshot.document["alerts"]["email"] is True
    assert snapshot.document["alerts"]["cc"] == []


def test_the_snapshot_is_plain_json_and_its_digest_is_canonical() -> None:
    config = load_customer_config(CUSTOMERS / "acme.yaml")
    snapshot = ConfigSnapshot.of(config)

    reordered = json.loads(json.dumps(snapshot.document, sort_keys=False))
    reordered = dict(reversed(list(reordered.items())))

    assert digest_of(reordered) == snapshot.digest
    assert len(snapshot.digest) == 64
    assert ConfigSnapshot.from_row(snapshot.as_row()).digest == snapshot.digest


def test_changed_fields_names_the_top_level_fields_that_differ() -> None:
    data = yaml.safe_load((CUSTOMERS / "acme.yaml").read_text())
    before = ConfigSnapshot.of(parse_customer_config(data, "acme.yaml"))
    edited = copy.deepcopy(data)
    edited["fix_loop"] = {**edited.get("fix_loop", {}), "max_rounds": 7}
    edited["name"] = "Acme Corporation (renamed)"
    after = ConfigSnapshot.of(parse_customer_config(edited, "acme.yaml"))

    assert after.digest != before.digest
    assert before.changed_fields(after) == ["fix_loop", "name"]
    assert before.changed_fields(before) == []


def test_a_stored_document_is_validated_again_on_restore() -> None:
    """The ledger's row is input like any other: a tampered or outdated document is refused, named."""
    config = load_customer_config(CUSTOMERS / "acme.yaml")
    snapshot = ConfigSnapshot.of(config)
    tampered = ConfigSnapshot.from_row(
        {**snapshot.as_row(), "document": {**snapshot.document, "customer_id": "Not An Id!"}}
    )

    with pytest.raises(CustomerConfigError) as caught:
        tampered.restore()

    assert any("customer_id" in line for line in caught.value.problems)
    assert all(
        line.startswith(f"{config.source} (snapshot {snapshot.digest[:12]})")
        for line in caught.value.problems
    )
