"""polycap's report side: the audit of an output, its HTML report, ``calibrate`` and
``audit --pairs``. Reads what a run wrote; runs no pipeline."""
