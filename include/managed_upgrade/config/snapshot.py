"""The customer config a run was started with, frozen for the whole run.

An upgrade runs for weeks while ops keep editing the customers' YAML files. A run must not change its
calendar, its users or its hosts half-way because a file changed: the first of its tasks to start
stores a snapshot of the config in the ledger, and every later task, the SLA watch, the deadline
callbacks and the failure alerts read that snapshot instead of the file. The DAG's shape (its tasks)
is still the file's: Airflow builds it from the DAG version the run was created with.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from managed_upgrade.config.loader import parse_customer_config
from managed_upgrade.config.models import CustomerConfig
from managed_upgrade.process.model import ProcessModel


@dataclass(frozen=True)
class ConfigSnapshot:
    """A config as JSON (what the ledger stores) with its digest, to tell two versions apart cheaply."""

    customer_id: str
    source: str
    document: Mapping[str, Any]
    digest: str
    taken_at: datetime | None = None

    @classmethod
    def of(cls, config: CustomerConfig) -> ConfigSnapshot:
        """The snapshot of a validated config, defaults included (a later release may change them).

        ``None`` values are left out: the models refuse some explicit ``None`` pairs (``rows`` and
        ``scalar`` of an expectation) that they default to. Where leaving them out would not give the
        same config back, the snapshot keeps only what the file set, which always does.
        """
        full = config.model_dump(mode="json")
        document = config.model_dump(mode="json", exclude_none=True)
        if _restored(document, config).model_dump(mode="json") != full:
            document = config.model_dump(mode="json", exclude_unset=True)
        return cls(
            customer_id=config.customer_id,
            source=config.source or f"{config.customer_id}.yaml",
            document=document,
            digest=digest_of(document),
        )

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> ConfigSnapshot:
        """From the ledger's ``run_configs`` row (columns as :meth:`as_row` names them)."""
        return cls(
            customer_id=str(row["customer_id"]),
            source=str(row["source"]),
            document=dict(row["document"]),
            digest=str(row["digest"]),
            taken_at=row.get("taken_at"),
        )

    def as_row(self) -> dict[str, Any]:
        return {
            "customer_id": self.customer_id,
            "source": self.source,
            "document": dict(self.document),
            "digest": self.digest,
        }

    def restore(self, process: ProcessModel | None = None) -> CustomerConfig:
        """The config again, validated as when it was taken (a stored document is never trusted blindly)."""
        return parse_customer_config(
            self.document, f"{self.source} (snapshot {self.digest[:12]})", process=process
        )

    def changed_fields(self, other: ConfigSnapshot) -> list[str]:
        """Top-level fields whose values differ between two snapshots, sorted (for an operator's log)."""
        keys = set(self.document) | set(other.document)
        return sorted(key for key in keys if self.document.get(key) != other.document.get(key))


def _restored(document: Mapping[str, Any], config: CustomerConfig) -> CustomerConfig:
    return parse_customer_config(document, config.source or config.customer_id)


def digest_of(document: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON of a document (sorted keys, no whitespace)."""
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()
