"""Streamlit helpers for the dashboard: the only part of ``unlearn_core`` that imports Streamlit.

* :mod:`unlearn_core.ui.state`: what the user has selected so far (one place for session state).
* :mod:`unlearn_core.ui.cache`: cached loaders (data sets, models, predictions) keyed by content.
* :mod:`unlearn_core.ui.widgets`: shared widgets (page header, status panel, errors, progress).
* :mod:`unlearn_core.ui.forget_controls`: the forget-set controls generated from metadata columns.

Pages import these; the library itself never does.
"""
