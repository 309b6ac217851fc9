"""polycap's driver side: typed config, command line, graph assembly and the audit."""

__version__ = "0.1.0"
