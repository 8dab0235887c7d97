"""``usfad serve`` / ``usfad worker`` pass the user's own arguments on to ``python -m service``.

The exec itself is covered by ``test_service_embedded.py`` and ``test_service_demo.py``; here
the argument list, parsed by the service's real parser.
"""

from __future__ import annotations

import sys
from dataclasses import fields

from service import settings
from service.__main__ import build_parser as service_parser
from training.cli import build_parser
from training.commands.serve import _service_argv


def _parsed(typed: list[str]):
    args = build_parser().parse_args(typed)
    args.argv = typed
    return args


def test_serve_passes_on_what_was_typed_without_its_own_flags() -> None:
    typed = ["serve", "--demo", "--demo-dir", "/tmp/d", "--port", "8123", "--batch-policies", "a=8:1"]
    argv = _service_argv("serve", _parsed(typed), ["--model-dir", "/tmp/d/bundles"])
    assert argv == [
        sys.executable, "-m", "service", "serve",
        "--port", "8123", "--batch-policies", "a=8:1", "--model-dir", "/tmp/d/bundles",
    ]  # fmt: skip
    passed = service_parser().parse_args(argv[3:])
    assert passed.port == 8123 and passed.model_dir == "/tmp/d/bundles" and passed.batch_policies == ["a=8:1"]


def test_flags_in_equals_form_and_the_worker() -> None:
    serve = _service_argv("serve", _parsed(["serve", "--demo-dir=/tmp/d", "--max-batch=16"]))
    assert serve[3:] == ["serve", "--max-batch=16"]
    typed = ["worker", "--redis-url", "redis://x:6379/0", "--metrics-port", "0"]
    worker = _service_argv("worker", _parsed(typed))
    assert worker[3:] == typed
    assert service_parser().parse_args(worker[3:]).metrics_port == 0


def _command(parser, name: str):
    return parser._subparsers._group_actions[0].choices[name]


def test_every_setting_says_its_help_and_role_once() -> None:
    roles = (settings.API, settings.WORKER, settings.BOTH)
    for item in fields(settings.Settings):
        assert item.metadata["help"] and item.metadata["role"] in roles
    serve = {a.dest for a in _command(service_parser(), "serve")._actions} - {"help"}
    worker = {a.dest for a in _command(service_parser(), "worker")._actions} - {"help"}
    assert serve == set(settings.names_for(settings.API))
    assert worker == set(settings.names_for(settings.WORKER))
    assert "port" in serve and "port" not in worker and "metrics_port" not in serve
    port = next(a for a in _command(build_parser(), "serve")._actions if a.dest == "port")
    assert port.help.startswith(settings.Settings.__dataclass_fields__["port"].metadata["help"])
