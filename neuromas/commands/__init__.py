"""The verbs of the `neuromas` command, one module each (train, grow, eval, show, plot, attribute),
and the work only a verb does (evaluation, attribution_report, curves). The library (everything
outside this package) never imports from here. A verb module is light at import: it checks its
arguments before torch is imported, and imports the heavy work inside `run`."""
