"""Broadcast pushes between plain processes over gloo (no Ray): every receiver gets the exact
state across dtypes and buckets, "nothing to send" is announced, and a missing or dead peer
raises PushTimeout within the deadline instead of hanging."""

from __future__ import annotations

import io
import multiprocessing as mp
import time

import pytest
import torch

from coalition.engines.weightsync import Channel, Member, PushTimeout, fingerprint, host_store

CTX = mp.get_context("spawn")


def _state(shift: float = 0.0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "embed.weight": torch.randn(50, 16, generator=g) + shift,
        "layer.norm": torch.randn(16, generator=g).to(torch.bfloat16),
        "layer.proj": torch.randn(16, 16, generator=g) + shift,  # fp32 again: a new bucket
        "steps": torch.arange(7),
    }


def _to_bytes(state: dict[str, torch.Tensor]) -> bytes:
    """A state by value: a tensor put on a queue as itself is passed as a file descriptor the
    parent must fetch from this process, which may have exited by then (a flaky failure)."""
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def _receiver(channel: Channel, rank: int, versions: list[int], out: mp.Queue) -> None:
    try:
        member = Member(channel, rank)
        for v in versions:
            state = member.receive(v)
            out.put((rank, v, None if state is None else _to_bytes(state)))
    except Exception as exc:  # noqa: BLE001 - the parent asserts on what arrives
        out.put((rank, -1, f"{type(exc).__name__}: {exc}"))


@pytest.fixture(scope="module")
def store():
    return host_store("127.0.0.1", timeout_s=30)


def _start(channel: Channel, ranks: list[int], versions: list[int]):
    out = CTX.Queue()
    procs = [CTX.Process(target=_receiver, args=(channel, r, versions, out)) for r in ranks]
    for p in procs:
        p.start()
    return procs, out


def test_receivers_get_the_exact_state_and_nothing_when_told(store):
    # 600 bytes per bucket: the 50x16 fp32 embedding goes alone, dtype changes cut buckets
    channel = Channel("t-exact", "127.0.0.1", store.port, 3, "gloo", 30, bucket_bytes=600)
    procs, out = _start(channel, [1, 2], [1, 2, 3])
    sender = Member(channel, 0)
    assert sender.send(_state(), 1) is True
    assert sender.send(None, 2) is False
    sender.send(_state(shift=1.0), 3)
    got = {(r, v): s for r, v, s in (out.get(timeout=60) for _ in range(6))}
    got = {key: s if s is None else torch.load(io.BytesIO(s)) for key, s in got.items()}
    for p in procs:
        p.join(timeout=30)
    for rank in (1, 2):
        assert got[(rank, 2)] is None
        for version, shift in ((1, 0.0), (3, 1.0)):
            state, want = got[(rank, version)], _state(shift)
            assert list(state) == list(want)
            for name in want:
                assert state[name].dtype == want[name].dtype
                assert torch.equal(state[name], want[name])


def test_a_missing_member_times_out_instead_of_hanging(store):
    channel = Channel("t-missing", "127.0.0.1", store.port, 3, "gloo", timeout_s=2)
    procs, out = _start(channel, [1], [1])  # rank 2 never comes
    start = time.monotonic()
    with pytest.raises(PushTimeout, match="join timed out"):
        Member(channel, 0)
    assert time.monotonic() - start < 10
    rank, version, error = out.get(timeout=30)
    assert version == -1 and "PushTimeout" in error
    procs[0].join(timeout=30)


def test_a_dead_sender_times_the_receiver_out(store):
    # long enough for the receiver process to start and join on a loaded machine
    channel = Channel("t-dead", "127.0.0.1", store.port, 2, "gloo", timeout_s=10)
    procs, out = _start(channel, [1], [1])
    sender = Member(channel, 0)
    sender.abort()  # joined, then gone before it sent anything
    rank, version, error = out.get(timeout=30)
    assert version == -1 and "PushTimeout" in error and "header" in error
    procs[0].join(timeout=30)


def test_fingerprint_survives_a_checkpoint_and_sees_a_change(tmp_path):
    from safetensors.torch import load_file, save_file

    state = _state()
    save_file(state, str(tmp_path / "s.safetensors"))
    assert fingerprint(load_file(str(tmp_path / "s.safetensors"))) == fingerprint(state)
    changed = dict(state, **{"layer.proj": state["layer.proj"].clone()})
    changed["layer.proj"][-1, -1] += 1.0
    assert fingerprint(changed) != fingerprint(state)
