"""Run a model over rows in ``RunInference`` so that a row fails only when it raises on its own.

``RunInference(...).with_exception_handling()`` hands back a batch that raised as one failed
element, ``(rows, (exception type, error text, traceback))``. Which rows share a batch depends on
how the runner bundled them and on ``batch_size``; failing every row of the batch would make
the failed rows, and with them the PROPN stage's eligible set and the sample, depend on that too.
So a failed batch is retried one row at a time: a row that raises alone becomes a Failed row
with its own exception's text, every other row comes out as the ``PredictionResult`` its batch
would have given. Used by the PROPN stage (``tagger_error``) and the score stage
(``encoder_error``).

The retry runs the handler's own ``run_inference`` on the handler's model, loaded on the first
failed batch (never in ``setup``: most workers never retry) and shared by the process's threads.
Both handlers' loaders are cached per process (``pos_tagger.load_spacy_tagger``,
``score.load_encoder_once``), so that model is the one ``RunInference`` already holds, not a
second copy.
"""

from __future__ import annotations

import enum

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import ModelHandler, RunInference
from apache_beam.utils import shared

from polycap.transforms.outputs import FAILED, KEPT
from polycap.transforms.records import Stage, fail

RETRIED = "rows_retried"


class _RetryRowsFn(beam.DoFn):
    """A failed batch in; each row's ``PredictionResult`` out, or a Failed row (tagged
    ``FAILED``) for a row that raises alone. Counts ``rows_retried`` and the reason."""

    def __init__(self, handler: ModelHandler, stage: Stage, reason: enum.Enum):
        self._handler = handler
        self._stage = stage
        self._reason = reason
        self._model_handle = shared.Shared()
        self._model = None
        self._retried = Metrics.counter(stage.value, RETRIED)
        self._failed = Metrics.counter(stage.value, reason.value)

    def process(self, failure):
        rows, _ = failure
        if self._model is None:
            self._model = self._model_handle.acquire(self._handler.load_model)
        for row in rows:
            self._retried.inc()
            try:
                results = list(self._handler.run_inference([row], self._model))
            except Exception as error:  # what RunInference's exception handling catches
                self._failed.inc()
                yield beam.pvalue.TaggedOutput(
                    FAILED, fail(row, self._stage, self._reason, repr(error))
                )
            else:
                yield from results


class RunInferenceRowByRow(beam.PTransform):
    """PCollection[row] -> (PCollection[PredictionResult], PCollection[Failed]): ``handler``'s
    batches in ``RunInference``; a batch that raises is retried row by row, and only the rows
    that raise alone fail, with ``stage`` and ``reason`` and their exception's ``repr``."""

    def __init__(self, handler: ModelHandler, stage: Stage, reason: enum.Enum):
        super().__init__()
        self._handler = handler
        self._stage = stage
        self._reason = reason

    def expand(self, rows):
        results, errors = rows | "RunInference" >> RunInference(
            self._handler
        ).with_exception_handling()
        retried = errors.failed_inferences | "RetryRowByRow" >> beam.ParDo(
            _RetryRowsFn(self._handler, self._stage, self._reason)
        ).with_outputs(FAILED, main=KEPT)
        return (results, retried[KEPT]) | "Results" >> beam.Flatten(), retried[FAILED]
