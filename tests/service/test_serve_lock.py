"""One service per data directory: the lock, its owner, and a clean exit that gives both back."""

from __future__ import annotations

from engine.service.lock import INFO_FILE, owner
from tests.service.conftest import cli


def test_second_serve_exits_2_naming_the_pid_and_a_clean_stop_releases(serve, tmp_path):
    first = serve()
    assert "serving" in first.output() and first.url in first.output()
    assert "aggregator token --data-dir" in first.output()  # where the token is
    assert owner(first.data_dir) == (first.pid, first.url)

    second = cli("serve", "--data-dir", first.data_dir, "--listen", "127.0.0.1:0", timeout=60)
    assert second.returncode == 2
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1, second.stderr
    assert f"process {first.pid}" in lines[0] and lines[0].startswith("error: ")

    assert first.stop() == 0
    assert owner(first.data_dir) is None
    assert not (first.data_dir / INFO_FILE).exists()


def test_a_port_in_use_is_one_line(serve, tmp_path):
    first = serve()
    port = first.url.rsplit(":", 1)[1]
    other = cli("serve", "--data-dir", tmp_path / "other", "--listen", f"127.0.0.1:{port}", timeout=60)
    assert other.returncode == 2
    assert other.stderr.strip().splitlines() == [
        f"error: cannot listen on 127.0.0.1:{port}: Address already in use"
    ]
    assert owner(tmp_path / "other") is None  # the lock was given back


def test_owner_after_kill_9_is_none(serve):
    sp = serve()
    sp.stop(sig=9)
    assert owner(sp.data_dir) is None  # the OS released the lock; a stale service.json is not believed


def test_owner_while_the_holder_has_not_written_its_pid_yet(tmp_path):
    """The lock is taken before the PID is written: a reader in between sees a service, pid 0."""
    import fcntl

    from engine.service.lock import LOCK_FILE

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with open(data_dir / LOCK_FILE, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert owner(data_dir) == (0, None)
    assert owner(data_dir) is None
