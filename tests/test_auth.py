"""The server's authentication domain: tokens, password, login brake, password sources."""

from __future__ import annotations

import hmac
import math
import os
import re
import threading
from collections import Counter
from pathlib import Path

import pytest

from jupyter_mole.server.auth import (
    LoginLimiter,
    PasswordCheck,
    PasswordError,
    TokenStore,
    bearer_or_query,
    resolve_password,
)


class Clock:
    """A hand-driven clock, so that expiry and windows are tested without sleeping."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# -- tokens ---------------------------------------------------------------------------


def test_issued_token_checks_and_carries_its_duration() -> None:
    clock = Clock()
    store = TokenStore(clock=clock)
    token = store.issue()
    assert token.duration_ms == 86_400_000
    assert token.issued == 1000.0
    assert token.expires == 1000.0 + 86_400
    assert store.check(token.token)


def test_unknown_missing_and_empty_tokens_are_refused() -> None:
    store = TokenStore()
    store.issue()
    assert not store.check("not-a-token")
    assert not store.check(None)
    assert not store.check("")


def test_token_expires_after_its_duration_and_is_pruned() -> None:
    clock = Clock()
    store = TokenStore(duration_ms=10_000, clock=clock)
    token = store.issue()
    clock.advance(9.999)
    assert store.check(token.token)
    clock.advance(0.001)
    assert not store.check(token.token)
    assert len(store) == 0


def test_expired_tokens_are_pruned_without_being_checked() -> None:
    clock = Clock()
    store = TokenStore(duration_ms=1_000, clock=clock)
    for _ in range(50):
        store.issue()
    clock.advance(61)  # past the once-a-minute sweep
    fresh = store.issue()
    assert len(store) == 1
    assert store.check(fresh.token)


def test_revoked_token_is_refused_and_revoking_unknown_is_harmless() -> None:
    store = TokenStore()
    a, b = store.issue(), store.issue()
    store.revoke(a.token)
    store.revoke("never-issued")
    assert not store.check(a.token)
    assert store.check(b.token)


def test_tokens_are_unguessable() -> None:
    store = TokenStore()
    tokens = [store.issue().token for _ in range(1000)]
    assert len(set(tokens)) == 1000
    assert all(len(t) >= 43 for t in tokens)  # 32 random bytes, base64url
    # Characters spread over the whole base64url alphabet: close to 6 bits each.
    counts = Counter("".join(tokens))
    total = sum(counts.values())
    entropy = -sum(n / total * math.log2(n / total) for n in counts.values())
    assert len(counts) == 64
    assert entropy > 5.9


def test_check_compares_with_compare_digest(monkeypatch: pytest.MonkeyPatch) -> None:
    store = TokenStore()
    token = store.issue().token
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    assert store.check(token)
    assert not store.check("guess")
    assert len(calls) == 2  # also for an unknown token: no early return before it
    assert all(len(a) == len(b) == 32 for a, b in calls)  # SHA-256 digests, never raw tokens
    assert all(token.encode() not in (a, b) for a, b in calls)


def test_token_store_is_thread_safe() -> None:
    store = TokenStore()
    issued: list[str] = []
    lock = threading.Lock()

    def work() -> None:
        for _ in range(200):
            t = store.issue().token
            assert store.check(t)
            with lock:
                issued.append(t)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(store) == len(set(issued)) == 1600
    assert all(store.check(t) for t in issued)


def test_token_duration_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        TokenStore(duration_ms=0)


# -- password -------------------------------------------------------------------------


def test_password_check(monkeypatch: pytest.MonkeyPatch) -> None:
    check = PasswordCheck("s3cret")
    assert check.required
    assert check.verify("s3cret")
    assert not check.verify("s3cre")
    assert not check.verify("s3cret ")
    assert not check.verify("")
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: calls.append((a, b)) or real(a, b))
    check.verify("x" * 10_000)
    assert len(calls) == 1 and len(calls[0][0]) == len(calls[0][1]) == 32


def test_no_password_mode_accepts_anything() -> None:
    check = PasswordCheck(None)
    assert not check.required
    assert check.verify("anything")


# -- login limiter ----------------------------------------------------------------------


def test_limiter_blocks_after_max_failures() -> None:
    clock = Clock()
    limiter = LoginLimiter(max_failures=5, window=60, base_block=60, clock=clock)
    for _ in range(4):
        limiter.failure("10.0.0.1")
        assert limiter.check("10.0.0.1") is None
    limiter.failure("10.0.0.1")
    assert limiter.check("10.0.0.1") == pytest.approx(60)
    assert limiter.check("10.0.0.2") is None  # per address
    clock.advance(59.5)
    assert limiter.check("10.0.0.1") == pytest.approx(0.5)
    clock.advance(0.5)
    assert limiter.check("10.0.0.1") is None


def test_limiter_counts_failures_within_the_window_only() -> None:
    clock = Clock()
    limiter = LoginLimiter(max_failures=5, window=60, clock=clock)
    for _ in range(4):
        limiter.failure("a")
    clock.advance(61)  # the first four are out of the window
    for _ in range(4):
        limiter.failure("a")
        assert limiter.check("a") is None
    limiter.failure("a")
    assert limiter.check("a") is not None


def test_limiter_backs_off_exponentially_with_a_cap() -> None:
    clock = Clock()
    limiter = LoginLimiter(max_failures=3, base_block=60, max_block=900, clock=clock)
    for _ in range(3):
        limiter.failure("a")
    waits = []
    for _ in range(6):
        wait = limiter.check("a")
        assert wait is not None
        waits.append(wait)
        limiter.failure("a")  # refused while blocked: does not count
        assert limiter.check("a") == pytest.approx(wait)
        clock.advance(wait)
        assert limiter.check("a") is None
        limiter.failure("a")  # one more wrong password after the block: blocked again
    assert waits == pytest.approx([60, 120, 240, 480, 900, 900])


def test_limiter_success_resets_the_address() -> None:
    clock = Clock()
    limiter = LoginLimiter(max_failures=3, clock=clock)
    for _ in range(3):
        limiter.failure("a")
    clock.advance(60)
    limiter.success("a")
    assert len(limiter) == 0
    for _ in range(2):
        limiter.failure("a")
    assert limiter.check("a") is None  # afresh: two failures are below the threshold


def test_limiter_forgets_idle_addresses() -> None:
    clock = Clock()
    limiter = LoginLimiter(window=60, max_block=900, clock=clock)
    for i in range(100):
        limiter.failure(f"10.0.{i // 256}.{i % 256}")
    clock.advance(901)
    limiter.failure("192.0.2.1")
    assert len(limiter) == 1


def test_limiter_table_is_capped_least_recent_first() -> None:
    clock = Clock()
    limiter = LoginLimiter(max_failures=2, max_entries=100, clock=clock)
    limiter.failure("old")
    limiter.failure("old")
    assert limiter.check("old") is not None
    for i in range(300):
        limiter.failure(f"flood-{i}")
    assert len(limiter) == 100
    assert limiter.check("old") is None  # forgotten: the table stays bounded
    limiter.failure("flood-299")
    assert limiter.check("flood-299") is not None  # the most recent are kept


# -- where the password comes from ------------------------------------------------------


def resolve(**overrides: object) -> str | None:
    def no_prompt() -> str:
        raise AssertionError("must not prompt")

    kwargs: dict[str, object] = {
        "password_file": None,
        "env": {},
        "interactive": False,
        "prompt": no_prompt,
        "no_password": False,
        "host": "127.0.0.1",
    }
    kwargs.update(overrides)
    return resolve_password(**kwargs)  # type: ignore[arg-type]


def test_password_file_first_line_stripped_wins(tmp_path: Path) -> None:
    f = tmp_path / "pw"
    f.write_text("  from-file \nsecond line\n")
    assert resolve(password_file=str(f), env={"MOLE_PASSWORD": "env"}, interactive=True) == (
        "from-file"
    )


def test_password_file_errors_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    with pytest.raises(PasswordError, match=re.escape(f"password file {missing} does not exist")):
        resolve(password_file=str(missing))
    empty = tmp_path / "empty"
    empty.write_text("\n\nlater\n")
    with pytest.raises(PasswordError, match=re.escape(f"password file {empty} is empty")):
        resolve(password_file=str(empty))
    with pytest.raises(PasswordError, match=re.escape(f"password file {tmp_path} is a directory")):
        resolve(password_file=str(tmp_path))
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xff\xfe\x00garbage\n")
    with pytest.raises(PasswordError, match=re.escape(f"password file {binary} is not UTF-8")):
        resolve(password_file=str(binary))


def test_unreadable_password_file(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        f = tmp_path / "pw"
        f.write_text("secret\n")
        f.chmod(0)
    else:
        # Root reads any file it may open; /proc/self/mem opens but cannot be read from 0.
        f = Path("/proc/self/mem")
    with pytest.raises(PasswordError, match=re.escape(f"password file {f} cannot be read")):
        resolve(password_file=str(f))


def test_environment_then_prompt() -> None:
    assert resolve(env={"MOLE_PASSWORD": "from-env"}, interactive=True) == "from-env"
    assert resolve(interactive=True, prompt=lambda: "typed") == "typed"
    with pytest.raises(PasswordError, match="MOLE_PASSWORD is set but empty"):
        resolve(env={"MOLE_PASSWORD": ""})


def test_empty_prompt_answer_is_an_error() -> None:
    with pytest.raises(PasswordError, match="empty password"):
        resolve(interactive=True, prompt=lambda: "")

    def eof() -> str:
        raise EOFError

    with pytest.raises(PasswordError, match="empty password"):
        resolve(interactive=True, prompt=eof)


def test_no_source_explains_the_three_ways() -> None:
    with pytest.raises(PasswordError) as info:
        resolve()
    message = str(info.value)
    assert message.startswith("no password:")
    for way in ("--password-file FILE", "MOLE_PASSWORD", "terminal", "--no-password"):
        assert way in message


@pytest.mark.parametrize("host", ["127.0.0.1", "127.5.5.5", "::1", "[::1]", "localhost"])
def test_no_password_on_loopback(host: str) -> None:
    assert resolve(no_password=True, host=host, env={"MOLE_PASSWORD": "ignored"}) is None


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "", "192.168.1.10", "example.org", "10.0.0.1"])
def test_no_password_refused_elsewhere(host: str) -> None:
    with pytest.raises(PasswordError, match="--no-password is refused on") as info:
        resolve(no_password=True, host=host)
    assert "could run code on this machine" in str(info.value)
    assert "bind to 127.0.0.1 or give a password" in str(info.value)
    if host:
        assert host in str(info.value)


def test_no_password_with_a_password_file_is_ambiguous(tmp_path: Path) -> None:
    f = tmp_path / "pw"
    f.write_text("secret\n")
    with pytest.raises(PasswordError, match="not both"):
        resolve(no_password=True, password_file=str(f))


# -- where the token comes from ---------------------------------------------------------


def test_bearer_or_query() -> None:
    assert bearer_or_query("Bearer abc", "q", "f") == "abc"
    assert bearer_or_query("bearer   abc  ", None, None) == "abc"
    assert bearer_or_query("Basic dXNlcjpwdw==", "q", "f") == "q"
    assert bearer_or_query("Bearer ", None, "f") == "f"
    assert bearer_or_query(None, None, "f") == "f"
    assert bearer_or_query(None, "", "") is None
    assert bearer_or_query(None, None, None) is None
