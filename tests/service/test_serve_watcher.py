"""The file watcher on its own (watchdog, real files): which paths a glob watches, files in sub
folders, a file moved in whole (the usual atomic drop), files that were there before."""

from __future__ import annotations

import threading
from pathlib import Path

from engine.service.watcher import Watcher, split_glob
from tests.service.conftest import wait_for


def test_split_glob():
    assert split_glob("/drop/in/*.csv") == (Path("/drop/in"), "*.csv")
    assert split_glob("/drop/**/*.csv") == (Path("/drop"), "**/*.csv")
    assert split_glob("/drop/exact.csv") == (Path("/drop"), "exact.csv")


def test_arrivals_in_sub_folders_and_moved_in_whole(tmp_path):
    drop = tmp_path / "drop"
    (drop / "old").mkdir(parents=True)
    (drop / "old" / "before.csv").write_text("a\n1\n")  # there before: not an arrival
    got: list[Path] = []
    lock = threading.Lock()
    w = Watcher()
    w.watch_files("k", drop / "**" / "*.csv", 0.3, lambda p: (lock.acquire(), got.append(p), lock.release()))
    w.start()
    try:
        (drop / "site1").mkdir()
        (drop / "site1" / "a.csv").write_text("a\n1\n")
        staged = tmp_path / "staging.csv"
        staged.write_text("a\n2\n")
        staged.rename(drop / "b.csv")  # moved in whole
        (drop / "notes.txt").write_text("not a csv")
        wait_for(lambda: len(got) >= 2, 20, what="two arrivals")
        # a quiet moment longer than the settle time: nothing else arrives
        wait_for(lambda: w._settle_once() is None and not w._arrivals["k"].seen, 5, what="nothing pending")
        assert sorted(p.relative_to(drop).as_posix() for p in got) == ["b.csv", "site1/a.csv"]
    finally:
        w.stop()


def test_unwatch_stops_arrivals(tmp_path):
    got: list[str] = []
    w = Watcher()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    w.watch_files("gone", tmp_path / "a" / "*.csv", 0.1, lambda p: got.append("gone"))
    w.watch_files("kept", tmp_path / "b" / "*.csv", 0.1, lambda p: got.append("kept"))
    w.start()
    try:
        w.unwatch("gone")
        assert w.keys() == ["kept"]
        (tmp_path / "a" / "late.csv").write_text("a\n1\n")
        (tmp_path / "b" / "late.csv").write_text("a\n1\n")  # the control: written after the other
        wait_for(lambda: "kept" in got, 20, what="the kept watch's arrival")
        wait_for(lambda: not w._arrivals["kept"].seen, 5, what="nothing pending")
        assert got == ["kept"]
    finally:
        w.stop()
