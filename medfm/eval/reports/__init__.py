"""HTML reports: :mod:`~medfm.eval.reports.html` holds the page pieces, one module per evaluation renders it."""
