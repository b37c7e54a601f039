"""The live progress line: counts, rate and time left, a plain line every few seconds when the
output is not a terminal, in place on a terminal, and stage lines printed cleanly."""

import io
import time

from coalition.run import progress


def test_plain_lines_off_a_terminal():
    out = io.StringIO()
    board = progress.Board(stream=out, every=0.05, tty=False)
    with board.task("round1/generate") as task:
        assert progress.current() is task
        task.expect(100, "generations")
        task.advance(40)
        time.sleep(0.2)
    lines = out.getvalue().splitlines()
    assert lines and all(
        line.startswith("[progress] round1/generate 40/100 generations") for line in lines
    )
    assert "/s ETA " in lines[-1]
    assert progress.current() is progress.NO_TASK  # outside a stage: reports go nowhere
    progress.current().advance(3)


def test_training_steps_and_loss_in_place_on_a_terminal():
    out = io.StringIO()
    board = progress.Board(stream=out, tty=True)
    board.every = 0.05
    with board.task("warmup/train/v0") as task:
        task.set(5, 16, "steps", loss=0.6123)
        time.sleep(0.2)
        board.echo("[stage] another line")
    text = out.getvalue()
    assert "\r\033[Kwarmup/train/v0 5/16 steps" in text and "loss 0.6123" in text
    assert "\n" not in text.split("\r\033[K")[1]  # the live line is redrawn, never scrolled


def test_two_stages_share_the_line():
    board = progress.Board(stream=io.StringIO(), tty=False, every=60)
    with board.task("warmup/train/v0") as a, board.task("warmup/train/v1") as b:
        a.set(1, 4, "steps")
        b.set(2, 4, "steps")
        line = board.render()
    assert line.startswith("warmup/train/v0 1/4 steps") and " | warmup/train/v1 2/4 steps" in line
