"""Who is calling /import and the read APIs (spec §4 auth)."""

from __future__ import annotations

import base64
import binascii

from trackhouse.errors import Unauthorized
from trackhouse.projects import Project, Registry
from trackhouse.web.http import Request
from trackhouse.web.payload import query_params

INVALID = "Invalid credentials"
# What the read APIs answer (401) to missing or wrong credentials.
READ_API_REFUSAL = "Invalid credentials: use the project's API secret"


def basic_credentials(header: str | None) -> tuple[str, str] | None:
    """``Basic base64(user:pass)``, or the plain ``user:pass`` some clients send."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic" or not value.strip():
        return None
    value = value.strip()
    try:
        text = base64.b64decode(value + "=" * (-len(value) % 4), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        text = value
    if ":" not in text:
        text += ":"  # a bare secret, as some scripts send
    user, _, password = text.partition(":")
    return user, password


def authenticate(
    registry: Registry, header: str | None, project_id_param: str | None, *, allow_token: bool
) -> Project:
    """The project the credentials give access to, or Unauthorized.

    - project API secret as the user name, empty password;
    - service account ``user:secret``, with ``project_id`` (the account's project);
    - for /import only (``allow_token``), the project token where the project allows it
      (off by default). Never for reading: tokens are public, shipped inside every app.
    """
    credentials = basic_credentials(header)
    if credentials is None:
        raise Unauthorized(INVALID)
    return check_credentials(registry, *credentials, project_id_param, allow_token=allow_token)


def check_credentials(
    registry: Registry,
    user: str,
    password: str,
    project_id_param: str | None,
    *,
    allow_token: bool,
) -> Project:
    """``authenticate``, from the user name and password (see there)."""
    registry.refresh()
    wanted: int | None = None
    if project_id_param:
        try:
            wanted = int(project_id_param)
        except ValueError as exc:
            raise Unauthorized(INVALID) from exc
    if password:
        account_project = registry.service_account(user, password)
        if account_project is None or (wanted is not None and wanted != account_project):
            raise Unauthorized(INVALID)
        project = registry.get(account_project)
    else:
        project = registry.by_secret(user)
        if project is None:
            by_token = registry.by_token(user)
            allowed = allow_token and by_token is not None and by_token.allow_token_import
            project = by_token if allowed else None
        if project is not None and wanted is not None and wanted != project.id:
            raise Unauthorized(INVALID)  # another project's secret
    if project is None:
        raise Unauthorized(INVALID)
    return project


async def read_api_request(request: Request, registry: Registry) -> tuple[Project, dict[str, str]]:
    """A read API's caller and parameters (query string, and a POST's form or JSON
    body): the project's secret or a service account, never the public token."""
    params = await query_params(request)
    project = authenticate(
        registry, request.headers.get("authorization"), params.get("project_id"), allow_token=False
    )
    return project, params
