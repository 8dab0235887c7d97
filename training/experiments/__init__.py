"""The paper's experiments, each a small package run by a ``usfad experiment`` command."""
