"""Run a model over a batch so that a row fails only when it raises on its own.

Which rows share a batch depends on how the runner bundled them (and on the batch size); failing
every row of a batch that raised would make the failed rows, and with them the PROPN stage's
eligible set and the sample, depend on that too. So a batch that raises is run again one row at
a time: a row that raises alone fails with its own exception, every other row gets the result
its batch would have given. Used by the PROPN stage (``tagger_error``) and the score stage
(``encoder_error``), each counting ``rows_retried``.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

RETRIED = "rows_retried"  # counter, namespace = the stage: rows run alone after their batch raised


class Outcomes(NamedTuple):
    """(row, result, None) or (row, None, the exception it raised alone) for every row of a
    batch, in order; ``run_alone``: how many rows were run alone (0, or the whole batch)."""

    rows: list
    run_alone: int


def each_alone_on_error(run: Callable[[Sequence], Sequence], batch: Sequence) -> Outcomes:
    """Every row's outcome from one ``run(batch)`` (one result per row, in order); if that
    raises, from ``run([row])`` for each row. Touches no Beam state (no metrics), so it can run
    on any thread: the caller counts ``run_alone`` as ``rows_retried``."""
    try:
        results = list(run(batch))
    except Exception:  # run again row by row: only a row that raises alone fails
        return Outcomes([_alone(run, row) for row in batch], len(batch))
    if len(results) != len(batch):
        raise ValueError(f"{len(results)} results for a batch of {len(batch)} rows")
    return Outcomes([(row, result, None) for row, result in zip(batch, results)], 0)


def _alone(run: Callable[[Sequence], Sequence], row) -> tuple:
    try:
        (result,) = run([row])
    except Exception as error:
        return row, None, error
    return row, result, None
