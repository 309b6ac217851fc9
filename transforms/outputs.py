"""What every stage hands on: the rows it kept, and the rows it rejected or could not process."""

from typing import NamedTuple, Optional

import apache_beam as beam

REJECTED = "rejected"
FAILED = "failed"


class StageOutput(NamedTuple):
    """``kept`` goes to the next stage; ``rejected`` (``Rejected`` rows) and ``failed``
    (``Failed`` rows) go to the output. A stage that cannot reject or fail leaves them None."""

    kept: beam.PCollection
    rejected: Optional[beam.PCollection] = None
    failed: Optional[beam.PCollection] = None
