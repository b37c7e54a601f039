"""Serve a trained run over HTTP with Ray Serve: the variants and the controller, deliberating.

    python jobs/serve.py run_dir=runs/<train run> [serve.port=8000] [serve.host=127.0.0.1]
        [serve.auth_token=...] [deliberation.routing=auto|controller|random|fixed]
        [deliberation.refine_turns=1]

Binds 127.0.0.1 unless ``serve.host`` says otherwise. With ``serve.auth_token`` (or the
``COALITION_SERVE_TOKEN`` environment variable; 16+ characters) every /v1 route needs
``Authorization: Bearer``; without one it says so loudly and refuses a non-loopback host.
API docs at ``/docs``. Stops on Ctrl-C. The same app for ``serve run``: configs/serve/app.yaml.
"""

from __future__ import annotations

import ipaddress
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from coalition.run import cli, preflight
from coalition.run.config import Config, ConfigError

if TYPE_CHECKING:
    from coalition.method.suite import Route


def main(argv: list[str] | None = None) -> int:
    cli.parse(argv, "serve")  # validates the overrides against the schema
    _, overrides = cli.parse_args(argv, "serve")
    flat = dict(text.partition("=")[::2] for text in overrides)
    run_dir = flat.pop("run_dir", None)
    if not run_dir:
        raise ConfigError("jobs/serve.py needs run_dir=<a jobs/train.py run directory>")
    cfg, version, route = check(Path(run_dir), flat)

    from ray import serve

    from actors.serve import build
    from actors.session import init_ray

    app = build(run_dir, flat)
    init_ray(cfg, "serve")
    stop = threading.Event()  # set by Ctrl-C / SIGTERM, also while the app is still starting
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    serve.start(http_options={"host": cfg.serve.host, "port": cfg.serve.port})
    serve.run(app, name="coalition", route_prefix="/")
    url = f"http://{cfg.serve.host}:{cfg.serve.port}"
    print(f"serving {run_dir} (version {version}) at {url}")
    print(f"  routing: {route.method} ({route.why})")
    print(f"  POST {url}/v1/solve   GET {url}/v1/info   GET {url}/healthz   docs: {url}/docs")
    stop.wait()
    serve.shutdown()
    return 0


def check(run_dir: Path, flat: dict[str, str]) -> tuple[Config, int, Route]:
    """Everything serving needs, checked before Ray starts: a trained run with readable
    states (and controller, when the route is the controller's), a model that loads, a token that is a token
    (or a loud word that there is none, on loopback only), and a free port. The token, when it
    comes from the environment, is put in ``flat`` for the replicas."""
    from coalition.method.controller import Controller
    from coalition.method.suite import choose_route
    from coalition.method.variants import variant_key
    from coalition.run.checkpoints import check_state
    from coalition.run.config import SERVE_TOKEN_ENV, override
    from coalition.run.rundir import RunDir

    run = RunDir(run_dir)
    cfg, version = run.trained()
    cfg = override(cfg, flat)
    preflight.model_paths(cfg, "serve")
    for k in range(cfg.variants.count):
        check_state(run.state(variant_key(k), version))
    turns = cfg.deliberation.refine_turns
    route = choose_route(
        cfg.deliberation.routing, run.suite(), version, turns, run.expects_controller(cfg)
    )
    if route.method == "controller routing":
        Controller.check(run.controller_dir)
    token = cfg.serve.token()
    host = cfg.serve.host
    if token is None:
        if not _loopback(host):
            raise ConfigError(
                f"serve.host={host} without a token would let anyone on the network call the "
                f"API; set serve.auth_token or {SERVE_TOKEN_ENV}, or serve on 127.0.0.1"
            )
    elif "serve.auth_token" not in flat:
        flat["serve.auth_token"] = token
    _check_port(host, cfg.serve.port)
    if token is None:
        print(
            f"WARNING: serving WITHOUT authentication: anyone who can reach {host}:"
            f"{cfg.serve.port} can call /v1/*; set serve.auth_token or {SERVE_TOKEN_ENV}",
            file=sys.stderr,
        )
    return cfg, version, route


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(socket.gethostbyname(host)).is_loopback
    except (OSError, ValueError):
        return False


def _check_port(host: str, port: int) -> None:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise ConfigError(
                f"serve.port {port} on {host} cannot be used ({exc.strerror}); pick another "
                "serve.port or stop what holds it"
            ) from None


command = cli.command(main)

if __name__ == "__main__":
    command()
