"""The error log: folded with counts in full, and read "since my last read" by each reader."""

from __future__ import annotations

import threading

from jupyter_mole.engine.state import ErrorLevel, ErrorLog, ErrorRecord


def record(message: str, level: ErrorLevel = ErrorLevel.WARNING, env: str = "local") -> ErrorRecord:
    return ErrorRecord(message, level, env, time=0.0)


def seen(records: list[ErrorRecord]) -> list[tuple[str, int]]:
    return [(r.message, r.count) for r in records]


def test_repeats_are_folded_in_the_full_log() -> None:
    log = ErrorLog()
    for message in ["a", "b", "a", "a"]:
        log.add(record(message))
    log.add(record("a", ErrorLevel.SEVERE))  # another level: another record
    assert seen(log.all()) == [("a", 3), ("b", 1), ("a", 1)]


def test_a_reader_sees_a_repeat_of_an_error_it_has_already_read() -> None:
    log = ErrorLog()
    log.add(record("lost worker"))
    assert seen(log.since_last_read("widget")) == [("lost worker", 1)]
    log.add(record("lost worker"))
    # The repeat is folded in the log, but the reader still learns of it.
    assert seen(log.since_last_read("widget")) == [("lost worker", 1)]
    assert seen(log.since_last_read("widget")) == []
    assert seen(log.all()) == [("lost worker", 2)]


def test_two_readers_each_see_every_occurrence_once() -> None:
    log = ErrorLog()
    log.add(record("a"))
    assert seen(log.since_last_read("widget")) == [("a", 1)]
    log.add(record("a"))
    log.add(record("b"))
    log.add(record("a"))
    # The sidebar comes late: the folded log, counts and all.
    assert seen(log.since_last_read("sidebar")) == [("a", 3), ("b", 1)]
    # The widget gets what happened since it last read: two more a's, one b.
    assert seen(log.since_last_read("widget")) == [("a", 2), ("b", 1)]
    log.add(record("b"))
    assert seen(log.since_last_read("sidebar")) == [("b", 1)]
    assert seen(log.since_last_read("widget")) == [("b", 1)]
    assert seen(log.since_last_read("sidebar")) == seen(log.since_last_read("widget")) == []


def test_records_since_a_read_come_in_the_order_they_first_happened_since() -> None:
    log = ErrorLog()
    log.add(record("a"))
    log.add(record("b"))
    log.since_last_read("cli")
    log.add(record("b"))
    log.add(record("a"))
    log.add(record("b"))
    assert seen(log.since_last_read("cli")) == [("b", 2), ("a", 1)]


def test_counts_read_add_up_to_the_log_under_concurrent_writers() -> None:
    log = ErrorLog()
    totals = {"widget": 0, "sidebar": 0}
    log.since_last_read("widget")
    log.since_last_read("sidebar")

    def write() -> None:
        for i in range(2000):
            log.add(record(f"error {i % 3}"))

    writers = [threading.Thread(target=write) for _ in range(4)]
    for w in writers:
        w.start()
    while any(w.is_alive() for w in writers):
        for reader in totals:
            totals[reader] += sum(r.count for r in log.since_last_read(reader))
    for reader in totals:
        totals[reader] += sum(r.count for r in log.since_last_read(reader))
    assert totals == {"widget": 8000, "sidebar": 8000}
    assert sum(r.count for r in log.all()) == 8000


def test_events_every_reader_has_passed_are_dropped() -> None:
    log = ErrorLog()
    log.since_last_read("a")
    log.since_last_read("b")
    for _ in range(5000):
        log.add(record("x"))
    assert sum(r.count for r in log.since_last_read("a")) == 5000
    assert sum(r.count for r in log.since_last_read("b")) == 5000
    assert len(log._events) == 0  # both readers are past them: nothing kept
    log.add(record("x"))
    assert seen(log.since_last_read("a")) == [("x", 1)]
    assert seen(log.since_last_read("b")) == [("x", 1)]


def test_no_event_is_kept_before_anyone_reads() -> None:
    log = ErrorLog()
    for _ in range(1000):
        log.add(record("x"))
    assert len(log._events) == 0  # a first reader gets the folded log instead
    assert seen(log.since_last_read("late")) == [("x", 1000)]
