"""usfad training: data, fitting, evaluation, experiments, export, CLI."""
