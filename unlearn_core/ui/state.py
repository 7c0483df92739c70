"""What the user has selected so far: the one place the dashboard keeps session state.

Every page reads the selection through :func:`selection` and changes it only through the
setters here, so the rules live in one place: choosing another data set clears the model,
forget criteria and run that belonged to the old one; the demo button sets all of them.

Widget values are *not* the selection. Streamlit forgets a widget's value when its page is
left, so pages keep their widgets in sync with the selection (see ``forget_controls``) and
the selection itself lives under keys no widget uses (``us.*``).

Example::

    from unlearn_core.ui import state
    sel = state.selection()
    if sel.dataset is None:
        ...  # ask the user to pick data first
    state.set_criteria('vpf_mm >= 12')
"""

from __future__ import annotations

from dataclasses import dataclass, field

import streamlit as st

_PREFIX = "us."
_DATASET = _PREFIX + "dataset"
_DATASET_LABEL = _PREFIX + "dataset_label"
_MODEL = _PREFIX + "model"
_CRITERIA = _PREFIX + "criteria"
_RUN = _PREFIX + "run_id"
_TRAIN_RUN = _PREFIX + "train_run_id"
_UNLEARN_RUN = _PREFIX + "unlearn_run_id"
_FLASH = _PREFIX + "flash"
_DEMO_RETRAIN = _PREFIX + "demo_retrain_run_ids"  # built-in set name -> run retraining its demo model

#: Widget-key prefixes of page controls that describe the current data set; cleared when the
#: data set changes so no stale column or class survives in a widget.
DATASET_WIDGET_PREFIXES = ("fs_",)

DEMO_DATASET = "oculoplastic"


@dataclass(frozen=True)
class ModelChoice:
    """Which model the user works with.

    Attributes:
        kind: ``"shipped"`` (the built-in set's demo model: shipped in ``assets/``, or retrained
            into the workspace), ``"file"`` (uploaded weights saved
            in the workspace) or ``"run"`` (trained here; the run's saved weights).
        path: the weights file for ``file`` and ``run`` (what ``--weights`` gets).
        arch: the architecture, when the file does not say it itself.
        run_id: the training run, for ``run``.
        label: how to name it on screen (the uploaded file's name, ...).
    """

    kind: str
    path: str = ""
    arch: str = ""
    run_id: str = ""
    label: str = ""

    @property
    def key(self) -> str:
        """A string that identifies the weights (the path holds a content hash or a run id)."""
        return f"{self.kind}|{self.path}|{self.arch}|{self.run_id}"

    def describe(self) -> str:
        """A few words for status panels."""
        if self.kind == "shipped":
            return "the demo model"
        if self.kind == "run":
            return f"trained here (run {self.run_id})"
        return f"uploaded weights {self.label or self.path}" + (f" ({self.arch})" if self.arch else "")

    @classmethod
    def from_key(cls, key: str) -> ModelChoice:
        kind, path, arch, run_id = (key.split("|") + ["", "", "", ""])[:4]
        return cls(kind=kind, path=path, arch=arch, run_id=run_id)


@dataclass(frozen=True)
class Selection:
    """The selection so far; ``None``/empty where the user has not chosen yet."""

    dataset: str | None = None
    dataset_label: str = ""
    model: ModelChoice | None = None
    criteria: str = ""
    run_id: str | None = None
    extra: dict = field(default_factory=dict)

    def unlearn_request(self, method: str = "psg", settings: dict | None = None, retrain: bool = False,
                        seed: int = 0, preset: str | None = None, device: str = "auto", recipe=None):
        """The :class:`~unlearn_core.runs.requests.UnlearnRequest` for this selection (``recipe``:
        the original's training :class:`~unlearn_core.runs.recipe.Recipe` when its file has none)."""
        from unlearn_core.runs.requests import UnlearnRequest

        model = self.model if self.model is not None and self.model.kind != "shipped" else None
        return UnlearnRequest(dataset=self.dataset or "DATASET", forget=self.criteria or "CRITERIA", method=method,
                              overrides=dict(settings or {}), preset=preset, retrain=retrain, seed=seed,
                              device=device, weights=model.path if model else None,
                              arch=(model.arch or None) if model else None, recipe=recipe if retrain else None)


# --- reading ---------------------------------------------------------------------------------
def selection() -> Selection:
    ss = st.session_state
    return Selection(
        dataset=ss.get(_DATASET),
        dataset_label=ss.get(_DATASET_LABEL, ""),
        model=ss.get(_MODEL),
        criteria=ss.get(_CRITERIA, ""),
        run_id=ss.get(_RUN),
    )


def train_run() -> str | None:
    """The training run started from the Data & model page, if any."""
    return st.session_state.get(_TRAIN_RUN)


def unlearn_run() -> str | None:
    """The unlearning run started from the Unlearn page, if any (may still be running)."""
    return st.session_state.get(_UNLEARN_RUN)


def demo_retrain_run(name: str) -> str | None:
    """The run retraining the demo model of built-in set ``name``, if one was started here."""
    return st.session_state.get(_DEMO_RETRAIN, {}).get(name)


def set_demo_retrain_run(name: str, run_id: str | None) -> None:
    runs = dict(st.session_state.get(_DEMO_RETRAIN, {}))
    runs[name] = run_id
    st.session_state[_DEMO_RETRAIN] = runs


# --- changing ----------------------------------------------------------------------------------
def set_dataset(ref: str, label: str = "") -> bool:
    """Select a data set (a built-in name or a file path ``load_dataset`` accepts).

    Choosing a different one clears the model, criteria and runs chosen for the old one.
    Returns whether the selection changed.
    """
    ss = st.session_state
    changed = ss.get(_DATASET) != ref
    if changed:
        for key in (_MODEL, _CRITERIA, _RUN, _TRAIN_RUN, _UNLEARN_RUN):
            ss.pop(key, None)
        clear_widgets(DATASET_WIDGET_PREFIXES)
    ss[_DATASET] = ref
    ss[_DATASET_LABEL] = label or ref
    write_url()
    return changed


def clear_dataset() -> None:
    ss = st.session_state
    for key in (_DATASET, _DATASET_LABEL, _MODEL, _CRITERIA, _RUN, _TRAIN_RUN, _UNLEARN_RUN):
        ss.pop(key, None)
    clear_widgets(DATASET_WIDGET_PREFIXES)
    write_url()


def set_model(choice: ModelChoice | None) -> None:
    st.session_state[_MODEL] = choice
    write_url()


def use_trained_run(record, weights_path: str) -> None:
    """Select a finished training run's model, and its data set when another one is selected.

    ``record`` is the run's :class:`~unlearn_core.runs.registry.RunRecord`; used by Data & model
    and by Runs ("Use this model"), so a model trained earlier needs no download and upload.
    """
    from unlearn_core.labels import dataset_name

    if selection().dataset != record.dataset:
        set_dataset(record.dataset, dataset_name(record.dataset))
    set_model(ModelChoice("run", str(weights_path), arch=str((record.config or {}).get("arch", "")),
                          run_id=record.id))


def set_criteria(text: str) -> None:
    st.session_state[_CRITERIA] = (text or "").strip()
    write_url()


def set_run(run_id: str | None) -> None:
    st.session_state[_RUN] = run_id
    write_url()


def set_train_run(run_id: str | None) -> None:
    st.session_state[_TRAIN_RUN] = run_id
    write_url()


def set_unlearn_run(run_id: str | None) -> None:
    st.session_state[_UNLEARN_RUN] = run_id
    write_url()


# --- the selection in the URL, so a browser reload keeps the place -----------------------------
#: Query parameter -> session key. Why the URL: a reload (or a bookmark) starts a new session
#: that knows nothing; the address bar is the one thing the browser keeps.
URL_KEYS = {"data": _DATASET, "model": _MODEL, "forget": _CRITERIA, "run": _RUN, "train": _TRAIN_RUN,
            "unlearn": _UNLEARN_RUN}
_RESTORED = _PREFIX + "restored_from_url"


def write_url() -> None:
    """Mirror the selection into the page's query parameters (empty ones are left out)."""
    ss = st.session_state
    wanted = {}
    for param, key in URL_KEYS.items():
        value = ss.get(key)
        if isinstance(value, ModelChoice):
            value = value.key
        if value:
            wanted[param] = str(value)
    if dict(st.query_params) != wanted:
        st.query_params.from_dict(wanted)


def restore_from_url() -> None:
    """Once per session: take the selection from the query parameters if the session has none."""
    ss = st.session_state
    if ss.get(_RESTORED):
        return
    ss[_RESTORED] = True
    params = dict(st.query_params)
    if ss.get(_DATASET) or not params.get("data"):
        return
    from unlearn_core.data.builtin import BUILTIN_SETS
    from unlearn_core.labels import dataset_name

    ref = params["data"]
    ss[_DATASET] = ref
    ss[_DATASET_LABEL] = BUILTIN_SETS[ref].title if ref in BUILTIN_SETS else dataset_name(ref)
    for param, key in URL_KEYS.items():
        if param != "data" and params.get(param):
            ss[key] = ModelChoice.from_key(params[param]) if key == _MODEL else params[param]


def clear_widgets(prefixes: tuple[str, ...]) -> None:
    """Forget widget values whose key starts with one of ``prefixes``."""
    for key in [k for k in st.session_state if isinstance(k, str) and k.startswith(prefixes)]:
        del st.session_state[key]


def select_builtin(name: str) -> None:
    """Select a built-in set and its demo model (whose panel says if it must be retrained)."""
    from unlearn_core.data.builtin import BUILTIN_SETS

    set_dataset(name, BUILTIN_SETS[name].title)
    if selection().model is None:
        set_model(ModelChoice("shipped"))


def load_demo(name: str = DEMO_DATASET) -> None:
    """The one-click demo: the built-in set, its shipped model and its demo forget criteria."""
    from unlearn_core.data.builtin import BUILTIN_SETS

    select_builtin(name)
    set_criteria(BUILTIN_SETS[name].demo_forget)
    clear_widgets(DATASET_WIDGET_PREFIXES)


# --- one-shot messages across a rerun or a page switch -----------------------------------------
def flash(message: str, kind: str = "success") -> None:
    """Show ``message`` once, at the top of the next page that calls :func:`take_flash`."""
    st.session_state[_FLASH] = (kind, message)


def take_flash() -> tuple[str, str] | None:
    return st.session_state.pop(_FLASH, None)
