"""Progress lines: printed only where asked for (polycap run sets the variable; tests do not)."""

import time

from polycap.transforms import progress


def test_no_line_unless_asked(monkeypatch, capfd):
    monkeypatch.delenv(progress.PROGRESS_SECONDS_ENV, raising=False)
    monkeypatch.setattr(progress, "_reporter", None)
    progress.advance("tagged", 5)
    assert progress._reporter is None
    assert capfd.readouterr().err == ""


def test_a_line_every_period_with_rates_and_the_cap(monkeypatch, capfd):
    monkeypatch.setenv(progress.PROGRESS_SECONDS_ENV, "0.05")
    monkeypatch.setenv(progress.CAP_ENV, "100000")
    monkeypatch.setattr(progress, "_reporter", None)
    progress.advance("tagged", 1200)
    progress.advance("billed characters", 4500)
    time.sleep(0.3)
    lines = [line for line in capfd.readouterr().err.splitlines() if line.startswith("progress")]
    assert len(lines) == 1  # printed once: nothing changed after
    assert "tagged 1,200 (" in lines[0] and "scored 0 (0/s)" in lines[0]
    assert lines[0].endswith("billed 4,500 characters of 100,000")
