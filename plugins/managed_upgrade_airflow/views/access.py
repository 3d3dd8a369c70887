"""Who is asking and which customers they may see, because Airflow leaves a plugin app unauthenticated.

The caller is identified the way the core API does it: an ``Authorization: Bearer`` JWT wins, else
the UI's ``_token`` cookie (what the browser sends inside the UI's iframe); the token is checked by
the api-server's auth manager (signature, expiry, revocation). Access to a customer is read access to
its DAG, decided by the same auth manager (simple auth manager in the demo, FAB in production), so
the views show exactly what Airflow's own DAG pages would.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, status

from managed_upgrade_airflow import compat


def get_auth_manager() -> Callable[[], Any]:
    """Gives the api-server's auth manager when asked (a dependency, so tests can hand in their own);
    a request without a token is refused before it is asked."""
    return compat.auth_manager


@dataclass(frozen=True)
class Viewer:
    """An authenticated caller and the auth manager that judges their access."""

    user: Any
    manager: Any

    @property
    def user_id(self) -> str:
        return str(self.user.get_id())

    @property
    def name(self) -> str:
        return str(self.user.get_name())

    def readable(self, dag_ids: Collection[str]) -> set[str]:
        """Those of ``dag_ids`` the caller may read."""
        return compat.readable_dag_ids(self.manager, self.user, dag_ids) if dag_ids else set()

    def require(self, dag_id: str) -> None:
        """403 unless the caller may read ``dag_id``."""
        if not compat.can_read_dag(self.manager, self.user, dag_id):
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"you may not read {dag_id}")


def _token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return request.cookies.get(compat.JWT_COOKIE) or None


async def get_viewer(
    request: Request, auth_manager: Annotated[Callable[[], Any], Depends(get_auth_manager)]
) -> Viewer:
    """The caller, or 401 when there is no valid token (missing, expired, revoked, forged)."""
    token = _token(request)
    manager = auth_manager() if token else None
    user = await compat.user_from_token(manager, token) if token else None
    if user is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "log in to Airflow first (no valid token)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return Viewer(user, manager)
