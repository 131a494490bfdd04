"""Built-in plugin: API keys from a file (``--api-keys-file``).

File format: one ``name:key`` per line; blank lines and lines starting with ``#`` are ignored;
whitespace around name and key is stripped; names and keys must be unique and keys non-empty.
A request authenticates with ``Authorization: Bearer <key>``; the key's name becomes its principal.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

from servecore.errors import AuthenticationError, ConfigError
from servecore.hookspecs import RegisterAuthenticator, hookimpl
from servecore.types import Principal

if TYPE_CHECKING:
    from servecore.config import ServeConfig


def parse_api_keys(text: str, *, source: str = "<keys>") -> dict[str, str]:
    """Map key -> name from the file's *text*; errors name the file and line."""
    keys: dict[str, str] = {}
    names: set[str] = set()
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, key = line.partition(":")
        name, key = name.strip(), key.strip()
        if not sep or not name or not key:
            raise ConfigError(f"{source}:{number}: expected 'name:key'")
        if name in names:
            raise ConfigError(f"{source}:{number}: name {name!r} appears twice")
        if key in keys:
            raise ConfigError(f"{source}:{number}: the key of {name!r} is already used by {keys[key]!r}")
        keys[key] = name
        names.add(name)
    if not keys:
        raise ConfigError(f"{source}: no keys found")
    return keys


@dataclass(frozen=True)
class ApiKeyAuthenticator:
    """Checks ``Authorization: Bearer <key>`` against the keys file, in constant time per key."""

    keys: Mapping[str, str]

    def __call__(self, headers: Mapping[str, str]) -> Principal | None:
        header = headers.get("authorization")
        if header is None:
            return None
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthenticationError("the Authorization header must be 'Bearer <key>'")
        token = token.strip()
        found = None
        for key, name in self.keys.items():
            if hmac.compare_digest(key.encode(), token.encode()):
                found = name
        if found is None:
            raise AuthenticationError("invalid API key")
        return Principal(name=found, method="api-key")


@hookimpl
def servecore_register_authenticators(register: RegisterAuthenticator, config: ServeConfig) -> None:
    if not config.api_keys_file:
        return
    path = Path(config.api_keys_file)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read --api-keys-file {path}: {exc.strerror}") from exc
    register(ApiKeyAuthenticator(parse_api_keys(text, source=str(path))))
