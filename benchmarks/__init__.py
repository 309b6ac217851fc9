"""polycap's benchmark harness (``make bench``; not part of ``make test``). See README.md here."""
