"""Export layouts of labelling tools and public sets: which files hold a set's photos and
annotations, and which sets train and test. ``dataset/photo_folder.py`` tries them after its
four own layouts; ``tools/prepare_dataset.py --dataset <layout>`` reads one set of them.

Layouts (the ``--format`` names), each read as the tool wrote it:

* ``voc_folders``: photos in ``images/`` (or ``JPEGImages/``) and VOC XML in a sibling folder
  (``annotations/``, ``annots/``, ``Annotations/``, ``xml/`` or ``labels/``), matched by file
  stem, with or without ``train/`` / ``test/`` (``val/``, ``valid/``) subfolders in each: what
  LabelImg writes when the XML go to another folder, Label Studio's VOC export, most public
  sets (the raccoon set: ``images/raccoon-N.jpg`` + ``annotations/raccoon-N.xml``);
* ``tf_csv``: TensorFlow object-detection CSVs (``filename,width,height,class,xmin,ymin,xmax,
  ymax``) in the folder or its ``data/`` or ``annotations/``: ``train_labels.csv`` +
  ``test_labels.csv``, or one CSV; the photos are found by file name under the folder;
* ``roboflow``: Roboflow's export, ``train/`` ``valid/`` ``test/`` folders each holding
  ``_annotations.coco.json`` (COCO) or ``_annotations.csv`` (TF CSV) beside the photos, or
  VOC XML beside the photos, or ``images/`` + ``labels/`` (YOLO) named by a ``data.yaml``
  (``names:``, ``train:`` ``val:`` ``test:``; Ultralytics' own layout reads the same way);
* ``cvat_voc``: CVAT's "PASCAL VOC 1.1" export: ``Annotations/``, ``JPEGImages/``,
  ``ImageSets/Main/<subset>.txt`` (``default.txt``, or ``train.txt`` ...), ``labelmap.txt``;
* ``cvat_yolo``: CVAT's "YOLO 1.1" export: ``obj.names``, ``obj.data`` (``train =
  data/train.txt``, one line a subset), ``obj_<subset>_data/`` (photos + ``.txt``) and
  ``<subset>.txt`` listing ``data/obj_<subset>_data/<photo>``.

Split rule, the same for every layout (``choose_split``): the layout's own test set when it
has one (a ``test`` folder, list or CSV); else its ``valid`` (``val``, ``validation``) set;
else the training set (``train``, ``trainval``, ``default`` or the only set) is split 80/20 in
natural order of the file names, every fifth photo a test photo
(``dataset.photo_sets.split_line`` says it in one line). A ``valid`` set beside a ``test`` set
is not used (``--train-set train,valid`` adds it to training).

Counted, never dropped silently (the ``prepare_dataset`` summary): photos without an
annotation where the layout expects one and annotations without a photo (both left out; for
an 80/20 split they are counted with the training part), and what the readers count
(``dataset.photo_sets``).
"""
from __future__ import annotations

import ast
import glob
import os
from dataclasses import dataclass, field

from dataset.image_info import find_image
from dataset.imdb import Imdb
from dataset.photo_sets import (PhotoItem, PhotoSet, PhotoSetSpec, PixelBoxes, is_photo,
                                is_tf_csv, natural_key, pair_by_stem, read_coco_boxes,
                                read_tf_csv, sort_items, spec_class_names, split_line)

LAYOUTS = ("voc_folders", "tf_csv", "roboflow", "cvat_voc", "cvat_yolo")
EXPECTED_BY_LAYOUT = {
    "voc_folders": "photos in images/ with VOC XML in annotations/ (or annots/, Annotations/, "
                   "xml/, labels/), matched by file name",
    "tf_csv": "TensorFlow CSV (train_labels.csv + test_labels.csv, or one CSV, with "
              "filename,width,height,class,xmin,ymin,xmax,ymax)",
    "roboflow": "a Roboflow export (train/ valid/ test/ holding _annotations.coco.json, "
                "_annotations.csv or XML beside the photos, or data.yaml + images/ + labels/)",
    "cvat_voc": "a CVAT PASCAL VOC 1.1 export (Annotations/, JPEGImages/, "
                "ImageSets/Main/default.txt)",
    "cvat_yolo": "a CVAT YOLO 1.1 export (obj.names, obj.data, obj_train_data/, train.txt)"}

TRAIN_SET_NAMES = ("train", "trainval", "training", "default")
TEST_SET_NAMES = ("test", "testing")
VALID_SET_NAMES = ("valid", "val", "validation")
SPLIT_NAMES = TRAIN_SET_NAMES + TEST_SET_NAMES + VALID_SET_NAMES
PHOTO_FOLDERS = ("images", "jpegimages", "imgs", "img", "photos", "pictures")
XML_FOLDERS = ("annotations", "annots", "annotation", "anns", "xml", "xmls", "labels")
CSV_FOLDERS = (".", "data", "annotations")


@dataclass
class FolderLayout:
    """The sets of a folder in one of ``LAYOUTS`` and the ones that train and test.

    ``sets`` holds the layout's own sets by name; when ``split_from`` names one of them, the
    sets ``train`` and ``test`` are its 80/20 parts.
    """

    format: str
    root: str
    sets: dict[str, PhotoSetSpec]
    train_set: str
    test_set: str
    split_from: str | None
    description: str
    names: list[str] | None = field(default=None)     # a names file's, for every set

    def spec(self, image_set: str) -> PhotoSetSpec:
        """The set ``image_set`` (a part of the 80/20 split, or one of ``sets``).

        Raises
        ------
        FileNotFoundError
            No such set: the message lists the sets.
        """
        if self.split_from and image_set in ("train", "test"):
            return self.sets[self.split_from].part(image_set)
        if image_set not in self.sets:
            valid = (["train", "test"] if self.split_from else []) + list(self.sets)
            raise FileNotFoundError(f"--set {image_set!r}: {self.root} ({self.format}) has "
                                    f"the sets {', '.join(dict.fromkeys(valid))}")
        return self.sets[image_set]

    def class_names(self, image_sets: list[str] | None = None) -> list[str]:
        """Class names written in the data: the names file, else the sorted names of the
        boxes of ``image_sets`` (default: every set of the layout)."""
        if self.names:
            return list(self.names)
        specs = ([self.spec(s) for s in image_sets] if image_sets is not None
                 else list(self.sets.values()))
        return sorted({name for spec in specs for name in spec_class_names(spec)})


def choose_split(sets: dict[str, PhotoSetSpec], where: str) -> tuple[str, str, str | None, str]:
    """(train set, test set, set split 80/20 or None, one line saying so) (module docstring).

    Raises
    ------
    ValueError
        No set can be the training set (several sets, none named ``train``).
    """
    by_lower = {name.lower(): name for name in sets}

    def first(names: tuple[str, ...]) -> str | None:
        return next((by_lower[n] for n in names if n in by_lower), None)

    test = first(TEST_SET_NAMES) or first(VALID_SET_NAMES)
    train = first(TRAIN_SET_NAMES)
    if train is None:
        others = [n for n in sets if n != test]
        if len(others) != 1:
            raise ValueError(f"{where}: sets {', '.join(sets) or 'none'}: expected a training "
                             f"set ({', '.join(TRAIN_SET_NAMES)}) or one set to split 80/20")
        train = others[0]

    def count(name: str) -> str:
        return f"{name} ({sets[name].num_matched})"

    if test is not None:
        unused = [n for n in sets if n not in (train, test)]
        line = f"sets {count(train)} and {count(test)}"
        if unused:
            line += (f"; {', '.join(count(n) for n in unused)} not used (--train-set "
                     f"{train},{unused[0]} adds it to training)")
        return train, test, None, line
    spec = sets[train]
    num_test = len(spec.part("test").items)
    return "train", "test", train, (f"{spec.num_matched} photos with annotations, no test set: "
                                    + split_line(spec.num_matched - num_test, num_test))


def _subfolders(folder: str) -> dict[str, str]:
    """Subfolder names of ``folder`` by their lower-case name."""
    if not os.path.isdir(folder):
        return {}
    return {n.lower(): n for n in sorted(os.listdir(folder))
            if os.path.isdir(os.path.join(folder, n)) and not n.startswith(".")}


def _files(folder: str, suffix: str = "") -> list[str]:
    """Files of ``folder`` ending in ``suffix`` (any case), in natural order."""
    if not os.path.isdir(folder):
        return []
    return sorted((n for n in os.listdir(folder) if n.lower().endswith(suffix)
                   and os.path.isfile(os.path.join(folder, n))), key=natural_key)


def _photos(folder: str) -> list[str]:
    return [os.path.join(folder, n) for n in _files(folder) if is_photo(n)]


def _finish(fmt: str, root: str, sets: dict[str, PhotoSetSpec], what: str,
            names: list[str] | None = None,
            extra_photos: list[str] | None = None) -> FolderLayout:
    """The layout with its split chosen; ``extra_photos`` (photos no set lists) are counted
    with the training set (or the set split 80/20)."""
    sets = {n: s for n, s in sets.items() if s.items}
    train, test, split_from, line = choose_split(sets, f"{root} ({what})")
    source = split_from or train
    if extra_photos:
        spec = sets[source]
        sets[source] = PhotoSetSpec(spec.format, sort_items(
            spec.items + [PhotoItem(p, None) for p in extra_photos]), spec.where, spec.names)
    if not any(s.num_matched for s in sets.values()):
        raise ValueError(f"{root}: {what}, but no photo has its annotation (check that the "
                         "photos are there and that the file names match)")
    return FolderLayout(fmt, root, sets, train, test, split_from, f"{what}: {line}", names)


# ------------------------------------------------------------------ voc_folders
def _voc_folders(root: str) -> FolderLayout | None:
    children = _subfolders(root)
    photo_dir = next((children[n] for n in PHOTO_FOLDERS if n in children), None)
    xml_dir = next((children[n] for n in XML_FOLDERS if n in children and _holds_xml(
        os.path.join(root, children[n]))), None)
    if photo_dir is None or xml_dir is None:
        return None
    photos, xmls = os.path.join(root, photo_dir), os.path.join(root, xml_dir)
    photo_subs, xml_subs = _subfolders(photos), _subfolders(xmls)
    sets = {photo_subs[n]: PhotoSetSpec("voc_xml", pair_by_stem(
        os.path.join(photos, photo_subs[n]), os.path.join(xmls, xml_subs[n]), ".xml"),
        os.path.join(photos, photo_subs[n]))
        for n in SPLIT_NAMES if n in photo_subs and n in xml_subs}
    where = f"{photo_dir}/ with VOC XML in {xml_dir}/"
    if sets:
        what = f"photos in {photo_dir}/<set>/ with VOC XML in {xml_dir}/<set>/"
    else:
        sets = {"all": PhotoSetSpec("voc_xml", pair_by_stem(photos, xmls, ".xml"), photos)}
        what = f"photos in {where}, matched by file name"
    return _finish("voc_folders", root, sets, what)


def _holds_xml(folder: str) -> bool:
    """True when ``folder`` or a subfolder of it holds .xml files."""
    return bool(_files(folder, ".xml")) or any(
        _files(os.path.join(folder, s), ".xml") for s in _subfolders(folder).values())


# ------------------------------------------------------------------ tf_csv
def _csv_set_name(path: str) -> str:
    """``train_labels.csv`` -> ``train``; ``_annotations.csv`` -> ``annotations``."""
    stem = os.path.splitext(os.path.basename(path))[0].lower().strip("_")
    for suffix in ("_labels", "-labels", "_annotations", "-annotations"):
        if stem.endswith(suffix) and stem != suffix.strip("_-"):
            return stem[:-len(suffix)]
    return stem


class _PhotoFinder:
    """Photos under a folder by file name, for the ``filename`` of a CSV row."""

    def __init__(self, root: str, max_depth: int = 3) -> None:
        self.by_name: dict[str, list[str]] = {}
        base_depth = root.rstrip(os.sep).count(os.sep)
        for folder, dirs, files in os.walk(root):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            if folder.count(os.sep) - base_depth >= max_depth:
                dirs[:] = []
            for name in files:
                if is_photo(name):
                    self.by_name.setdefault(name, []).append(os.path.join(folder, name))

    def find(self, filename: str, near: str) -> str | None:
        """The photo ``filename`` names: as a path from ``near``, else by its file name
        (the one in ``near``, else in an ``images`` folder, else the only one)."""
        direct = os.path.join(near, filename)
        if os.path.isfile(direct):
            return direct
        found = self.by_name.get(os.path.basename(filename.replace("\\", "/")), [])
        if len(found) > 1:
            found = ([p for p in found if os.path.dirname(p) == near]
                     or [p for p in found if "images" in p.lower().split(os.sep)] or found)
        if len(found) > 1:
            raise ValueError(f"{near}: the CSV's file name {filename!r} matches "
                             f"{len(found)} photos ({found[0]}, {found[1]} ...)")
        return found[0] if found else None


def _tf_csv(root: str) -> FolderLayout | None:
    files = [f for d in CSV_FOLDERS for f in sorted(glob.glob(os.path.join(root, d, "*.csv")))
             if is_tf_csv(f)]
    if not files:
        return None
    finder = _PhotoFinder(root)
    sets, named, folders = {}, set(), set()
    for path in files:
        items = []
        for filename, boxes in read_tf_csv(path).items():
            photo = finder.find(filename, os.path.dirname(path))
            items.append(PhotoItem(photo, boxes))
            if photo:
                named.add(os.path.realpath(photo))
                folders.add(os.path.dirname(photo))
        sets.setdefault(_csv_set_name(path), PhotoSetSpec("tf_csv", sort_items(items), path))
    extra = [p for d in sorted(folders) for p in _photos(d) if os.path.realpath(p) not in named]
    listed = ", ".join(os.path.relpath(f, root) for f in files)
    return _finish("tf_csv", root, sets, f"TensorFlow CSV {listed}", extra_photos=extra)


# ------------------------------------------------------------------ roboflow
def _split_dirs(root: str) -> dict[str, str]:
    """Split folders of ``root`` (train, valid, test ...) by their own name."""
    return {name: os.path.join(root, name) for low, name in _subfolders(root).items()
            if low in SPLIT_NAMES}


def _roboflow(root: str) -> FolderLayout | None:
    yaml_path = os.path.join(root, "data.yaml")
    if os.path.isfile(yaml_path):
        return _yolo_yaml(root, yaml_path)
    splits = _split_dirs(root)
    kinds = {name: _split_kind(folder) for name, folder in splits.items()}
    kinds = {n: k for n, k in kinds.items() if k}
    if not kinds:
        return None
    if len(set(kinds.values())) > 1:
        raise ValueError(f"{root}: split folders annotated differently: "
                         + ", ".join(f"{n}/ {k}" for n, k in kinds.items()))
    kind = next(iter(kinds.values()))
    sets, names = {}, None
    if kind == "coco_json":
        found = {n: read_coco_boxes(os.path.join(splits[n], "_annotations.coco.json"))
                 for n in kinds}
        names = _coco_names(found)
        for n, (_, images) in found.items():
            sets[n] = _listed_set("coco_json", splits[n], images)
        what = "Roboflow COCO JSON (<split>/_annotations.coco.json)"
    elif kind == "tf_csv":
        for n in kinds:
            path = os.path.join(splits[n], "_annotations.csv")
            sets[n] = _listed_set("tf_csv", splits[n], read_tf_csv(path))
        what = "Roboflow CSV (<split>/_annotations.csv)"
    elif kind == "voc_xml":
        for n in kinds:
            sets[n] = PhotoSetSpec("voc_xml", pair_by_stem(splits[n], splits[n], ".xml"),
                                   splits[n])
        what = "Roboflow VOC XML (<split>/ photos + XML)"
    elif kind == "voc_dirs":
        for n in kinds:
            photos, xmls = _photo_and_xml_dirs(splits[n])
            sets[n] = PhotoSetSpec("voc_xml", pair_by_stem(photos, xmls, ".xml"), photos)
        pairs = [f"{n}/" + "+".join(os.path.basename(d) + "/" for d in _photo_and_xml_dirs(
            splits[n])) for n in kinds]
        what = f"split folders, each with a photo and a VOC XML folder ({', '.join(pairs)})"
    else:
        names = _names_beside(root)
        for n in kinds:
            sets[n] = _yolo_set(os.path.join(splits[n], "images"),
                                os.path.join(splits[n], "labels"), names)
        what = "YOLO text (<split>/images + <split>/labels)"
    return _finish("roboflow", root, sets, what, names)


def _split_kind(folder: str) -> str | None:
    """The annotation format of one split folder of a Roboflow export, or None."""
    if os.path.isfile(os.path.join(folder, "_annotations.coco.json")):
        return "coco_json"
    if os.path.isfile(os.path.join(folder, "_annotations.csv")):
        return "tf_csv"
    if _photo_and_xml_dirs(folder) is not None:
        return "voc_dirs"
    if os.path.isdir(os.path.join(folder, "images")) and os.path.isdir(
            os.path.join(folder, "labels")):
        return "yolo_txt"
    if _files(folder, ".xml") and _photos(folder):
        return "voc_xml"
    return None


def _photo_and_xml_dirs(folder: str) -> tuple[str, str] | None:
    """(photo folder, XML folder) of ``folder``: ``images/`` beside ``annotations/`` (or the
    other names of ``PHOTO_FOLDERS`` / ``XML_FOLDERS``) holding .xml, or None."""
    children = _subfolders(folder)
    photo_dir = next((children[n] for n in PHOTO_FOLDERS if n in children), None)
    xml_dir = next((children[n] for n in XML_FOLDERS if n in children
                    and _files(os.path.join(folder, children[n]), ".xml")), None)
    if photo_dir is None or xml_dir is None:
        return None
    return os.path.join(folder, photo_dir), os.path.join(folder, xml_dir)


def _listed_set(fmt: str, folder: str, listed: dict[str, PixelBoxes]) -> PhotoSetSpec:
    """A set whose annotation file lists photos of ``folder`` by name; photos it does not
    list are items without an annotation."""
    items, named = [], set()
    for filename, boxes in listed.items():
        path = os.path.join(folder, filename)
        items.append(PhotoItem(path if os.path.isfile(path) else None, boxes))
        named.add(os.path.normpath(path))
    items += [PhotoItem(p, None) for p in _photos(folder) if os.path.normpath(p) not in named]
    return PhotoSetSpec(fmt, sort_items(items), folder)


def _coco_names(found: dict[str, tuple[list[dict], dict[str, PixelBoxes]]]) -> list[str]:
    """Category names in id order, less Roboflow's project category: a category that no box
    uses and that is the ``supercategory`` of the others."""
    categories = next(iter(found.values()))[0]
    used = {b[0] for _, images in found.values() for p in images.values() for b in p.boxes}
    parents = {c.get("supercategory") for c in categories}
    return [c["name"] for c in categories if c["name"] in used or c["name"] not in parents]


# ------------------------------------------------------------------ YOLO (data.yaml, CVAT)
def read_data_yaml(path: str) -> dict[str, object]:
    """The top-level keys of a YOLO ``data.yaml`` (``names``, ``train``, ``val``, ``test``,
    ``path``, ``nc`` ...); ``names`` as a list whether written as a list or an id mapping.

    A reader of the YAML these files use (scalars, ``[a, b]`` lists, ``- a`` blocks,
    ``0: a`` mappings), not of YAML in general.

    Raises
    ------
    ValueError
        No class names in the file.
    """
    result: dict[str, object] = {}
    key = None
    with open(path, encoding="utf-8") as f:
        for raw in f:
            line = raw.rstrip()
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            if not line[0].isspace():
                key, _, value = line.partition(":")
                key, value = key.strip(), _strip_comment(value.strip())
                result[key] = _yaml_value(value) if value else None
            elif key is not None:
                entry = _strip_comment(line.strip())
                if entry.startswith("-"):
                    if not isinstance(result[key], list):
                        result[key] = []
                    result[key].append(_yaml_scalar(entry[1:].strip()))
                elif ":" in entry:
                    k, _, v = entry.partition(":")
                    if not isinstance(result[key], dict):
                        result[key] = {}
                    result[key][_yaml_scalar(k.strip())] = _yaml_scalar(v.strip())
    names = result.get("names")
    if isinstance(names, dict):
        names = [names[k] for k in sorted(names, key=lambda k: int(k))]
    if not isinstance(names, list) or not names:
        raise ValueError(f"{path}: no class names (expected names: [a, b] or a list of them)")
    result["names"] = [str(n) for n in names]
    return result


def _strip_comment(value: str) -> str:
    return value.split(" #")[0].strip() if not value.startswith(("'", '"')) else value


def _yaml_scalar(value: str) -> object:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    try:
        return int(value)
    except ValueError:
        return value


def _yaml_value(value: str) -> object:
    if value.startswith(("[", "{")):
        try:
            return ast.literal_eval(value)
        except (ValueError, SyntaxError):
            inner = value[1:-1]
            if value.startswith("{"):
                pairs = (p.partition(":") for p in inner.split(","))
                return {_yaml_scalar(k.strip()): _yaml_scalar(v.strip()) for k, _, v in pairs}
            return [_yaml_scalar(v.strip()) for v in inner.split(",") if v.strip()]
    return _yaml_scalar(value)


def _yolo_set(image_dir: str, label_dir: str, names: list[str] | None) -> PhotoSetSpec:
    return PhotoSetSpec("yolo_txt", pair_by_stem(image_dir, label_dir, ".txt"), image_dir, names)


def _names_beside(root: str) -> list[str] | None:
    """Class names of a names file in ``root`` (classes.txt, obj.names), or None."""
    for name in ("classes.txt", "obj.names", "classes.names"):
        path = os.path.join(root, name)
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                return [ln.strip() for ln in f if ln.strip()] or None
    return None


def _yaml_image_dir(root: str, base: str, value: object, split: str) -> str | None:
    """The image folder a ``data.yaml`` path names (Roboflow writes ``../train/images``,
    relative to a folder above the export): as written, from ``root`` without the leading
    ``../``, else ``<split>/images``."""
    if not isinstance(value, str) or not value:
        return None
    candidates = [os.path.normpath(os.path.join(base, value))]
    stripped = value
    while stripped.startswith(("../", "./")):
        stripped = stripped.split("/", 1)[1]
    candidates += [os.path.join(root, stripped), os.path.join(root, split, "images")]
    return next((c for c in candidates if os.path.isdir(c)), None)


def _label_dir(image_dir: str) -> str:
    """The label folder of a YOLO image folder (Ultralytics' rule: the last ``images``
    component of the path becomes ``labels``)."""
    parts = image_dir.split(os.sep)
    if "images" not in parts:
        return os.path.join(os.path.dirname(image_dir), "labels")
    k = len(parts) - 1 - parts[::-1].index("images")
    return os.sep.join(parts[:k] + ["labels"] + parts[k + 1:])


def _yolo_yaml(root: str, yaml_path: str) -> FolderLayout:
    data = read_data_yaml(yaml_path)
    names = data["names"]
    base = root
    if isinstance(data.get("path"), str) and os.path.isdir(os.path.join(root, data["path"])):
        base = os.path.join(root, data["path"])
    sets = {}
    for key, split in (("train", "train"), ("val", "valid"), ("test", "test")):
        image_dir = _yaml_image_dir(root, base, data.get(key), split)
        if image_dir is None:
            continue
        sets[split] = _yolo_set(image_dir, _label_dir(image_dir), names)
    if not sets:
        raise ValueError(f"{yaml_path}: none of its train:/val:/test: paths "
                         f"({data.get('train')}, {data.get('val')}, {data.get('test')}) is a "
                         f"folder under {root}")
    return _finish("roboflow", root, sets, f"YOLO data.yaml ({len(names)} names)", names)


def _cvat_yolo(root: str) -> FolderLayout | None:
    obj_data, obj_names = os.path.join(root, "obj.data"), os.path.join(root, "obj.names")
    if not (os.path.isfile(obj_data) and os.path.isfile(obj_names)):
        return None
    with open(obj_names, encoding="utf-8") as f:
        names = [ln.strip() for ln in f if ln.strip()]
    if not names:
        raise ValueError(f"{obj_names}: no class names")
    keys = {}
    with open(obj_data, encoding="utf-8") as f:
        for line in f:
            k, sep, v = line.partition("=")
            if sep:
                keys[k.strip().lower()] = v.strip()
    sets, listed = {}, set()
    for key in (k for k in keys if k not in ("classes", "names", "backup")):
        list_file = _cvat_path(root, keys[key])
        if list_file is None or not os.path.isfile(list_file):
            continue
        items = []
        with open(list_file, encoding="utf-8") as f:
            for line in (ln.strip() for ln in f if ln.strip()):
                photo = _cvat_path(root, line)
                if photo is not None and os.path.isfile(photo):
                    txt = os.path.splitext(photo)[0] + ".txt"
                    items.append(PhotoItem(photo, txt if os.path.isfile(txt) else None))
                    listed.add(os.path.normpath(photo))
                else:
                    items.append(PhotoItem(None, line))
        sets[key] = PhotoSetSpec("yolo_txt", sort_items(items), list_file, names)
    if not sets:
        written = ", ".join(f"{k} = {v}" for k, v in keys.items()) or "nothing"
        raise ValueError(f"{obj_data}: no list of photos (train = data/train.txt ...) that is a "
                         f"file under {root}; it holds: {written}")
    extra = [p for d in sorted(glob.glob(os.path.join(root, "obj_*_data"))) for p in _photos(d)
             if os.path.normpath(p) not in listed]
    return _finish("cvat_yolo", root, sets, "CVAT YOLO 1.1 (obj.data, obj.names)", names,
                   extra_photos=extra)


def _cvat_path(root: str, written: str) -> str | None:
    """A path of a CVAT YOLO file (``data/obj_train_data/x.jpg``: the export is ``data/`` of
    a darknet folder) under ``root``."""
    if not written:
        return None
    written = written.replace("\\", "/")
    candidates = [os.path.join(root, written)]
    if written.startswith("data/"):
        candidates.append(os.path.join(root, written[len("data/"):]))
    return next((c for c in candidates if os.path.exists(c)), candidates[-1])


# ------------------------------------------------------------------ cvat_voc
def _cvat_voc(root: str) -> FolderLayout | None:
    annotations, main = os.path.join(root, "Annotations"), os.path.join(root, "ImageSets", "Main")
    if not (os.path.isdir(annotations) and os.path.isdir(main)):
        return None
    photos_dir = os.path.join(root, "JPEGImages")
    sets, listed = {}, set()
    for list_file in _files(main, ".txt"):
        path = os.path.join(main, list_file)
        with open(path, encoding="utf-8") as f:
            rows = [ln.split() for ln in f if ln.strip()]
        if not rows or any(len(r) != 1 for r in rows):
            continue            # <label>_<subset>.txt: classification lists ("id 1")
        items = []
        for (image_id,) in rows:
            photo = find_image(photos_dir, image_id)
            xml = os.path.join(annotations, image_id + ".xml")
            items.append(PhotoItem(photo if os.path.isfile(photo) else None,
                                   xml if os.path.isfile(xml) else None))
            listed.add(os.path.normpath(photo))
        sets[os.path.splitext(list_file)[0]] = PhotoSetSpec("voc_xml", sort_items(items), path)
    if not sets:
        return None
    extra = [p for p in _photos(photos_dir) if os.path.normpath(p) not in listed]
    return _finish("cvat_voc", root, sets, "CVAT PASCAL VOC 1.1 (ImageSets/Main "
                   + ", ".join(f"{n}.txt" for n in sets) + ")", extra_photos=extra)


DETECTORS = {"voc_folders": _voc_folders, "tf_csv": _tf_csv, "roboflow": _roboflow,
             "cvat_voc": _cvat_voc, "cvat_yolo": _cvat_yolo}


def detect(fmt: str, root: str) -> FolderLayout | None:
    """The layout ``fmt`` (one of ``LAYOUTS``) of ``root``, or None when it is not one.

    Raises
    ------
    ValueError
        ``root`` looks like the layout but cannot be read (the message says why).
    """
    if fmt not in DETECTORS:
        raise ValueError(f"layout {fmt!r}: valid: {', '.join(LAYOUTS)}")
    return DETECTORS[fmt](root)


def load_layout(fmt: str, root: str) -> FolderLayout:
    """The layout ``fmt`` of ``root`` (``tools/prepare_dataset.py --dataset fmt``).

    Raises
    ------
    ValueError
        ``root`` is not in the layout ``fmt`` (the message says what was expected).
    """
    layout = detect(fmt, root)
    if layout is None:
        raise ValueError(f"--root {root}: not {EXPECTED_BY_LAYOUT[fmt]}")
    return layout


def read_set(layout: FolderLayout, image_set: str,
             class_names: list[str] | str | None = None, shuffle: bool = False,
             ignore_unknown: bool = False, seed: int | None = None) -> Imdb:
    """One set of a folder in one of ``LAYOUTS``, read.

    Parameters
    ----------
    layout : FolderLayout
        The folder (``load_layout``).
    image_set : str
        A set of the layout (``train``, ``test``: the parts of an 80/20 split, or the
        layout's own sets: ``valid`` ...).
    class_names : list of str or str, optional
        Default: the names written in the data, of every set of the layout (so that each
        set read alone gets the same names).
    shuffle, ignore_unknown, seed :
        As :class:`dataset.photo_sets.PhotoSet`.

    Raises
    ------
    ValueError, FileNotFoundError
        No such set, no class names, or an annotation that cannot be read.
    """
    spec = layout.spec(image_set)
    names = class_names or layout.class_names()
    if not names:
        raise ValueError(f"{layout.root}: no class names in the data: pass --class-names")
    return PhotoSet(spec, names, f"{layout.format}_{image_set}", shuffle=shuffle,
                    ignore_unknown=ignore_unknown, seed=seed)
