"""Run a model over a batch so that a row fails only when it raises on its own.

Which rows share a batch depends on how the runner bundled them (and on the batch size); failing
every row of a batch that raised would make the failed rows, and with them the PROPN stage's
eligible set and the sample, depend on that too. So a batch that raises is run again one row at
a time: a row that raises alone fails with its own exception, every other row gets the result
its batch would have given. Used by the PROPN stage (``tagger_error``) and the score stage
(``encoder_error``), each counting ``rows_retried``.
"""

from __future__ import annotations

from typing import Callable, Iterator, Optional, Sequence, TypeVar

Row = TypeVar("Row")
Result = TypeVar("Result")

RETRIED = "rows_retried"  # counter, namespace = the stage: rows run alone after their batch raised


def each_alone_on_error(
    run: Callable[[Sequence[Row]], Sequence[Result]], batch: Sequence[Row], retried
) -> Iterator[tuple[Row, Optional[Result], Optional[Exception]]]:
    """(row, result, None) for every row of ``batch`` from one ``run(batch)`` (one result per row,
    in order); if that raises, each row is run alone and comes out as (row, result, None) or
    (row, None, the exception it raised). ``retried`` (a Beam counter) counts the rows run alone."""
    try:
        results = list(run(batch))
    except Exception:  # run again row by row: only a row that raises alone fails
        for row in batch:
            retried.inc()
            try:
                (result,) = run([row])
            except Exception as error:
                yield row, None, error
            else:
                yield row, result, None
        return
    if len(results) != len(batch):
        raise ValueError(f"{len(results)} results for a batch of {len(batch)} rows")
    for row, result in zip(batch, results):
        yield row, result, None
