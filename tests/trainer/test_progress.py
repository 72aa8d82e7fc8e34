"""Progress display: a live line on a terminal, plain lines in a log."""

import io

from trainer.progress import Progress

STATS = {"loss": 0.5, "main_loss": 0.4, "cons_loss": 0.1, "train_accuracy": 0.9}


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_on_a_terminal_one_line_is_redrawn_and_messages_stay_above_it():
    out = Terminal()
    progress = Progress(total_steps=100, start_step=0, stream=out)
    progress.show(10, STATS)
    progress.show(20, STATS, best=0.8)
    progress.message("step 20: test accuracy 0.8")
    progress.close()
    text = out.getvalue()
    assert text.count("\r") >= 3 and "\n" in text
    assert "step 20/100" in text and "best test acc 0.8000" in text
    assert "steps/s" in text and "ETA" in text


def test_in_a_log_every_update_is_its_own_line():
    out = io.StringIO()
    progress = Progress(total_steps=100, start_step=50, stream=out)
    progress.show(60, STATS)
    progress.show(70, STATS)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and "\r" not in out.getvalue()
    assert lines[1].startswith("step 70/100 | loss 0.5000")


def test_disabled_progress_prints_nothing():
    out = Terminal()
    progress = Progress(total_steps=10, start_step=0, stream=out, enabled=False)
    progress.show(5, STATS)
    progress.message("hello")
    assert out.getvalue() == ""
