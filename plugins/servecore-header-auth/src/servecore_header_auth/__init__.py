"""servecore-header-auth: trust an identity header set by a fronting proxy.

For sidecar deployments, where an authenticating proxy (oauth2-proxy, Envoy, nginx with
``auth_request``, a service mesh) is the only way to reach servecore and passes the caller's
identity on in a header. Set ``SERVECORE_HEADER_AUTH_HEADER`` to that header's name
(``X-Forwarded-User``) to turn the plugin on; unset, it registers nothing and the server is as
it would be without it.

When on, a request carrying the header is authenticated as the header's value (the principal's
``method`` is ``header:<name>``). A request without it is left to the other authenticators (the
built-in API keys, if configured) and otherwise answered 401. The health probes stay open.

Only use this where clients cannot reach servecore except through the proxy (servecore listens on
127.0.0.1 by default), and where the proxy removes the header from incoming requests before it sets
its own: anyone who can reach servecore directly can claim any identity.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Mapping

from servecore import hookimpl
from servecore.errors import AuthenticationError, ConfigError
from servecore.hookspecs import RegisterAuthenticator
from servecore.types import Principal

#: The environment variable naming the identity header; the plugin is off when it is unset or empty.
ENV_HEADER = "SERVECORE_HEADER_AUTH_HEADER"
#: Longest identity accepted, in characters.
MAX_IDENTITY = 256

_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")  # an HTTP field name (RFC 9110 token)


@dataclass(frozen=True)
class HeaderAuthenticator:
    """Authenticates a request as the value of *header* (a lower-case field name)."""

    header: str

    def __call__(self, headers: Mapping[str, str]) -> Principal | None:
        value = headers.get(self.header)
        if value is None:
            return None
        identity = value.strip()
        if not identity:
            raise AuthenticationError(f"the {self.header} header is empty")
        if len(identity) > MAX_IDENTITY or not identity.isprintable():
            raise AuthenticationError(f"the {self.header} header does not hold a valid identity")
        return Principal(name=identity, method=f"header:{self.header}")


def from_environ(environ: Mapping[str, str]) -> HeaderAuthenticator | None:
    """The authenticator *environ* configures, or None when ``SERVECORE_HEADER_AUTH_HEADER`` is unset."""
    name = environ.get(ENV_HEADER, "").strip()
    if not name:
        return None
    if not _TOKEN.match(name):
        raise ConfigError(f"{ENV_HEADER}={name!r} is not an HTTP header name")
    if name.lower() in ("authorization", "cookie"):
        raise ConfigError(f"{ENV_HEADER}={name!r}: that header carries credentials, not an identity")
    return HeaderAuthenticator(name.lower())


@hookimpl
def servecore_register_authenticators(register: RegisterAuthenticator) -> None:
    authenticator = from_environ(os.environ)
    if authenticator is not None:
        register(authenticator)
