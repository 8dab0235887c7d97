"""The settings enforce that a dead worker's job is reclaimed and answered within its deadline.

``reclaim_idle_s + reclaim_interval_s ≤ request_timeout_s / 2`` (issue 13, defect 3): with the
old defaults (reclaim idle 30 s = the 30 s deadline) a reclaimed job could only ever get a 504.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from service import settings as settings_module
from service.__main__ import build_parser
from service.settings import Settings
from tests.service_support import REPO_ROOT, compose_service


def test_defaults_leave_half_the_deadline_after_a_reclaim() -> None:
    defaults = Settings()
    assert (defaults.reclaim_idle_s, defaults.reclaim_interval_s, defaults.request_timeout_s) == (10, 2, 30)
    assert defaults.reclaim_idle_s + defaults.reclaim_interval_s <= defaults.request_timeout_s / 2
    assert defaults.reclaim_idle_s > 5 * defaults.heartbeat_interval_s  # a live worker is never taken over


def test_a_reclaim_idle_as_long_as_the_deadline_is_refused() -> None:
    with pytest.raises(ValueError, match="must be at most half of request_timeout_s"):
        Settings(reclaim_idle_s=30.0)
    Settings(reclaim_idle_s=30.0, request_timeout_s=64.0)  # a longer deadline allows it


def test_the_commands_refuse_bad_relations_with_exit_2() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "service", "worker", "--redis-url", "redis://127.0.0.1:1/0"]
        + ["--reclaim-idle-s", "30"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 2 and "reclaimed and answered within its deadline" in done.stderr


@pytest.mark.parametrize("name", ["api", "worker"])
def test_the_compose_settings_keep_the_relation(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _, environment = compose_service(name)
    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    command = "serve" if name == "api" else "worker"
    settings = settings_module.from_args(build_parser().parse_args([command]))
    assert settings.reclaim_idle_s + settings.reclaim_interval_s <= settings.request_timeout_s / 2
    assert "api_token" not in repr(settings) and settings.tokens() == ()
