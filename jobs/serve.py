"""Serve a trained run over HTTP with Ray Serve: the variants and the controller, deliberating.

    python jobs/serve.py run_dir=runs/<train run> [serve.port=8000] [serve.host=127.0.0.1]
        [serve.auth_token=...] [deliberation.routing=controller|random|fixed]
        [deliberation.refine_turns=1]

Binds 127.0.0.1 unless ``serve.host`` says otherwise. With ``serve.auth_token`` (or the
``COALITION_SERVE_TOKEN`` environment variable) every /v1 route needs ``Authorization: Bearer``.
API docs at ``/docs``. Stops on Ctrl-C. The same app for ``serve run``: configs/serve/app.yaml.
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from coalition import cli  # noqa: E402
from coalition.config import ConfigError  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    cli.parse(argv, "serve")  # validates the overrides against the schema
    _, overrides = cli.parse_args(argv, "serve")
    flat = dict(text.partition("=")[::2] for text in overrides)
    run_dir = flat.pop("run_dir", None)
    if not run_dir:
        raise ConfigError("jobs/serve.py needs run_dir=<a jobs/train.py run directory>")
    from ray import serve

    from actors.serve import build
    from actors.session import init_ray
    from coalition.config import override
    from coalition.recipes.coalition import trained_run

    cfg, version = trained_run(Path(run_dir))
    cfg = override(cfg, flat)
    app = build(run_dir, flat)
    init_ray(cfg)
    stop = threading.Event()  # set by Ctrl-C / SIGTERM, also while the app is still starting
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    serve.start(http_options={"host": cfg.serve.host, "port": cfg.serve.port})
    serve.run(app, name="coalition", route_prefix="/")
    url = f"http://{cfg.serve.host}:{cfg.serve.port}"
    print(f"serving {run_dir} (version {version}, routing {cfg.deliberation.routing}) at {url}")
    print(f"  POST {url}/v1/solve   GET {url}/v1/info   GET {url}/healthz   docs: {url}/docs")
    stop.wait()
    serve.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
