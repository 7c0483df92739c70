"""Loaders for users' own data: folders/ZIPs + CSV, MedMNIST-style .npz, and the dispatcher."""

from __future__ import annotations

import io
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from unlearn_core.data import loaders
from unlearn_core.data.imageset import ImageSet
from unlearn_core.data.loaders import load_image_folder, load_npz, load_user_data
from unlearn_core.errors import UserError

# --- builders --------------------------------------------------------------------------------
COLOURS = {"benign": (200, 30, 30), "malignant": (30, 30, 200)}


def _image_bytes(colour, size=(12, 10), mode="RGB", fmt="PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, colour).save(buffer, format=fmt)
    return buffer.getvalue()


def _rows(n_per_class=4, with_split=True) -> pd.DataFrame:
    rows = []
    for cls in COLOURS:
        for i in range(n_per_class):
            row = {"file": f"img/{cls}_{i}.png", "label": cls, "age": 40 + i,
                   "device": "Cirrus" if i % 2 else "Topcon"}
            if with_split:
                row["split"] = "test" if i == 0 else "train"
            rows.append(row)
    return pd.DataFrame(rows)


def _files(table: pd.DataFrame, fmt="PNG") -> dict[str, bytes]:
    """One solid image per row, coloured by class so pixel checks can find mix-ups."""
    return {f: _image_bytes(COLOURS.get(lbl, (90, 90, 90)), fmt=fmt)
            for f, lbl in zip(table["file"], table["label"])}


def _write_folder(root: Path, table: pd.DataFrame, csv_name: str | None = "labels.csv",
                  files: dict[str, bytes] | None = None) -> Path:
    for name, data in (files if files is not None else _files(table)).items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    if csv_name:
        table.to_csv(root / csv_name, index=False)
    return root


def _zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _dataset_zip(table: pd.DataFrame, prefix: str = "") -> bytes:
    members = {prefix + k: v for k, v in _files(table).items()}
    members[prefix + "labels.csv"] = table.to_csv(index=False).encode()
    return _zip_bytes(members)


def _load_table(tmp_path: Path, table: pd.DataFrame, files=None, **options) -> ImageSet:
    _write_folder(tmp_path / "data", table, files=files)
    return load_image_folder(tmp_path / "data", **options)


def _check_dataset(ds: ImageSet, table: pd.DataFrame) -> None:
    assert ds.images.dtype == torch.uint8
    assert tuple(ds.images.shape) == (len(table), 3, 16, 16)
    assert ds.classes == ["benign", "malignant"]
    assert ds.metadata["sample_id"].tolist() == table["file"].tolist()
    assert ds.metadata["label"].tolist() == [ds.classes.index(v) for v in table["label"]]
    assert ds.metadata["split"].tolist() == table["split"].tolist()
    assert pd.api.types.is_integer_dtype(ds.metadata["age"])
    assert pd.api.types.is_string_dtype(ds.metadata["device"])
    assert ds.metadata["device"].tolist() == table["device"].tolist()
    assert list(ds.metadata.columns) == ["sample_id", "label", "split", "age", "device"]
    # Solid images survive resizing exactly; red rows are benign, blue rows malignant.
    for row, cls in enumerate(table["label"]):
        assert ds.images[row, :, 5, 5].tolist() == list(COLOURS[cls])


# --- folder / ZIP + CSV: good input ------------------------------------------------------------
def test_folder_with_separate_csv(tmp_path):
    table = _rows()
    _write_folder(tmp_path / "data", table, csv_name=None)
    table.to_csv(tmp_path / "meta.csv", index=False)
    ds = load_image_folder(tmp_path / "data", tmp_path / "meta.csv", image_size=16)
    _check_dataset(ds, table)
    assert ds.name == "data"
    assert ds.test_indices.tolist() == [0, 4]


def test_folder_finds_its_own_csv_and_ignores_unlisted_files(tmp_path):
    table = _rows()
    root = _write_folder(tmp_path / "data", table)
    (root / "README.txt").write_text("not an image, not listed")
    ds = load_image_folder(str(root), image_size=16, name="mine")
    _check_dataset(ds, table)
    assert ds.name == "mine"


@pytest.mark.parametrize("as_", ["path", "bytesio", "bytes"])
def test_zip_with_csv_inside(tmp_path, as_):
    table = _rows()
    data = _dataset_zip(table, prefix="study/")  # zipping a folder adds a top-level folder
    path = tmp_path / "study.zip"
    path.write_bytes(data)
    source = {"path": path, "bytesio": io.BytesIO(data), "bytes": data}[as_]
    ds = load_image_folder(source, image_size=16)
    _check_dataset(ds, table)
    assert ds.name == ("study" if as_ == "path" else "upload")


def test_zip_upload_already_read_is_rewound():
    upload = io.BytesIO(_dataset_zip(_rows()))
    upload.name = "clinic.zip"
    upload.read()  # Streamlit or the caller may have consumed it
    ds = load_image_folder(upload, image_size=16)
    assert ds.name == "clinic" and len(ds.metadata) == 8


def test_zip_ignores_macos_junk_csv(tmp_path):
    table = _rows()
    members = {**_files(table), "labels.csv": table.to_csv(index=False).encode(),
               "__MACOSX/._labels.csv": b"\x00\x05junk"}
    ds = load_image_folder(_zip_bytes(members), image_size=16)
    assert len(ds.metadata) == 8


def test_auto_split_is_stratified_and_seeded(tmp_path):
    table = _rows(n_per_class=10, with_split=False)
    _write_folder(tmp_path / "data", table)
    first = load_image_folder(tmp_path / "data", image_size=8, seed=3, test_fraction=0.3)
    again = load_image_folder(tmp_path / "data", image_size=8, seed=3, test_fraction=0.3)
    other = load_image_folder(tmp_path / "data", image_size=8, seed=4, test_fraction=0.3)
    assert first.metadata["split"].tolist() == again.metadata["split"].tolist()
    assert first.metadata["split"].tolist() != other.metadata["split"].tolist()
    assert first.class_counts()["test"].tolist() == [3, 3]
    assert first.class_counts()["train"].tolist() == [7, 7]
    assert "split" in first.metadata.columns and "file" not in first.metadata.columns


def test_split_column_accepts_case_and_validation(tmp_path):
    table = _rows()
    table["split"] = ["Test", "val", "TRAIN ", "train"] * 2
    ds = _load_table(tmp_path, table, image_size=8)
    assert ds.metadata["split"].tolist() == ["test", "train", "train", "train"] * 2


def test_greyscale_images_give_one_channel(tmp_path):
    table = _rows(with_split=False)
    files = {f: _image_bytes(60 + 20 * i, mode="L") for i, f in enumerate(table["file"])}
    ds = _load_table(tmp_path, table, files=files, image_size=8)
    assert ds.channels == 1
    assert ds.images[:, 0, 4, 4].tolist() == [60 + 20 * i for i in range(8)]


def test_rgb_with_equal_channels_counts_as_greyscale(tmp_path):
    table = _rows(with_split=False)
    files = {f: _image_bytes((77, 77, 77)) for f in table["file"]}
    ds = _load_table(tmp_path, table, files=files, image_size=8)
    assert ds.channels == 1 and int(ds.images[0, 0, 3, 3]) == 77


def test_mixed_grey_and_colour_gives_three_channels(tmp_path):
    table = _rows(with_split=False)
    files = _files(table)
    files[table["file"][0]] = _image_bytes(50, mode="L")
    ds = _load_table(tmp_path, table, files=files, image_size=8)
    assert ds.channels == 3
    assert ds.images[0, :, 2, 2].tolist() == [50, 50, 50]


@pytest.mark.parametrize("channels", [1, 3])
def test_explicit_channels(tmp_path, channels):
    table = _rows(with_split=False)
    ds = _load_table(tmp_path, table, image_size=8, channels=channels)
    assert ds.channels == channels


def test_jpeg_16bit_rgba_and_nonsquare_are_resized(tmp_path):
    table = _rows(with_split=False)
    files = _files(table, fmt="JPEG")
    files[table["file"][1]] = _image_bytes((10, 200, 10, 0), size=(40, 7), mode="RGBA")
    sixteen = io.BytesIO()
    Image.fromarray(np.full((9, 9), 65535, dtype=np.uint16)).save(sixteen, format="PNG")
    files[table["file"][2]] = sixteen.getvalue()
    ds = _load_table(tmp_path, table, files=files, image_size=20)
    assert tuple(ds.images.shape) == (8, 3, 20, 20)
    assert ds.images[1, :, 3, 3].tolist() == [10, 200, 10]  # alpha dropped, stretched
    assert ds.images[2, :, 3, 3].tolist() == [255, 255, 255]  # 16-bit scaled, not clipped
    assert abs(int(ds.images[0, 0, 5, 5]) - 200) <= 3  # JPEG is lossy


def test_integer_labels_sort_numerically(tmp_path):
    table = _rows(with_split=False)
    table["label"] = [10, 2, 1, 10, 2, 1, 1, 2]
    ds = _load_table(tmp_path, table, image_size=8)
    assert ds.classes == ["1", "2", "10"]
    assert ds.metadata["label"].tolist() == [2, 1, 0, 2, 1, 0, 0, 1]


def test_custom_columns_semicolon_csv_and_trailing_commas(tmp_path):
    table = _rows().rename(columns={"file": "path", "label": "diagnosis"})
    root = tmp_path / "data"
    _write_folder(root, table.rename(columns={"path": "file", "diagnosis": "label"}), csv_name=None)
    text = table.to_csv(index=False, sep=";").replace("\n", ";\n")
    (root / "labels.csv").write_text(text)
    ds = load_image_folder(root, file_column="path", label_column="diagnosis", image_size=8)
    assert ds.classes == ["benign", "malignant"]
    assert list(ds.metadata.columns) == ["sample_id", "label", "split", "age", "device"]


def test_single_image_class_goes_to_train_with_a_warning(tmp_path):
    table = _rows(with_split=False)
    table.loc[7, "label"] = "rare"
    with pytest.warns(UserWarning, match="'rare'.*no test image"):
        ds = _load_table(tmp_path, table, image_size=8, test_fraction=0.6)
    rare = ds.classes.index("rare")
    assert ds.metadata.loc[ds.metadata["label"] == rare, "split"].tolist() == ["train"]


# --- folder / ZIP + CSV: bad input -------------------------------------------------------------
def _error(tmp_path, table, files=None, **options) -> str:
    with pytest.raises(UserError) as info:
        _load_table(tmp_path, table, files=files, image_size=8, **options)
    return str(info.value)


def test_corrupt_and_non_image_files_are_named(tmp_path):
    table = _rows()
    files = _files(table)
    files["img/benign_1.png"] = b"this is text, not a PNG"
    files["img/malignant_2.png"] = _image_bytes((1, 2, 3))[:40]  # truncated
    message = _error(tmp_path, table, files=files)
    assert "2 file(s) could not be read" in message
    assert "img/benign_1.png" in message and "img/malignant_2.png" in message


def test_missing_file_column_lists_columns_and_the_way_out(tmp_path):
    message = _error(tmp_path, _rows().rename(columns={"file": "filename"}), files=_files(_rows()))
    assert "'file'" in message and "'filename'" in message and "pick the column" in message
    assert "file_column=" not in message  # a Python argument is no advice on the dashboard


def test_missing_label_column_lists_columns_and_the_way_out(tmp_path):
    message = _error(tmp_path, _rows().rename(columns={"label": "dx"}), files=_files(_rows()))
    assert "'label'" in message and "'dx'" in message and "class labels" in message


def test_a_clinical_csv_is_mapped_to_the_standard_columns():
    from unlearn_core.data.loaders import csv_columns, guess_file_and_label_columns, with_standard_columns

    raw = b"patient,filename,diagnosis,label\n7,a.png,glaucoma,x\n8,b.png,normal,y\n"
    columns = csv_columns(raw, "eyes.csv")
    assert columns == ["patient", "filename", "diagnosis", "label"]
    assert guess_file_and_label_columns(["patient", "filename", "diagnosis"]) == ("filename", "diagnosis")
    assert guess_file_and_label_columns(columns) == ("filename", "label")
    mapped = pd.read_csv(io.BytesIO(with_standard_columns(raw, "eyes.csv", "filename", "diagnosis")))
    assert list(mapped.columns) == ["patient", "file", "label", "original_label"]
    assert list(mapped["label"]) == ["glaucoma", "normal"] and list(mapped["file"]) == ["a.png", "b.png"]
    with pytest.raises(UserError, match="two different columns"):
        with_standard_columns(raw, "eyes.csv", "filename", "filename")


def test_rows_naming_absent_files(tmp_path):
    table = _rows()
    files = _files(table)
    del files["img/benign_2.png"]
    message = _error(tmp_path, table, files=files)
    assert "not in the folder" in message and "img/benign_2.png" in message


def test_csv_cannot_reach_outside_the_folder(tmp_path):
    table = _rows()
    files = _files(table)
    (tmp_path / "secret.png").write_bytes(_image_bytes((0, 0, 0)))
    table.loc[0, "file"] = "../secret.png"
    message = _error(tmp_path, table, files=files)
    assert "'../secret.png'" in message and "not in the folder" in message


def test_nan_in_metadata_names_column_and_row(tmp_path):
    table = _rows()
    table["age"] = table["age"].astype(float)
    table.loc[2, "age"] = np.nan
    message = _error(tmp_path, table)
    assert "'age'" in message and "row(s) 3" in message and "Fill in" in message


def test_nan_label(tmp_path):
    table = _rows()
    table.loc[5, "label"] = None
    message = _error(tmp_path, table)
    assert "Label column 'label'" in message and "row(s) 6" in message


def test_duplicate_file_names(tmp_path):
    table = _rows()
    table.loc[3, "file"] = "./img/benign_0.png"  # same file, spelled differently
    message = _error(tmp_path, table)
    assert "more than once" in message and "img/benign_0.png" in message


def test_fewer_than_two_classes(tmp_path):
    table = _rows()
    table["label"] = "benign"
    message = _error(tmp_path, table)
    assert "Only one class" in message and "'benign'" in message


def test_unparseable_csv(tmp_path):
    root = _write_folder(tmp_path / "data", _rows(), csv_name=None)
    (root / "labels.csv").write_text('file,label\na.png,x\nb.png,y,1,2,3\n')
    with pytest.raises(UserError, match="could not be parsed.*line 3"):
        load_image_folder(root)


def test_non_utf8_and_empty_csv(tmp_path):
    root = _write_folder(tmp_path / "data", _rows(), csv_name=None)
    (root / "labels.csv").write_bytes(b"file,label\n\xff\xfe.png,1\n")
    with pytest.raises(UserError, match="not UTF-8"):
        load_image_folder(root)
    (root / "labels.csv").write_text("file,label\n")
    with pytest.raises(UserError, match="has no rows"):
        load_image_folder(root)


def test_no_csv_or_several_csvs(tmp_path):
    root = _write_folder(tmp_path / "data", _rows(), csv_name=None)
    with pytest.raises(UserError, match="no CSV file"):
        load_image_folder(root)
    _rows().to_csv(root / "a.csv", index=False)
    _rows().to_csv(root / "b.csv", index=False)
    with pytest.raises(UserError, match=r"2 CSV files \('a.csv', 'b.csv'\)"):
        load_image_folder(root)


def test_bad_split_values(tmp_path):
    table = _rows()
    table.loc[1, "split"] = "holdout"
    message = _error(tmp_path, table)
    assert "'holdout'" in message and "row(s) 2" in message and "'train' or 'test'" in message


def test_class_without_training_image_in_split_column(tmp_path):
    table = _rows()
    table.loc[table["label"] == "malignant", "split"] = "test"
    message = _error(tmp_path, table)
    assert "'malignant'" in message and "no training image" in message


def test_split_column_without_test_rows(tmp_path):
    table = _rows()
    table["split"] = "train"
    assert "No image is in the 'test' split" in _error(tmp_path, table)


def test_reserved_column_clash(tmp_path):
    table = _rows()
    table["sample_id"] = range(len(table))
    assert "'sample_id'" in _error(tmp_path, table) and "Rename" in _error(tmp_path, table)


@pytest.mark.parametrize("options, fragment", [
    ({"image_size": 0}, "image_size"), ({"channels": 2}, "channels"),
    ({"test_fraction": 1.5}, "test_fraction"),
])
def test_bad_options(tmp_path, options, fragment):
    table = _rows(with_split=False)
    _write_folder(tmp_path / "data", table)
    with pytest.raises(UserError, match=fragment):
        load_image_folder(tmp_path / "data", **options)


def test_missing_path_and_non_zip_file(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_image_folder(tmp_path / "nope")
    (tmp_path / "photo.png").write_bytes(_image_bytes((1, 1, 1)))
    with pytest.raises(UserError, match="not a readable ZIP"):
        load_image_folder(tmp_path / "photo.png")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="folder '.*empty' is empty"):
        load_image_folder(tmp_path / "empty")


# --- ZIP safety --------------------------------------------------------------------------------
def test_zip_slip_parent_path_refused():
    table = _rows()
    members = {**_files(table), "labels.csv": table.to_csv(index=False).encode(),
               "../evil.png": _image_bytes((0, 0, 0))}
    with pytest.raises(UserError, match=r"zip-slip.*'../evil.png'|'../evil.png'.*zip-slip"):
        load_image_folder(_zip_bytes(members))


@pytest.mark.parametrize("name", ["/etc/evil.png", "C:/evil.png", "img\\..\\..\\evil.png"])
def test_zip_absolute_or_windows_paths_refused(name):
    with pytest.raises(UserError, match="absolute paths or '..'"):
        load_image_folder(_zip_bytes({"ok.png": b"x", name: b"y"}))


def test_empty_zip_refused():
    with pytest.raises(UserError, match="ZIP is empty"):
        load_image_folder(_zip_bytes({}))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("only_a_folder/", b"")
    with pytest.raises(UserError, match="ZIP is empty"):
        load_image_folder(buffer.getvalue())


def test_zip_bomb_cap(monkeypatch):
    monkeypatch.setattr(loaders, "MAX_UNCOMPRESSED_BYTES", 1000)
    with pytest.raises(UserError, match="limit"):
        load_image_folder(_zip_bytes({"labels.csv": b"0" * 2000}))


def test_zip_is_never_extracted(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "d.zip"
    path.write_bytes(_dataset_zip(_rows()))
    load_image_folder(path, image_size=8)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.zip"]


def test_zip_absent_file_names_the_zip():
    table = _rows()
    members = {**_files(table), "labels.csv": table.to_csv(index=False).encode()}
    del members["img/malignant_3.png"]
    with pytest.raises(UserError, match=r"not in the ZIP 'upload'.*img/malignant_3.png"):
        load_image_folder(_zip_bytes(members), image_size=8)  # its images are 12x10: not square


# --- .npz ----------------------------------------------------------------------------------------
def _npz(tmp_path: Path, name="set.npz", **arrays) -> Path:
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


def _medmnist(shape=(8, 8), n_train=6, n_test=4, rng=0, labels_2d=True, **extra):
    gen = np.random.default_rng(rng)
    out = {}
    for part, n in (("train", n_train), ("test", n_test)):
        out[f"{part}_images"] = gen.integers(0, 256, size=(n, *shape), dtype=np.uint8)
        labels = np.arange(n) % 3
        out[f"{part}_labels"] = labels[:, None] if labels_2d else labels
    out.update(extra)
    return out


def test_npz_greyscale_with_column_labels(tmp_path):
    arrays = _medmnist()
    ds = load_npz(_npz(tmp_path, **arrays))
    assert tuple(ds.images.shape) == (10, 1, 8, 8)
    assert torch.equal(ds.images[:6, 0], torch.from_numpy(arrays["train_images"]))
    assert torch.equal(ds.images[6:, 0], torch.from_numpy(arrays["test_images"]))
    assert ds.classes == ["0", "1", "2"]
    assert ds.metadata["label"].tolist() == [0, 1, 2, 0, 1, 2, 0, 1, 2, 0]
    assert ds.metadata["split"].tolist() == ["train"] * 6 + ["test"] * 4
    assert ds.metadata["sample_id"].tolist()[:2] == ["train-00000", "train-00001"]
    assert ds.metadata["sample_id"].tolist()[-1] == "test-00003"
    assert ds.name == "set"


def test_npz_colour_file_like_val_classes_and_metadata(tmp_path):
    arrays = _medmnist(shape=(6, 6, 3), labels_2d=False)
    arrays.update(val_images=np.full((2, 6, 6, 3), 9, np.uint8), val_labels=np.array([[1], [2]]),
                  classes=np.array(["cyst", "nodule", "normal"]),
                  train_age=np.arange(6), val_age=np.array([7, 8]), test_age=np.arange(4),
                  train_site=np.array(["a"] * 6), val_site=np.array(["b"] * 2),
                  test_site=np.array(["c"] * 4))
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    buffer.name = "derma.npz"
    ds = load_npz(buffer)
    assert tuple(ds.images.shape) == (12, 3, 6, 6)
    assert ds.classes == ["cyst", "nodule", "normal"]
    assert ds.metadata["sample_id"].tolist()[6:8] == ["val-00000", "val-00001"]
    assert ds.metadata["split"].tolist() == ["train"] * 8 + ["test"] * 4
    assert ds.images[6].unique().tolist() == [9]
    assert pd.api.types.is_integer_dtype(ds.metadata["age"])
    assert ds.metadata["age"].tolist() == [0, 1, 2, 3, 4, 5, 7, 8, 0, 1, 2, 3]
    assert pd.api.types.is_string_dtype(ds.metadata["site"])
    assert ds.metadata["site"].tolist() == ["a"] * 6 + ["b"] * 2 + ["c"] * 4
    assert ds.name == "derma"


def test_npz_float_images_scaled_and_resized(tmp_path):
    arrays = _medmnist(shape=(10, 6, 1))
    arrays["train_images"] = np.full((6, 10, 6, 1), 1.0, np.float32)
    arrays["test_images"] = np.full((4, 10, 6, 1), 0.5, np.float64)
    ds = load_npz(_npz(tmp_path, **arrays), image_size=12)
    assert tuple(ds.images.shape) == (10, 1, 12, 12)
    assert ds.images[:6].unique().tolist() == [255] and ds.images[6:].unique().tolist() == [128]


def test_npz_non_square_needs_image_size(tmp_path):
    with pytest.raises(UserError, match="10x6.*image_size"):
        load_npz(_npz(tmp_path, **_medmnist(shape=(10, 6))))


def test_npz_missing_keys_lists_found_and_expected(tmp_path):
    arrays = _medmnist()
    del arrays["test_labels"]
    with pytest.raises(UserError) as info:
        load_npz(_npz(tmp_path, **arrays))
    message = str(info.value)
    assert "lacks ['test_labels']" in message and "'train_images'" in message
    assert "needs ['train_images', 'train_labels', 'test_images', 'test_labels']" in message


def test_npz_val_images_without_labels(tmp_path):
    arrays = _medmnist(val_images=np.zeros((2, 8, 8), np.uint8))
    with pytest.raises(UserError, match="val_labels"):
        load_npz(_npz(tmp_path, **arrays))


def test_npz_mismatched_lengths(tmp_path):
    arrays = _medmnist()
    arrays["train_labels"] = arrays["train_labels"][:5]
    with pytest.raises(UserError, match="'train_labels' has 5 labels but 'train_images' has 6"):
        load_npz(_npz(tmp_path, **arrays))


@pytest.mark.parametrize("bad, fragment", [
    (np.full((6, 8, 8), 300, np.int32), "from 300 to 300, outside 0..255"),
    (np.full((6, 8, 8), -0.5, np.float32), "outside 0..255"),
    (np.full((6, 8, 8), np.nan, np.float32), "NaN"),
    (np.zeros((6, 8, 8, 2), np.uint8), "C = 1 or 3"),
])
def test_npz_bad_image_values_or_shapes(tmp_path, bad, fragment):
    arrays = _medmnist()
    arrays["train_images"] = bad
    with pytest.raises(UserError, match=fragment):
        load_npz(_npz(tmp_path, **arrays))


def test_npz_channel_or_size_mismatch_between_splits(tmp_path):
    arrays = _medmnist()
    arrays["test_images"] = np.zeros((4, 8, 8, 3), np.uint8)
    with pytest.raises(UserError, match="differ in shape"):
        load_npz(_npz(tmp_path, **arrays))


@pytest.mark.parametrize("labels, fragment", [
    (np.zeros((6, 3)), "Multi-label"), (np.array([0, 1, -1, 0, 1, 0]), "whole numbers"),
    (np.array([0, 1, 0.5, 0, 1, 0]), "whole numbers"),
])
def test_npz_bad_labels(tmp_path, labels, fragment):
    arrays = _medmnist()
    arrays["train_labels"] = labels
    with pytest.raises(UserError, match=fragment):
        load_npz(_npz(tmp_path, **arrays))


def test_npz_object_array_refused(tmp_path):
    arrays = _medmnist()
    arrays["train_labels"] = np.array([0, 1, "x", None, 1, 0], dtype=object)
    path = tmp_path / "pickled.npz"
    np.savez(path, allow_pickle=True, **arrays)
    with pytest.raises(UserError, match="pickled objects; refusing"):
        load_npz(path)


def test_npz_metadata_column_problems(tmp_path):
    arrays = _medmnist(train_age=np.arange(6))
    with pytest.raises(UserError, match="'age'.*test_age.*missing"):
        load_npz(_npz(tmp_path, **arrays))
    arrays["test_age"] = np.arange(3)
    with pytest.raises(UserError, match="test_age has shape \\(3,\\)"):
        load_npz(_npz(tmp_path, **arrays))
    arrays["test_age"] = np.array([1.0, np.nan, 2.0, 3.0])
    with pytest.raises(UserError, match="'age' is empty in row\\(s\\) 8"):
        load_npz(_npz(tmp_path, **arrays))


def test_npz_classes_too_few_names(tmp_path):
    with pytest.raises(UserError, match="labels go up to 2"):
        load_npz(_npz(tmp_path, **_medmnist(classes=np.array(["a", "b"]))))


def test_npz_single_class_and_not_an_npz(tmp_path):
    arrays = _medmnist()
    arrays["train_labels"] = np.zeros(6, int)
    arrays["test_labels"] = np.zeros(4, int)
    with pytest.raises(UserError, match="Only one class"):
        load_npz(_npz(tmp_path, **arrays))
    (tmp_path / "x.npz").write_bytes(b"garbage")
    with pytest.raises(UserError, match="not a readable .npz"):
        load_npz(tmp_path / "x.npz")


# --- dispatcher ----------------------------------------------------------------------------------
def test_dispatch_zip_npz_and_folder(tmp_path):
    table = _rows()
    ds = load_user_data("Clinic.ZIP", _dataset_zip(table), image_size=8, test_fraction=0.5)
    assert ds.name == "Clinic" and ds.image_size == 8 and len(ds.metadata) == 8
    buffer = io.BytesIO()
    np.savez(buffer, **_medmnist())
    ds = load_user_data("organ.npz", buffer.getvalue(), image_size=16, test_fraction=0.5)
    assert ds.name == "organ" and ds.image_size == 16
    root = _write_folder(tmp_path / "data", table)
    assert load_user_data("data", root, image_size=8).name == "data"


def test_dispatch_zip_with_separate_csv_upload():
    table = _rows()
    csv = io.BytesIO(table.to_csv(index=False).encode())
    ds = load_user_data("imgs.zip", _zip_bytes(_files(table)), csv, image_size=8)
    assert ds.metadata["sample_id"].tolist() == table["file"].tolist()


@pytest.mark.parametrize("upload, fragment", [
    ("scan.png", "'.png' is not supported"), ("labels.csv", "inside a ZIP"),
    ("noext", r"'\(none\)'"),
])
def test_dispatch_unsupported_types(upload, fragment):
    with pytest.raises(UserError, match=fragment):
        load_user_data(upload, b"data")


def test_dispatch_npz_with_csv_refused():
    with pytest.raises(UserError, match="do not add a CSV"):
        load_user_data("a.npz", b"x", csv=b"file,label\n")


def test_no_warning_for_clean_data(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _load_table(tmp_path, _rows(), image_size=8)
