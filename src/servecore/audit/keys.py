"""Key material of the audit log, kept in its own directory (away from the log: GDPR Art. 4(5)).

::

    KEYDIR/                      0700
      hmac.key                   0600  32 random bytes (hex): pseudonyms and keyed digests
      signing/<key id>.pem       0600  Ed25519 private keys (PKCS#8), one per rotation
      signing-keys.json          0644  the public key set with validity intervals (for verifiers)
      subjects/<pid>.key         0600  per-subject AES-256-GCM key: 8-byte generation + 32-byte key

A key id is the hex of the first 4 bytes of ``SHA-256("servecore-audit\\n" || 0x01 || public
key)`` (C2SP's key hint shape). ``<pid>`` is the subject's pseudonym, so no subject id appears in
clear anywhere. Erasing a subject overwrites and deletes its key file (crypto-shredding); key
backups must expire on their own schedule for that to mean anything.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from servecore.audit.errors import AuditKeyError
from servecore.audit.records import format_ts, parse_ts

HMAC_FILE = "hmac.key"
SIGNING_DIR = "signing"
KEYSET_FILE = "signing-keys.json"
SUBJECT_DIR = "subjects"
_GEN_BYTES = 8


def key_id_of(public: Ed25519PublicKey) -> str:
    """The 4-byte key hint of an Ed25519 public key, as hex."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(b"servecore-audit\n\x01" + raw).digest()[:4].hex()


@dataclass(frozen=True)
class PublicKey:
    """One verification key and the interval (µs since the epoch) it may sign in."""

    key_id: str
    public: Ed25519PublicKey
    not_before: int | None = None
    not_after: int | None = None

    def valid_at(self, us: int) -> bool:
        """Whether a signature made at *us* falls in this key's validity interval."""
        if self.not_before is not None and us < self.not_before:
            return False
        return self.not_after is None or us < self.not_after

    def verify(self, signature: bytes, message: bytes) -> bool:
        """Whether *signature* is this key's over *message*."""
        try:
            self.public.verify(signature, message)
        except InvalidSignature:
            return False
        return True

    def to_json(self) -> dict[str, object]:
        raw = self.public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return {
            "alg": "ed25519",
            "key_id": self.key_id,
            "public_key": base64.b64encode(raw).decode(),
            "not_before": None if self.not_before is None else format_ts(self.not_before),
            "not_after": None if self.not_after is None else format_ts(self.not_after),
        }


class KeySet:
    """The verification keys of a log, by key id."""

    def __init__(self, keys: list[PublicKey]) -> None:
        self.keys = {k.key_id: k for k in keys}

    def get(self, key_id: str) -> PublicKey | None:
        return self.keys.get(key_id)

    def to_bytes(self) -> bytes:
        body = {"v": 1, "keys": [k.to_json() for k in self.keys.values()]}
        return (json.dumps(body, indent=2, sort_keys=True) + "\n").encode()

    @classmethod
    def load(cls, path: Path) -> KeySet:
        """Read a key set file, or a single Ed25519 public key in PEM (no validity interval)."""
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise AuditKeyError(f"cannot read public keys {path}: {exc.strerror}") from None
        if data.lstrip().startswith(b"-----BEGIN PUBLIC KEY"):
            public = serialization.load_pem_public_key(data)
            if not isinstance(public, Ed25519PublicKey):
                raise AuditKeyError(f"{path} is not an Ed25519 public key")
            return cls([PublicKey(key_id_of(public), public)])
        try:
            body = json.loads(data)
            keys = []
            for entry in body["keys"]:
                raw = base64.b64decode(entry["public_key"], validate=True)
                public = Ed25519PublicKey.from_public_bytes(raw)
                nb, na = entry.get("not_before"), entry.get("not_after")
                key = PublicKey(
                    key_id_of(public), public,
                    None if nb is None else parse_ts(nb), None if na is None else parse_ts(na),
                )
                if key.key_id != entry["key_id"]:
                    raise ValueError(f"key id {entry['key_id']} does not match its key")
                keys.append(key)
        except (ValueError, KeyError, TypeError) as exc:
            raise AuditKeyError(f"{path} is not a valid key set: {exc}") from None
        return cls(keys)


@dataclass(frozen=True)
class SigningKey:
    """The private half of a :class:`PublicKey`."""

    key_id: str
    private: Ed25519PrivateKey

    def sign(self, message: bytes) -> bytes:
        return self.private.sign(message)


def _write_secret(path: Path, data: bytes) -> None:
    """Create *path* with mode 0600 (never overwriting) and make it durable."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _replace_file(path: Path, data: bytes, mode: int = 0o644) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _new_signing_key(directory: Path, not_before: int) -> PublicKey:
    private = Ed25519PrivateKey.generate()
    public = PublicKey(key_id_of(private.public_key()), private.public_key(), not_before)
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    _write_secret(directory / SIGNING_DIR / f"{public.key_id}.pem", pem)
    return public


def keygen(directory: Path, *, now_us: int | None = None) -> str:
    """Create a key directory (HMAC key, first signing key, public key set); returns the key id.

    Refuses to touch a directory that already holds keys.
    """
    directory = Path(directory)
    if (directory / HMAC_FILE).exists() or (directory / KEYSET_FILE).exists():
        raise AuditKeyError(f"{directory} already holds audit keys (rotate instead)")
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    (directory / SIGNING_DIR).mkdir(mode=0o700, exist_ok=True)
    (directory / SUBJECT_DIR).mkdir(mode=0o700, exist_ok=True)
    _write_secret(directory / HMAC_FILE, os.urandom(32).hex().encode() + b"\n")
    now = now_us if now_us is not None else time.time_ns() // 1000
    public = _new_signing_key(directory, now)
    _replace_file(directory / KEYSET_FILE, KeySet([public]).to_bytes())
    _fsync_dir(directory)
    return public.key_id


def rotate_signing_key(directory: Path, *, valid_from_us: int | None = None) -> str:
    """Add a signing key valid from *valid_from_us* (default now); the key it replaces stops
    being valid then. Returns the new key id. A running log picks it up at its next checkpoint
    and writes a ``key_rotation`` record."""
    directory = Path(directory)
    keyset = KeySet.load(directory / KEYSET_FILE)
    start = valid_from_us if valid_from_us is not None else time.time_ns() // 1000
    public = _new_signing_key(directory, start)
    keys = []
    for key in keyset.keys.values():
        if key.not_after is None or key.not_after > start:
            key = PublicKey(key.key_id, key.public, key.not_before, start)
        keys.append(key)
    keys.append(public)
    _replace_file(directory / KEYSET_FILE, KeySet(keys).to_bytes())
    return public.key_id


class AuditKeys:
    """The loaded key directory: signing, pseudonyms, keyed digests, per-subject keys."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        try:
            text = (self.directory / HMAC_FILE).read_text().strip()
            self._hmac = bytes.fromhex(text)
        except (OSError, ValueError) as exc:
            raise AuditKeyError(
                f"no usable HMAC key in {self.directory} (run `servecore audit keygen`): {exc}"
            ) from None
        if len(self._hmac) < 32:
            raise AuditKeyError(f"the HMAC key in {self.directory} is shorter than 32 bytes")
        self._lock = threading.Lock()
        self._keyset_version: tuple[int, int, int] | None = None
        self.keyset = KeySet([])
        self.reload()

    @property
    def keyset_path(self) -> Path:
        return self.directory / KEYSET_FILE

    def reload(self) -> bool:
        """Re-read the public key set if its file changed; True when it did."""
        try:
            st = self.keyset_path.stat()
        except OSError as exc:
            raise AuditKeyError(f"cannot read {self.keyset_path}: {exc.strerror}") from None
        # the file is replaced, never rewritten in place: a new inode tells even when two
        # versions share a coarse mtime
        version = (st.st_ino, st.st_mtime_ns, st.st_size)
        if version == self._keyset_version:
            return False
        self.keyset = KeySet.load(self.keyset_path)
        self._keyset_version = version
        return True

    def signing_key(self, now_us: int) -> SigningKey:
        """The newest key valid at *now_us* whose private half is here."""
        candidates = sorted(
            (k for k in self.keyset.keys.values() if k.valid_at(now_us)),
            key=lambda k: k.not_before or 0, reverse=True,
        )
        for key in candidates:
            path = self.directory / SIGNING_DIR / f"{key.key_id}.pem"
            try:
                private = serialization.load_pem_private_key(path.read_bytes(), password=None)
            except (OSError, ValueError):
                continue
            if isinstance(private, Ed25519PrivateKey):
                return SigningKey(key.key_id, private)
        raise AuditKeyError(f"no signing key in {self.directory} is valid at {format_ts(now_us)}")

    # -- pseudonyms and digests ---------------------------------------------------------------

    def pseudonym(self, value: str, *, purpose: str = "principal") -> str:
        """HMAC-SHA256 of *value* (hex), separated by *purpose* so roles do not link."""
        message = purpose.encode() + b"\x00" + value.encode("utf-8", "surrogatepass")
        return hmac.new(self._hmac, message, hashlib.sha256).hexdigest()

    def subject_pid(self, subject: str) -> str:
        """The pseudonym of a data subject (also its key file's name)."""
        return self.pseudonym(subject, purpose="subject")

    def digest(self, data: bytes, *, subject: str | None = None) -> str:
        """A keyed digest of *data*: under the subject's key when there is a subject (so erasing
        the subject also unlinks its digests), else under the HMAC key."""
        key = self._hmac
        if subject is not None:
            key = self.subject_key(subject, create=True)[1]
        return hmac.new(key, b"digest\x00" + data, hashlib.sha256).hexdigest()

    # -- per-subject keys ---------------------------------------------------------------------

    def _subject_path(self, pid: str) -> Path:
        return self.directory / SUBJECT_DIR / f"{pid}.key"

    def key_by_pid(self, pid: str) -> tuple[bytes, bytes] | None:
        """(generation, key) of a subject pseudonym, or None once erased."""
        try:
            data = self._subject_path(pid).read_bytes()
        except FileNotFoundError:
            return None
        if len(data) != _GEN_BYTES + 32:
            raise AuditKeyError(f"subject key {pid[:12]}... is damaged ({len(data)} bytes)")
        return data[:_GEN_BYTES], data[_GEN_BYTES:]

    def subject_key(self, subject: str, *, create: bool) -> tuple[bytes, bytes]:
        """(generation, key) of *subject*, created on first use when *create*."""
        pid = self.subject_pid(subject)
        with self._lock:
            found = self.key_by_pid(pid)
            if found is not None:
                return found
            if not create:
                raise AuditKeyError(f"no key for subject {pid[:12]}...")
            data = os.urandom(_GEN_BYTES + 32)
            (self.directory / SUBJECT_DIR).mkdir(mode=0o700, exist_ok=True)
            try:
                _write_secret(self._subject_path(pid), data)
            except FileExistsError:  # another process made it first
                found = self.key_by_pid(pid)
                if found is not None:
                    return found
                raise
            return data[:_GEN_BYTES], data[_GEN_BYTES:]

    def erase_subject(self, subject: str) -> tuple[str, str | None]:
        """Destroy *subject*'s key: (pid, hex generation erased, or None if there was none)."""
        pid = self.subject_pid(subject)
        path = self._subject_path(pid)
        with self._lock:
            found = self.key_by_pid(pid)
            if found is None:
                return pid, None
            with open(path, "r+b") as f:  # overwrite before unlinking (best effort on CoW disks)
                f.write(b"\x00" * (_GEN_BYTES + 32))
                f.flush()
                os.fsync(f.fileno())
            path.unlink()
            _fsync_dir(path.parent)
        return pid, found[0].hex()
