"""jobs/serve.py as users start it: refusals before Ray starts (tokens, host, port, run
directory, states, controller), then the real server over HTTP under hostile requests, and
what listens where while it serves (a local Ray keeps its token auth on)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import psutil
import pytest
import requests

from tests.conftest import REPO
from tests.hostile.conftest import ENV, job, refused

TOKEN = "hostile-suite-token-0123456789"


def serve(*args: object, env: dict[str, str] | None = None):
    return job("serve", *args, env=env, smoke=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def run(train_run, tmp_path):
    return shutil.copytree(train_run, tmp_path / "run")


@pytest.mark.parametrize(
    ("args", "env", "says"),
    [
        (["serve.auth_token="], {}, "serve.auth_token: the token is empty"),
        (["serve.auth_token=short"], {}, "serve.auth_token: the token is 5 characters long"),
        ([], {"COALITION_SERVE_TOKEN": ""}, "COALITION_SERVE_TOKEN (environment): the token is"),
        ([], {"COALITION_SERVE_TOKEN": "abc"}, "COALITION_SERVE_TOKEN (environment)"),
        (["serve.host=0.0.0.0"], {}, "serve.host=0.0.0.0 without a token"),
        (["serve.port=0"], {}, "serve.port: Input should be greater than or equal to 1"),
        (["deliberation.routing=oracle"], {}, "deliberation.routing: Input should be"),
        (["serve.bogus=1"], {}, "serve.bogus: unknown key 'bogus'"),
    ],
)
def test_serve_refuses_bad_settings(train_run, args, env, says):
    refused(serve(f"run_dir={train_run}", *args, env={**ENV, **env}), says)


def test_serve_needs_a_run_dir():
    refused(serve(), "jobs/serve.py needs run_dir=")


def test_serve_on_a_port_in_use(train_run):
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        refused(serve(f"run_dir={train_run}", f"serve.port={port}"), f"serve.port {port}", "in use")


def test_serve_without_a_controller_says_what_to_do(run):
    shutil.rmtree(run / "controller")  # a run without one serves fixed roles unless told
    refused(
        serve(f"run_dir={run}", "deliberation.routing=controller"),
        "no trained controller", "jobs/train.py run_dir=", "routing=fixed",
    )  # fmt: skip


def test_serve_with_a_damaged_controller(run):
    path = run / "controller" / "controller.safetensors"
    path.write_bytes(path.read_bytes()[:40])
    refused(serve(f"run_dir={run}"), "controller is damaged", "resume the run")


def test_serve_with_a_truncated_state(run):
    path = run / "states" / "v1-v1.safetensors"
    path.write_bytes(path.read_bytes()[:1000])
    refused(serve(f"run_dir={run}"), f"{path} is damaged", "delete it and rerun")


# ---------------------------------------------------------------------- the real server


@pytest.fixture(scope="module")
def server(train_run):
    """jobs/serve.py with a token, on a local Ray with its default (token) auth."""
    port = free_port()
    env = {k: v for k, v in ENV.items() if not k.startswith("RAY_AUTH")}
    env["COALITION_SERVE_TOKEN"] = TOKEN
    cmd = [sys.executable, str(REPO / "jobs/serve.py"), f"run_dir={train_run}",
           f"serve.port={port}", "serve.max_body_bytes=4096", "serve.max_question_tokens=64"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 240
    while time.time() < deadline:
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        try:
            if requests.get(f"{url}/healthz", timeout=2).status_code == 200:
                break
        except requests.RequestException:  # not up yet
            time.sleep(1)
    yield url, port, proc
    os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def auth(token: str = TOKEN, scheme: str = "Bearer") -> dict[str, str]:
    return {"Authorization": f"{scheme} {token}"}


def test_a_token_is_required_before_the_body_is_looked_at(server):
    url, _, _ = server
    assert requests.get(f"{url}/v1/info", timeout=30).status_code == 401
    assert requests.get(f"{url}/v1/info", headers=auth("w" * 30), timeout=30).status_code == 401
    bad_json = requests.post(f"{url}/v1/solve", data="{nope", timeout=30)
    assert bad_json.status_code == 401, bad_json.text  # not a 400: the body was never parsed
    start = time.monotonic()
    big = requests.post(f"{url}/v1/solve", data=b"x" * 20_000_000, timeout=60)
    assert big.status_code == 401 and time.monotonic() - start < 10


def test_the_scheme_is_case_insensitive(server):
    url, _, _ = server
    for scheme in ("bearer", "BEARER", "Bearer"):
        r = requests.get(f"{url}/v1/info", headers=auth(scheme=scheme), timeout=30)
        assert r.status_code == 200, (scheme, r.text)


def test_bodies_over_the_cap_are_refused_unread(server):
    url, _, _ = server
    r = requests.post(f"{url}/v1/solve", headers=auth(), data=b"x" * 5000, timeout=30)
    assert r.status_code == 413 and "4096 bytes" in r.json()["error"]

    def chunks():
        for _ in range(10):
            yield b"y" * 1000

    r = requests.post(f"{url}/v1/solve", headers=auth(), data=chunks(), timeout=30)
    assert r.status_code == 413, r.text


def test_questions_are_limited_in_tokens(server):
    url, _, _ = server
    few_chars_many_tokens = "\u4e00\u9fa5" * 100  # 200 characters, hundreds of tokens
    r = requests.post(f"{url}/v1/solve", headers=auth(), json={"question": few_chars_many_tokens},
                      timeout=60)  # fmt: skip
    assert r.status_code == 413 and "tokens; the limit is 64" in r.json()["error"], r.text
    r = requests.post(f"{url}/v1/solve", headers=auth(), json={"question": "What is 2 + 3?"},
                      timeout=120)  # fmt: skip
    assert r.status_code == 200, r.text


def test_info_shows_no_path_of_the_machine(server, train_run):
    url, _, _ = server
    info = requests.get(f"{url}/v1/info", headers=auth(), timeout=30).json()
    assert str(train_run) not in json.dumps(info) and info["run"] == train_run.name
    assert info["auth"] is True and info["max_question_tokens"] == 64


def test_what_listens_where_while_serving(server):
    """The API listens on loopback only; everything else is the local Ray, which keeps its
    token auth on: its agent refuses a job submitted without the token."""
    url, port, proc = server
    tree = {proc.pid} | {p.pid for p in psutil.Process(proc.pid).children(recursive=True)}
    ours = [c for c in psutil.net_connections("tcp") if c.status == "LISTEN" and c.pid in tree]
    api = [c for c in ours if c.laddr.port == port]
    assert api and all(c.laddr.ip == "127.0.0.1" for c in api), api
    print("listening while serving:")
    for c in sorted(ours, key=lambda c: c.laddr.port):
        print(f"  {c.laddr.ip}:{c.laddr.port}  {psutil.Process(c.pid).name()}")
    gcs = next(p for p in psutil.Process(proc.pid).children(recursive=True)
               if p.name() == "gcs_server")  # fmt: skip
    assert gcs.environ().get("RAY_AUTH_MODE") == "token"
    outside = [c for c in ours if not c.laddr.ip.startswith("127.")]
    agents = [c for c in outside if psutil.Process(c.pid).name().startswith("ray::Dashboard")]
    for c in agents:
        host = c.laddr.ip if c.laddr.ip not in ("0.0.0.0", "::") else "127.0.0.1"
        try:
            r = requests.post(f"http://{host}:{c.laddr.port}/api/job_agent/jobs/",
                              json={"entrypoint": "echo pwned"}, timeout=5)  # fmt: skip
        except requests.RequestException:
            continue  # not an HTTP port
        assert r.status_code in (401, 403, 404), (c.laddr, r.status_code, r.text[:200])
