"""Built-in plugin: the tamper-evident audit log on the local file system (``--audit-dir``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from servecore.hookspecs import RegisterAuditSink, hookimpl

if TYPE_CHECKING:
    from servecore.audit.config import AuditConfig
    from servecore.config import ServeConfig


def audit_config(config: ServeConfig) -> AuditConfig:
    """The audit log's options from the server's (``--audit-*``)."""
    from servecore.audit.config import AuditConfig

    if not config.audit_dir or not config.audit_keys:
        raise ValueError("audit_config needs audit_dir and audit_keys")
    return AuditConfig(
        directory=Path(config.audit_dir),
        key_dir=Path(config.audit_keys),
        fsync=config.audit_fsync,
        on_failure=config.audit_on_failure,
        checkpoint_every=config.audit_checkpoint_every,
        checkpoint_interval_s=config.audit_checkpoint_seconds,
        anchor_dir=Path(config.audit_anchor_dir) if config.audit_anchor_dir else None,
        retention_months=config.audit_retention_months,
    )


@hookimpl
def servecore_register_audit_sinks(register: RegisterAuditSink, config: ServeConfig) -> None:
    if not config.audit_dir:
        return
    if not config.audit_keys:
        from servecore.errors import ConfigError

        raise ConfigError("--audit-dir needs --audit-keys (make the keys with: servecore audit keygen DIR)")
    from servecore.audit.log import AuditLog

    register(AuditLog(audit_config(config)))
