"""Who may use the server: the password, the tokens it buys, and a brake on guessing.

No web framework here: the handlers only call these objects. Secrets are compared
in constant time (``hmac.compare_digest`` over SHA-256 digests, so that neither the
content nor the length of a guess leaks through timing), and tokens are kept only
as digests, so a dump of the server's memory does not hand out live tokens.
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import ipaddress
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["LoginLimiter", "PasswordCheck", "PasswordError", "Token", "TokenStore"]
__all__ += ["bearer_or_query", "is_loopback", "resolve_password"]

DEFAULT_DURATION_MS = 86_400_000  # OpenMOLE's: a token lives 24 h


class PasswordError(Exception):
    """No usable server password: the message says what is wrong and how to give one."""


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest()


@dataclass(frozen=True)
class Token:
    """An issued token; ``issued``/``expires`` are in the store's clock (seconds)."""

    token: str
    duration_ms: int
    issued: float
    expires: float


class TokenStore:
    """Tokens bought with the password, valid ``duration_ms`` from their issue.

    Thread-safe: the token API and the /job API check tokens from handler threads.
    """

    def __init__(
        self,
        duration_ms: int = DEFAULT_DURATION_MS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if duration_ms <= 0:
            raise ValueError(f"token duration must be positive, got {duration_ms} ms")
        self.duration_ms = duration_ms
        self._clock = clock
        self._lock = threading.Lock()
        self._expiry: dict[bytes, float] = {}  # SHA-256(token) -> expiry time
        self._next_prune = clock()

    def issue(self) -> Token:
        """A new token: 32 random bytes, URL-safe (43 characters, 256 bits of entropy)."""
        value = secrets.token_urlsafe(32)
        with self._lock:
            now = self._clock()
            expires = now + self.duration_ms / 1000
            self._prune(now)
            self._expiry[_digest(value)] = expires
        return Token(value, self.duration_ms, now, expires)

    def check(self, token: str | None) -> bool:
        """Whether ``token`` is one we issued and it has not expired nor been revoked."""
        if not token:
            return False
        candidate = _digest(token)
        with self._lock:
            now = self._clock()
            self._prune(now)
            expires = self._expiry.get(candidate)
            # Timing can at most tell whether SHA-256(guess) is in the table, nothing
            # about any token's bytes; compare_digest runs for unknown tokens too.
            stored = candidate if expires is not None else bytes(len(candidate))
            if not hmac.compare_digest(stored, candidate) or expires is None:
                return False
            if now >= expires:
                del self._expiry[candidate]
                return False
            return True

    def revoke(self, token: str) -> None:
        """Forget ``token`` (unknown tokens are ignored)."""
        with self._lock:
            self._expiry.pop(_digest(token), None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._expiry)

    def _prune(self, now: float) -> None:
        # A full sweep at most once a minute: issue and check stay O(1) on a busy server.
        if now >= self._next_prune:
            for key in [k for k, exp in self._expiry.items() if now >= exp]:
                del self._expiry[key]
            self._next_prune = now + 60.0


class PasswordCheck:
    """The server password (``None``: no-password mode, every candidate passes)."""

    def __init__(self, password: str | None) -> None:
        self._digest = None if password is None else _digest(password)

    @property
    def required(self) -> bool:
        return self._digest is not None

    def verify(self, candidate: str) -> bool:
        """Constant time whatever the candidate's length: digests are compared."""
        if self._digest is None:
            return True
        return hmac.compare_digest(self._digest, _digest(candidate))


@dataclass
class _Record:
    failures: list[float] = field(default_factory=list)
    blocked_until: float = 0.0
    strikes: int = 0  # blocks so far: each one doubles the next
    last_seen: float = 0.0


class LoginLimiter:
    """Refuse an address for a while after repeated wrong passwords.

    ``max_failures`` failures within ``window`` seconds block the address for
    ``base_block`` seconds; once blocked, each further failure blocks it again for
    twice as long, up to ``max_block``. A success forgets the address. The table is
    bounded: idle addresses are forgotten and at most ``max_entries`` are kept
    (least recently seen go first), so a flood of addresses cannot exhaust memory.
    """

    def __init__(
        self,
        max_failures: int = 5,
        window: float = 60.0,
        base_block: float = 60.0,
        max_block: float = 900.0,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_failures = max_failures
        self.window = window
        self.base_block = base_block
        self.max_block = max_block
        self.max_entries = max_entries
        self._clock = clock
        self._lock = threading.Lock()
        self._records: OrderedDict[str, _Record] = OrderedDict()
        self._next_sweep = clock()

    def check(self, address: str) -> float | None:
        """Seconds ``address`` must still wait (for ``Retry-After``), or None if it may try."""
        with self._lock:
            now = self._clock()
            record = self._records.get(address)
            if record is None or record.blocked_until <= now:
                return None
            return record.blocked_until - now

    def failure(self, address: str) -> None:
        """Record a wrong password from ``address``."""
        with self._lock:
            now = self._clock()
            self._sweep(now)
            record = self._records.get(address)
            if record is None:
                record = self._records[address] = _Record()
            self._records.move_to_end(address)
            record.last_seen = now
            if record.blocked_until > now:
                return  # refused before its password was even looked at
            record.failures = [t for t in record.failures if now - t < self.window]
            record.failures.append(now)
            if record.strikes or len(record.failures) >= self.max_failures:
                block = min(self.base_block * 2**record.strikes, self.max_block)
                record.strikes += 1
                record.blocked_until = now + block
                record.failures.clear()
            while len(self._records) > self.max_entries:
                self._records.popitem(last=False)

    def success(self, address: str) -> None:
        """The right password: ``address`` starts afresh."""
        with self._lock:
            self._records.pop(address, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._records)

    def _sweep(self, now: float) -> None:
        # An address is forgotten once idle longer than any block it could still serve.
        if now < self._next_sweep:
            return
        idle = max(self.window, self.max_block)
        for address in [
            a
            for a, r in self._records.items()
            if r.blocked_until <= now and now - r.last_seen > idle
        ]:
            del self._records[address]
        self._next_sweep = now + self.window


def is_loopback(host: str) -> bool:
    """Whether binding to ``host`` keeps the server to this machine (no name resolution)."""
    name = host.strip().strip("[]").rstrip(".").lower()
    if name == "localhost":
        return True
    try:
        address = ipaddress.ip_address(name.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


_HOW = (
    "give one with --password-file FILE (its first line), the MOLE_PASSWORD environment "
    "variable, or run in a terminal to be asked; --no-password is allowed on a loopback "
    "address only"
)


def resolve_password(
    *,
    password_file: str | None,
    env: Mapping[str, str],
    interactive: bool,
    prompt: Callable[[], str],
    no_password: bool,
    host: str,
) -> str | None:
    """The server password, from ``--password-file``, then ``MOLE_PASSWORD``, then a prompt.

    ``None`` means no password, which is allowed on a loopback address only: a
    server that runs workflows runs arbitrary code for whoever reaches it.
    """
    if no_password:
        if not is_loopback(host):
            raise PasswordError(
                f"--no-password is refused on {host or 'all interfaces'}: anyone who can "
                "reach it could run code on this machine; bind to 127.0.0.1 or give a password"
            )
        if password_file:
            raise PasswordError("give either --no-password or --password-file, not both")
        return None
    if password_file:
        return _read_password_file(password_file)
    if "MOLE_PASSWORD" in env:
        if not env["MOLE_PASSWORD"]:
            raise PasswordError(f"MOLE_PASSWORD is set but empty: {_HOW}")
        return env["MOLE_PASSWORD"]
    if interactive:
        try:
            answer = prompt()
        except EOFError:
            answer = ""
        if not answer:
            raise PasswordError(f"empty password: {_HOW}")
        return answer
    raise PasswordError(f"no password: {_HOW}")


def _read_password_file(name: str) -> str:
    path = Path(name)
    try:
        with path.open(encoding="utf-8") as f:
            line = f.readline()
    except UnicodeDecodeError:
        raise PasswordError(f"password file {name} is not UTF-8 text") from None
    except OSError as e:
        reason = {
            errno.ENOENT: "does not exist",
            errno.EISDIR: "is a directory, not a file",
        }.get(e.errno or 0, f"cannot be read: {e.strerror or e}")
        raise PasswordError(f"password file {name} {reason}") from None
    password = line.strip()
    if not password:
        raise PasswordError(f"password file {name} is empty: its first line is the password")
    return password


def bearer_or_query(
    headers_authorization: str | None, query_token: str | None, form_token: str | None
) -> str | None:
    """The request's token: ``Authorization: Bearer <t>``, else ``token`` from query or form."""
    if headers_authorization:
        scheme, _, value = headers_authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return query_token or form_token or None
