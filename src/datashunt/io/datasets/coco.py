"""MS COCO captions (Chen et al. 2015) from their annotation JSON: Karpathy's split file or the official one.

Two layouts are read, recognised by their keys:

- Karpathy's ``dataset_coco.json`` (Karpathy & Fei-Fei 2015; also his Flickr8k/30k files):
  ``{"images": [{"filepath", "filename", "split", "sentences": [{"raw", "tokens"}], ...}]}``, with the
  splits ``train``, ``val``, ``test`` and ``restval`` (5,000 / 5,000 test and val images; the
  usual training set is ``train`` + ``restval``);
- the official ``captions_train2014.json`` / ``captions_val2014.json``:
  ``{"images": [{"id", "file_name"}], "annotations": [{"image_id", "caption"}]}``, without splits
  (an ``image_info_*.json`` file, images only, gives empty reference lists).

Nothing is downloaded and the images are not opened here: a missing image is flagged per row
when it is read (:mod:`datashunt.modalities.image`).
"""

import json
import os
from pathlib import Path

import pandas as pd

from ...exceptions import DataError

KARPATHY_SPLITS = ("train", "val", "test", "restval")


def load_coco_captions(annotation_json, image_root, split=None) -> pd.DataFrame:
    """Images and their reference captions as a table: ``path`` (absolute), ``references`` (list of
    caption strings, in file order) and ``split`` (Karpathy's, or None for the official layout).

    Parameters
    ----------
    annotation_json : path
        Karpathy's split file or an official COCO captions file.
    image_root : path
        Folder the image paths are relative to: Karpathy's ``filepath`` (``train2014``,
        ``val2014``) and ``filename`` are joined under it; an official ``file_name`` directly.
    split : str or list of str, optional
        Keep only these Karpathy splits (``"train"``, ``"val"``, ``"test"``, ``"restval"``).

    Examples
    --------
    >>> import json, tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "k.json").write_text(json.dumps({"images": [
    ...     {"filepath": "val2014", "filename": "a.jpg", "split": "test", "sentences": [{"raw": "A cat."}]},
    ...     {"filepath": "train2014", "filename": "b.jpg", "split": "train", "sentences": [{"raw": "A dog."}]}]}))
    >>> table = load_coco_captions(folder / "k.json", "/coco", split="test")
    >>> table["path"].tolist(), table["references"].tolist(), table["split"].tolist()
    (['/coco/val2014/a.jpg'], [['A cat.']], ['test'])
    """
    path = Path(annotation_json)
    if not path.is_file():
        raise DataError(f"{path}: no such annotation file" + (" (it is a folder)" if path.is_dir() else ""))
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: malformed JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None
    root = Path(os.path.abspath(os.path.expanduser(str(image_root))))
    images = data.get("images") if isinstance(data, dict) else None
    if not isinstance(images, list):
        keys = sorted(data)[:8] if isinstance(data, dict) else type(data).__name__
        raise DataError(
            f"{path}: unknown annotation format (top level: {keys}); expected Karpathy's split file "
            "({'images': [{'filename', 'split', 'sentences'}]}) or an official COCO captions file "
            "({'images': [{'id', 'file_name'}], 'annotations': [{'image_id', 'caption'}]})"
        )
    if "annotations" in data or any(isinstance(im, dict) and "file_name" in im for im in images[:1]):
        table = _official(path, data, images, root)
    elif not images or (isinstance(images[0], dict) and "sentences" in images[0]):
        table = _karpathy(path, images, root)
    else:
        first = sorted(images[0]) if isinstance(images[0], dict) else type(images[0]).__name__
        raise DataError(
            f"{path}: unknown annotation format: an image entry holds {first}; expected Karpathy's "
            "'filename', 'split', 'sentences' or the official 'id', 'file_name'"
        )
    return _select(path, table, split)


def _karpathy(path: Path, images: list, root: Path) -> pd.DataFrame:
    rows = []
    for i, entry in enumerate(images):
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("filename"), str)
            or not isinstance(entry.get("sentences"), list)
        ):
            raise DataError(f"{path}: image entry {i} is malformed (needs 'filename' and a list of 'sentences')")
        references = []
        for sentence in entry["sentences"]:
            raw = sentence.get("raw") if isinstance(sentence, dict) else None
            if raw is None and isinstance(sentence, dict) and isinstance(sentence.get("tokens"), list):
                raw = " ".join(map(str, sentence["tokens"]))
            if not isinstance(raw, str):
                raise DataError(f"{path}: image entry {i} ({entry['filename']}) has a sentence without 'raw' text")
            references.append(raw.strip())
        split = entry.get("split")
        if split is not None and not isinstance(split, str):
            raise DataError(f"{path}: image entry {i} ({entry['filename']}) has a split that is not a string")
        folder = entry.get("filepath") or ""
        rows.append((str(root / folder / entry["filename"]), references, split))
    return pd.DataFrame(rows, columns=["path", "references", "split"])


def _official(path: Path, data: dict, images: list, root: Path) -> pd.DataFrame:
    annotations = data.get("annotations", [])
    if not isinstance(annotations, list):
        raise DataError(f"{path}: 'annotations' must be a list")
    index, rows = {}, []
    for i, entry in enumerate(images):
        if not isinstance(entry, dict) or not isinstance(entry.get("file_name"), str) or "id" not in entry:
            raise DataError(f"{path}: image entry {i} is malformed (needs 'id' and 'file_name')")
        if entry["id"] in index:
            raise DataError(f"{path}: image id {entry['id']!r} appears twice")
        index[entry["id"]] = len(rows)
        rows.append((str(root / entry["file_name"]), [], None))
    unknown = []
    for i, note in enumerate(annotations):
        if not isinstance(note, dict) or "image_id" not in note or not isinstance(note.get("caption"), str):
            raise DataError(f"{path}: annotation {i} is malformed (needs 'image_id' and a 'caption' string)")
        row = index.get(note["image_id"])
        if row is None:
            unknown.append(note["image_id"])
            continue
        rows[row][1].append(note["caption"].strip())
    if unknown:
        raise DataError(
            f"{path}: {len(unknown)} caption(s) name images that are not listed, e.g. image_id {unknown[0]!r}"
        )
    return pd.DataFrame(rows, columns=["path", "references", "split"])


def _select(path: Path, table: pd.DataFrame, split) -> pd.DataFrame:
    if split is None:
        return table
    wanted = [split] if isinstance(split, str) else list(split)
    found = sorted({s for s in table["split"] if s is not None})
    wrong = [s for s in wanted if not isinstance(s, str) or s not in found]
    if wrong or not wanted:
        where = f"the splits found are {found}" if found else "it has no splits (the official layout); use split=None"
        raise DataError(
            f"{path}: unknown split {wrong[0] if wrong else split!r}; {where} (Karpathy's are {list(KARPATHY_SPLITS)})"
        )
    return table[table["split"].isin(wanted)].reset_index(drop=True)
