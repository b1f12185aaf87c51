"""Optional bearer-token authentication of the metrics API (RFC 6750).

Tokens come from an environment variable, never from the blueprint: a blueprint is a
file that gets committed, copied and attached to tickets. They are compared in constant
time against every configured token (no early exit, so the answer's timing says neither
whether nor which token was close), and they never appear in a log line, an error
message, a ``repr`` or the exposition.
"""

from __future__ import annotations

import hmac
import logging
import os
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

from litestar.enums import ScopeType
from litestar.exceptions import NotAuthorizedException

from ..errors import ConfigError

if TYPE_CHECKING:
    from litestar.types import ASGIApp, Receive, Scope, Send

__all__ = (
    "MIN_TOKEN_LENGTH",
    "REFUSAL_REASONS",
    "AuthCounts",
    "BearerAuthMiddleware",
    "BearerTokens",
)

#: Shorter tokens are refused at startup: a guessable secret is no secret.
MIN_TOKEN_LENGTH: Final = 16
#: RFC 6750 ``b64token``: what may follow ``Bearer `` in an Authorization header.
_B64TOKEN: Final = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
_REALM: Final = 'Bearer realm="streammetrics"'

_log = logging.getLogger("streammetrics.http")


class BearerTokens:
    """The accepted tokens; compares without revealing them (``repr`` says how many)."""

    __slots__ = ("_tokens",)

    def __init__(self, tokens: list[str]) -> None:
        if not tokens:
            raise ValueError("at least one bearer token is needed")
        self._tokens = tuple(t.encode("ascii") for t in tokens)

    def __repr__(self) -> str:
        return f"BearerTokens(<{len(self._tokens)} redacted>)"

    def __len__(self) -> int:
        return len(self._tokens)

    def accepts(self, candidate: bytes) -> bool:
        """Constant time in the candidate's content: every token is compared, always."""
        ok = False
        for token in self._tokens:
            ok |= hmac.compare_digest(candidate, token)
        return ok

    @classmethod
    def from_env(cls, env: str, *, component: str, section: str = "auth") -> BearerTokens:
        """Read the comma- or space-separated tokens of ``$env``.

        Raises ``ConfigError`` naming the component, the config ``section`` (``auth``,
        ``ingest.auth``) and the variable (never a token) when it is unset, empty, or
        holds a token that is too short or not RFC 6750.
        """
        path = f"{component}.config.{section}.bearer_tokens_env"
        raw = os.environ.get(env)
        if raw is None:
            raise ConfigError(
                f"metrics endpoint {component!r} has {section} on, but the environment "
                f"variable {env} that holds its bearer tokens is not set",
                path=path,
                value=env,
            )
        tokens = [t for t in re.split(r"[\s,]+", raw) if t]
        if not tokens:
            raise ConfigError(
                f"the environment variable {env} (bearer tokens of {component!r}) is empty",
                path=path,
                value=env,
            )
        for i, token in enumerate(tokens, 1):
            if len(token) < MIN_TOKEN_LENGTH:
                raise ConfigError(
                    f"token {i} of {len(tokens)} in {env} has {len(token)} characters; "
                    f"at least {MIN_TOKEN_LENGTH} are required",
                    path=path,
                    value=env,
                )
            if not _B64TOKEN.fullmatch(token):
                raise ConfigError(
                    f"token {i} of {len(tokens)} in {env} has characters a bearer token "
                    "cannot carry (allowed: letters, digits, - . _ ~ + / and trailing =)",
                    path=path,
                    value=env,
                )
        return cls(tokens)


#: Why a request was refused, as RFC 6750 names it.
REFUSAL_REASONS: Final = ("missing", "invalid_request", "invalid_token")


class AuthCounts:
    """Refused requests by RFC 6750 reason (``missing``, ``invalid_request``,
    ``invalid_token``, and any further ``reasons`` a guard of its own counts), shared by
    every route's middleware instance."""

    def __init__(self, reasons: Sequence[str] = REFUSAL_REASONS) -> None:
        self.refused: dict[str, int] = dict.fromkeys(reasons, 0)


def _authorization(scope: Scope) -> list[bytes]:
    return [v for k, v in scope["headers"] if k == b"authorization"]


class BearerAuthMiddleware:
    """Answers 401 with ``WWW-Authenticate: Bearer`` unless the request carries one of
    the tokens; ``open_paths`` (``/health`` unless ``protect_health``) need none."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        tokens: BearerTokens,
        open_paths: frozenset[str],
        counts: AuthCounts,
    ) -> None:
        self.app = app
        self.tokens = tokens
        self.open_paths = open_paths
        self.counts = counts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.HTTP and scope["path"] not in self.open_paths:
            self._check(scope)
        await self.app(scope, receive, send)

    def _check(self, scope: Scope) -> None:
        values = _authorization(scope)
        if not values:
            self.counts.refused["missing"] += 1
            raise NotAuthorizedException(
                detail="this endpoint needs an 'Authorization: Bearer <token>' header",
                headers={"WWW-Authenticate": _REALM},
            )
        scheme, _, token = values[0].partition(b" ")
        token = token.strip()
        if len(values) > 1 or scheme.lower() != b"bearer" or not token:
            self.counts.refused["invalid_request"] += 1
            raise NotAuthorizedException(
                detail="the Authorization header must be a single 'Bearer <token>'",
                headers={"WWW-Authenticate": f'{_REALM}, error="invalid_request"'},
            )
        if not self.tokens.accepts(token):
            self.counts.refused["invalid_token"] += 1
            client = scope.get("client")
            # Who, never what: the presented token may be a real one mistyped.
            _log.info(
                "refused %s %s from %s: bearer token not accepted",
                scope.get("method", "-"),
                scope["path"],
                client[0] if client else "-",
            )
            raise NotAuthorizedException(
                detail="the bearer token is not accepted",
                headers={"WWW-Authenticate": f'{_REALM}, error="invalid_token"'},
            )
