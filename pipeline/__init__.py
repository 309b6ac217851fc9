"""polycap's driver: the typed config that composes every stage's section, the command line, and
the assembly of the stages into one Beam pipeline."""
