"""Unlearning Studio dashboard: ``streamlit run app.py``.

The entry point only sets up the page, the navigation over ``pages/`` and the "selected so
far" panel in the sidebar; every page is a thin script that reads widgets, calls
``unlearn_core`` and renders (the layers are drawn in ``docs/architecture.md``).
"""

import streamlit as st

from unlearn_core.ui import state, widgets

st.set_page_config(page_title="Unlearning Studio", page_icon=":material/auto_fix_high:", layout="wide")
state.restore_from_url()  # a browser reload keeps the selection and the run in progress
state.write_url()  # page links drop the query parameters: put them back on every run

home = st.Page(widgets.HOME.path, title=widgets.HOME.title, icon=widgets.HOME.icon, default=True)
steps = [st.Page(page.path, title=page.title, icon=page.icon) for page in widgets.STEPS]
navigation = st.navigation({"": [home], "Steps": steps})
if navigation.title != widgets.HOME.title:  # the home page shows the selection in full
    widgets.sidebar_status()
navigation.run()
