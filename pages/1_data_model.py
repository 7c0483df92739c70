"""Step 1 · Data & model: choose the images and the model, and check both."""

from pathlib import Path

import numpy as np
import streamlit as st

from unlearn_core import plots
from unlearn_core.data.builtin import BUILTIN_SETS
from unlearn_core.data.catalog import describe_dataset
from unlearn_core.data import image_dir, loaders
from unlearn_core.errors import UserError
from unlearn_core.models.architectures import ARCHITECTURES
from unlearn_core.runs import attach
from unlearn_core.runs.requests import TrainRequest
from unlearn_core.ui import background, cache, demo_model, state, widgets

SAMPLES_SHOWN = 24
SOURCES = {"builtin": "Built-in data set", "upload": "Upload my own images",
           "disk": "A folder on this computer"}
MODEL_SOURCES = {
    "shipped": "Demo model",
    "file": "Upload weights",
    "run": "Trained here (new or earlier)",
}
ARCH_FROM_FILE = "(as saved in the file)"

widgets.page_header(
    "Data & model",
    "Choose the images to work with and the model that learned from them. Below, check what the "
    "data contain and how well the model does on test images it never trained on.",
)
sel = state.selection()
ss = st.session_state

# --- data set ------------------------------------------------------------------------------
st.subheader("Data set")
is_builtin = sel.dataset in BUILTIN_SETS
ss.setdefault("dm_source", "builtin" if not sel.dataset or is_builtin
              else "disk" if image_dir.is_image_dir(sel.dataset) else "upload")
source = st.radio("Where are the images?", list(SOURCES), format_func=SOURCES.get,
                  key="dm_source", horizontal=True)


def _pick_builtin() -> None:
    name = ss.get("dm_builtin")
    if name:
        state.select_builtin(name)


RESIZE_SIZES = (16, 28, 32, 48, 64, 96, 128, 224)


def _size_choice(upload, csv_upload, file_column: str) -> int | None:
    """The resize the user chose (``None``: keep the native size), and what will happen, in words."""
    if upload.name.lower().endswith(".npz"):
        st.caption("The images keep the size of the arrays in the .npz file.")
        return None
    try:
        width, height = cache.upload_image_size(upload.getvalue(),
                                                csv_upload.getvalue() if csv_upload is not None else None,
                                                file_column)
    except UserError:
        width = height = None  # the load itself says what is wrong
    native = f"{width} × {height} pixels" if width else "their own size"
    resize = st.checkbox("Resize the images", key="dm_resize",
                         help="Smaller images make every run faster; larger ones keep fine detail. "
                              "Non-square images must be resized (they are stretched to a square).")
    if not resize:
        st.caption(f"The images keep their native size: {native} (the first image in the CSV); all of them "
                   "must have that size.")
        return None
    size = st.select_slider("Resize to (pixels a side)", RESIZE_SIZES, value=64, key="dm_resize_to")
    st.caption(f"Every image will be resized from {native} to {size} × {size} pixels.")
    return int(size)


if source == "builtin":
    if "dm_builtin" not in ss or (is_builtin and ss["dm_builtin"] != sel.dataset):
        ss["dm_builtin"] = sel.dataset if is_builtin else None
    st.selectbox("Built-in data set", list(BUILTIN_SETS), key="dm_builtin",
                 format_func=lambda n: BUILTIN_SETS[n].title, placeholder="Choose a data set…",
                 on_change=_pick_builtin,
                 help="Built-in sets are generated on this computer; nothing is downloaded.")
elif source == "disk":
    st.markdown(
        "For sets too large to upload or to hold in memory: the path of a folder written by "
        "`python -m unlearn_core import SOURCE --out FOLDER` (its pixels stay on disk and are read as "
        "needed), or of a folder or ZIP of images with its CSV (read into memory; up to "
        f"{loaders.human_bytes(loaders.MAX_DECODED_BYTES)} of pixels).")
    folder = st.text_input("Path on the computer running the studio", key="dm_disk_path",
                           value=sel.dataset if sel.dataset and not is_builtin else "",
                           placeholder="/data/fundus-imported")
    if st.button("Use these images", key="dm_load_disk", disabled=not folder.strip(), type="primary"):
        try:
            with st.spinner("Reading the metadata…"):
                cache.dataset(folder.strip())
            state.set_dataset(folder.strip(), Path(folder.strip()).name)
            state.flash(f"Using {folder.strip()}.")
            st.rerun()
        except UserError as error:
            widgets.show_error(error, f"{folder.strip()} could not be used")
else:
    st.markdown(
        "Upload a **ZIP of images with a CSV** (one row per image: its file name and its class, in "
        "columns you pick below; every other column becomes metadata you can filter on; an optional "
        "`split` column says `train` or `test`), or a **MedMNIST-style `.npz`** file. Images keep "
        "their own size unless you choose to resize them."
    )
    up_cols = st.columns(2)
    upload = up_cols[0].file_uploader("Images (.zip or .npz)", type=["zip", "npz"], key="dm_upload")
    csv_upload = up_cols[1].file_uploader("CSV, only if it is not inside the ZIP", type=["csv"],
                                          key="dm_upload_csv")
    columns = {}
    if upload is not None and upload.name.lower().endswith(".zip"):
        try:  # the CSV's own columns, with a guess preselected
            raw, csv_name, _ = loaders.upload_csv(upload.getvalue(),
                                                  csv_upload.getvalue() if csv_upload is not None else None)
            names = loaders.csv_columns(raw, csv_name)
            guess = loaders.guess_file_and_label_columns(names)
            map_cols = st.columns(2)
            columns["file_column"] = map_cols[0].selectbox(
                "Column with the image file names", names, index=names.index(guess[0]), key="dm_file_column",
                help=f"From {csv_name}. Each row names one image in the ZIP.")
            columns["label_column"] = map_cols[1].selectbox(
                "Column with the class", names, index=names.index(guess[1]), key="dm_label_column",
                help="The diagnosis or class each image has; every other column becomes a filter "
                     "on the Forget set page.")
        except UserError as error:
            widgets.show_error(error, f"{upload.name} could not be read")
    image_size = None
    if upload is not None:
        image_size = _size_choice(upload, csv_upload, columns.get("file_column", "file"))
    if st.button("Load these images", key="dm_load_upload", disabled=upload is None, type="primary"):
        try:
            with st.spinner("Reading the images…"):
                path = cache.store_data_upload(
                    upload.name, upload.getvalue(),
                    csv_upload.getvalue() if csv_upload is not None else None,
                    csv_upload.name if csv_upload is not None else "",
                    **columns, image_size=image_size,
                )
                cache.dataset(path)
            state.set_dataset(path, upload.name)
            state.flash(f"Loaded {upload.name}.")
            st.rerun()
        except UserError as error:
            widgets.show_error(error, f"{upload.name} could not be loaded")

sel = state.selection()
if not sel.dataset:
    st.info("Choose a data set above, or press **Load the demo** on the Home page.", icon=":material/info:")
    st.stop()

try:
    with st.spinner(f"Preparing {sel.dataset_label} (a few seconds the first time)…"):
        data = cache.dataset(sel.dataset)
except Exception as error:  # noqa: BLE001 - a failing generator must leave the page usable
    widgets.show_error(error, f"{sel.dataset_label} could not be loaded")
    st.stop()

info = describe_dataset(data)
if sel.dataset in BUILTIN_SETS:
    st.caption(f"{data.description} Demo scenario: {BUILTIN_SETS[sel.dataset].demo_story}")
elif data.description:
    st.caption(data.description)

# --- model ---------------------------------------------------------------------------------
st.subheader("Model")
st.markdown("The model to make forget. It must have been trained on this data set.")
options = [k for k in MODEL_SOURCES if k != "shipped" or sel.dataset in BUILTIN_SETS]
current_kind = sel.model.kind if sel.model is not None else None
if ss.get("dm_model_source") not in options:
    ss["dm_model_source"] = current_kind if current_kind in options else options[0]
model_source = st.radio("Which model?", options, format_func=MODEL_SOURCES.get,
                        key="dm_model_source", horizontal=True)

if model_source == "shipped":
    with st.spinner("Checking the demo model against the data…"):
        check = demo_model.demo_model_panel(sel.dataset, key="dm_demo")
    if not check.usable:
        pass
    elif sel.model is not None and sel.model.kind == "shipped":
        st.success("Using the demo model (a small CNN trained on this set).", icon=":material/check_circle:")
    elif st.button("Use the demo model", key="dm_use_shipped", type="primary"):
        state.set_model(state.ModelChoice("shipped"))
        st.rerun()

elif model_source == "file":
    cols = st.columns([2, 1])
    weights = cols[0].file_uploader(
        "Weights (.safetensors, weights-only .pt/.pth, or TorchScript)",
        type=["safetensors", "pt", "pth"], key="dm_weights")
    arch = cols[1].selectbox(
        "Architecture", [ARCH_FROM_FILE, *ARCHITECTURES], key="dm_arch",
        help="Files saved by this tool say which architecture they are. For other files, pick the "
             "architecture the model was trained with.")
    if st.button("Use these weights", key="dm_use_weights", disabled=weights is None, type="primary"):
        choice = state.ModelChoice(
            "file", cache.store_weights_upload(weights.name, weights.getvalue()),
            arch="" if arch == ARCH_FROM_FILE else arch, label=weights.name)
        try:
            with st.spinner("Checking the weights against the data set…"):
                cache.model(sel.dataset, choice.key)
            state.set_model(choice)
            state.flash(f"Using {weights.name}.")
            st.rerun()
        except UserError as error:
            widgets.show_error(error, f"{weights.name} does not fit this data set")
    if sel.model is not None and sel.model.kind == "file":
        st.caption(f"In use: {sel.model.describe()}.")

else:  # train one
    train_id = state.train_run()
    record = None
    if train_id:
        try:
            record = cache.workspace().get(train_id)
        except UserError:
            state.set_train_run(None)
    if record is not None and record.is_active:
        background.progress_panel(train_id, "Training", key="dm_train_progress")
    else:
        if record is not None:
            background.finished_message(record, "Training")
        cols = st.columns(4)
        train_arch = cols[0].selectbox("Architecture", list(ARCHITECTURES),
                                       key=widgets.sticky("dm_train_arch", next(iter(ARCHITECTURES))),
                                       help="small_cnn trains in seconds on a laptop; ResNets need a GPU to be quick.")
        epochs = cols[1].number_input("Epochs", 1, 200, key=widgets.sticky("dm_train_epochs", 8),
                                      help="Passes over the training images.")
        seed = cols[2].number_input("Seed", 0, 2**31 - 1, key=widgets.sticky("dm_train_seed", 0),
                                    help="Same seed, same model.")
        processes = widgets.processes_input(cols[3], "dm_train_processes", "auto", "training")
        if st.button("Train in the background", key="dm_train", type="primary", icon=":material/play_arrow:"):
            try:
                started = background.start(TrainRequest(dataset=sel.dataset, arch=train_arch, epochs=int(epochs),
                                                        seed=int(seed), processes=int(processes)))
                state.set_train_run(started.id)
                st.rerun()
            except UserError as error:
                widgets.show_error(error, "Training could not start")
    if record is not None and record.status == "done":
        from unlearn_core.runs.registry import WEIGHTS_NAME

        weights_path = cache.workspace().artifact_path(record.id, WEIGHTS_NAME)
        chosen = sel.model is not None and sel.model.kind == "run" and sel.model.run_id == record.id
        if chosen:
            st.caption(f"In use: {sel.model.describe()}.")
        elif weights_path.is_file() and st.button("Use the trained model", key="dm_use_trained", type="primary"):
            state.use_trained_run(record, str(weights_path))
            st.rerun()

    # models trained earlier (another session, a reload, the command line): choosable without re-uploading
    earlier = [r for r in cache.trained_models(sel.dataset) if r.id != train_id]
    if earlier:
        st.markdown("**Or use a model trained here earlier** on this data set:")
        by_id = {r.id: r for r in earlier}
        pick_cols = st.columns([3, 1])
        picked = pick_cols[0].selectbox("Trained model", list(by_id), key="dm_earlier",
                                        format_func=lambda i: attach.trained_model_label(by_id[i]),
                                        label_visibility="collapsed")
        in_use = sel.model is not None and sel.model.kind == "run" and sel.model.run_id == picked
        if in_use:
            pick_cols[1].caption("In use.")
        elif pick_cols[1].button("Use this model", key="dm_use_earlier", type="primary"):
            state.use_trained_run(by_id[picked], cache.weights_of(picked))
            state.flash(f"Using the model of training run {picked}.")
            st.rerun()

# --- what is in the data ---------------------------------------------------------------------
st.divider()
st.subheader("What is in the data")
metric_cols = st.columns(4)
metric_cols[0].metric("Training images", f"{info['n_train']:,}")
metric_cols[1].metric("Test images", f"{info['n_test']:,}")
metric_cols[2].metric("Classes", len(info["classes"]))
c, h, w = info["image_shape"]
metric_cols[3].metric("Image size", f"{h}×{w} px", help=f"{c} colour channel(s)")

tab_classes, tab_meta, tab_images = st.tabs(["Classes", "Metadata", "Sample images"])
with tab_classes:
    st.plotly_chart(plots.class_counts(data.class_counts()), key="dm_class_chart")
with tab_meta:
    columns = info["metadata_columns"]
    if not columns:
        st.info("This data set has no metadata columns besides the class; you can still forget by class "
                "or a random share.")
    st.caption("These columns are what you can choose the forget set by on the next page.")
    per_row = 3
    for start in range(0, len(columns), per_row):
        row = st.columns(per_row)
        for col, name in zip(row, columns[start:start + per_row]):
            col.plotly_chart(plots.metadata_chart(data.metadata[name], name, data.units.get(name, "")),
                             key=f"dm_meta_{name}")
with tab_images:
    ss.setdefault("dm_sample_seed", 0)
    rng = np.random.default_rng(ss["dm_sample_seed"])
    shown = np.sort(rng.choice(len(data.metadata), size=min(SAMPLES_SHOWN, len(data.metadata)), replace=False))
    meta = data.metadata.iloc[shown]
    st.plotly_chart(plots.image_grid(
        data.images[shown].numpy(), hover=plots.hover_text(meta, data.classes, data.units),
        captions=[data.classes[int(i)] for i in meta["label"]], columns=8), key="dm_sample_grid")
    st.caption("Hover over an image to see its metadata.")
    if st.button("Show other images", key="dm_shuffle", icon=":material/shuffle:"):
        ss["dm_sample_seed"] += 1
        st.rerun()

# --- how good is the model ---------------------------------------------------------------------
st.divider()
st.subheader("How well the model does on test images")
if sel.model is None:
    st.info("Choose a model above to see its accuracy.", icon=":material/info:")
    st.stop()
try:
    with st.spinner("Classifying the test images…"):
        logits, labels = cache.test_logits(sel.dataset, sel.model.key)
except UserError as error:
    widgets.show_error(error, "The model could not be used with this data set")
    st.stop()
predicted = logits.argmax(axis=1)
accuracy = float((predicted == labels).mean()) if len(labels) else float("nan")
cols = st.columns([1, 2])
with cols[0]:
    st.metric("Test accuracy", f"{accuracy:.1%}",
              help="Share of the test images (never used for training) the model classifies correctly.")
    per_class = [float((predicted[labels == k] == k).mean()) if (labels == k).any() else float("nan")
                 for k in range(data.num_classes)]
    st.dataframe({"class": data.classes, "accuracy": [f"{a:.1%}" for a in per_class],
                  "test images": np.bincount(labels, minlength=data.num_classes).tolist()},
                 hide_index=True, width="stretch")
with cols[1]:
    st.plotly_chart(plots.confusion_matrix(labels, predicted, data.classes), key="dm_confusion")

widgets.next_step(widgets.FORGET, "choose which images the model must forget.")
