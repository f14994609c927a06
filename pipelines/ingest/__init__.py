"""Ingest: the parser contract (``contract``), the sources that parse files (``sources``),
each kind's columns and rules (``kinds``, ``rules``), and the machine that runs the stages
(``machine``).
"""
