"""Build the detection ``.lst`` of a dataset and pack it into ``.rec`` / ``.idx``.

Reads PASCAL VOC (``--dataset pascal``), MS COCO (``coco``), YOLO text labels (``yolo``), a
LabelImg folder (``labelimg``: photos and their XML side by side) or a folder in one of the
export layouts of ``dataset/photo_layouts.py`` (``voc_folders``, ``tf_csv``, ``roboflow``,
``cvat_voc``, ``cvat_yolo``), checks every annotation (unknown classes, boxes outside the
image or of no size, missing or unreadable images, empty annotation files), writes
``--target`` (the ``.lst``), packs it with :mod:`tools.pack_rec` in-process, and prints a
summary with the ``--label-width`` training needs.

Layouts (``--root``):

* pascal: ``<root>/VOC<year>/{JPEGImages,Annotations,ImageSets/Main/<set>.txt}`` (root = VOCdevkit)
* coco: ``<root>/annotations/instances_<set>.json`` and images in ``<root>/images/<set>/``
* yolo: ``<root>/<set>.txt`` (image stems), ``<root>/images/``, ``<root>/labels/``,
  class names from ``--class-names`` or ``<root>/classes.txt``
* labelimg: ``<root>/<set>/`` holds ``IMG_1.JPG`` + ``IMG_1.xml`` ...; with no such subfolder,
  ``--set train`` / ``test`` are the 80/20 parts of ``<root>`` itself (every 5th photo in
  natural order of the file names is a test photo; ``dataset/photo_folder.py``);
  ``--class-names`` required
* voc_folders, tf_csv, roboflow, cvat_voc, cvat_yolo: ``<root>`` is the folder as the tool
  or the set's authors wrote it; ``--set`` names one of its sets (``train``, ``test``, ``valid``
  ...; ``train`` / ``test`` are the 80/20 parts when it has no test or valid set); class names
  default to the ones written in the data

Images without objects are left out of the list and counted, or with ``--keep-backgrounds``
kept as backgrounds (``dataset/imdb.py``) and counted.

Example::

    python tools/prepare_dataset.py --dataset pascal --year 2007,2012 --set trainval \\
        --target data/train.lst --root data/VOCdevkit
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys

if __package__ in (None, ""):  # run by path (python tools/x.py): make the repository root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.realpath(__file__))))

from dataset.concat_db import ConcatDB
from dataset.imdb import Imdb

logger = logging.getLogger("prepare_dataset")

DATASETS = ("pascal", "coco", "yolo", "labelimg", "voc_folders", "tf_csv", "roboflow",
            "cvat_voc", "cvat_yolo")


def _split(value: str | list[str], flag: str) -> list[str]:
    items = value if isinstance(value, list) else [v.strip() for v in str(value).split(",")]
    items = [v for v in items if v]
    if not items:
        raise ValueError(f"{flag} {value!r}: need a comma list of at least one value")
    return items


def load_imdb(dataset: str, image_set: str | list[str], root: str, year: str | list[str] = "2007",
              shuffle: bool = True, class_names: list[str] | str | None = None,
              ignore_unknown: bool = False, seed: int | None = None) -> Imdb:
    """Read one or several image sets of a dataset into one :class:`Imdb`.

    Parameters
    ----------
    dataset : str
        One of ``DATASETS``.
    image_set : str or list of str
        Set names (comma string or list); with VOC, every (year, set) pair is read.
    root : str
        Dataset root (see the module docstring).
    year : str or list of str
        VOC years (ignored for COCO / YOLO).
    shuffle : bool
        Shuffle the images of each set (seeded by ``seed``).
    class_names : list of str or str, optional
        Class names (list, comma string or file); defaults per dataset.
    ignore_unknown : bool
        Skip objects of classes not in ``class_names`` (VOC) instead of raising.
    """
    if dataset not in DATASETS:
        raise ValueError(f"--dataset {dataset!r}: valid: {', '.join(DATASETS)}")
    if not os.path.isdir(root):
        raise FileNotFoundError(f"--root {root}: folder does not exist")
    sets = _split(image_set, "--set")
    imdbs: list[Imdb] = []
    if dataset == "pascal":
        from dataset.pascal_voc import PascalVoc
        for y in _split(year, "--year"):
            for s in sets:
                imdbs.append(PascalVoc(s, y, root, shuffle=shuffle, class_names=class_names,
                                       ignore_unknown=ignore_unknown, seed=seed))
    elif dataset == "coco":
        from dataset.mscoco import Coco
        for s in sets:
            imdbs.append(Coco(os.path.join(root, "annotations", f"instances_{s}.json"),
                              os.path.join(root, "images", s), shuffle=shuffle,
                              class_names=class_names, seed=seed))
    elif dataset == "labelimg":
        from dataset.photo_folder import LabelImgFolder
        for s in sets:
            imdbs.append(LabelImgFolder(root, s, class_names, shuffle=shuffle,
                                        ignore_unknown=ignore_unknown, seed=seed))
    elif dataset != "yolo":
        from dataset.photo_layouts import load_layout, read_set
        layout = load_layout(dataset, root)
        for s in sets:
            imdbs.append(read_set(layout, s, class_names, shuffle=shuffle,
                                  ignore_unknown=ignore_unknown, seed=seed))
    else:
        from dataset.yolo_format import YoloFormat
        names = class_names or os.path.join(root, "classes.txt")
        for s in sets:
            imdbs.append(YoloFormat(f"yolo_{s}", names, os.path.join(root, s + ".txt"),
                                    os.path.join(root, "images"), os.path.join(root, "labels"),
                                    shuffle=shuffle, seed=seed))
    return imdbs[0] if len(imdbs) == 1 else ConcatDB(imdbs)


def format_summary(summary: dict) -> str:
    """Human-readable lines of :meth:`Imdb.summary`."""
    width = max([len(n) for n in summary["objects_per_class"]] + [5])
    lines = [f"dataset {summary['name']}: {summary['images']} images, "
             f"{summary['images_with_objects']} with objects, {summary['objects']} objects "
             f"({summary['difficult']} difficult)"]
    lines += [f"  {name:<{width}} {count}" for name, count in summary["objects_per_class"].items()]
    lines.append(f"max objects per image: {summary['max_objects_per_image']} -> "
                 f"--label-width {summary['label_width']} or more")
    empty = (f"{summary.get('backgrounds', 0)} image(s) without objects kept as backgrounds"
             if summary.get("keep_backgrounds") else
             f"{summary['empty_images']} image(s) without objects skipped")
    lines.append(f"checks: {summary['clipped_boxes']} box(es) clipped, {summary['dropped_boxes']} "
                 f"dropped (no size), {summary['ignored_unknown']} of unknown classes ignored, "
                 f"{empty}")
    left_out = summary.get("left_out", {})
    if left_out:
        lines.append("left out: " + ", ".join(
            f"{v['count']} {kind}" + (f" (e.g. {v['example']})" if v["count"] else "")
            for kind, v in left_out.items()))
    histogram = summary.get("box_size_histogram", {})
    if histogram:
        lines.append("box sizes (sqrt of the box area, fraction of the image side): "
                     + ", ".join(f"{span}: {count}" for span, count in histogram.items()))
    fixes = summary.get("fixes", {})
    if fixes:
        lines.append("read anyway: " + ", ".join(f"{count} {_FIX_NAMES.get(kind, kind)}"
                                                 for kind, count in sorted(fixes.items())))
    skipped = summary.get("skipped_images", [])
    lines.append(f"images skipped: {len(skipped)}")
    lines += [f"  {path}: {why}" for path, why in skipped]
    return "\n".join(lines)


_FIX_NAMES = {"size_from_image": "without a usable <size> (took the image's)",
              "exif_turned": "annotated on the EXIF-turned photo (boxes mapped back)",
              "resized": "resized after labelling (boxes scaled)"}


def prepare_dataset(dataset: str, image_set: str | list[str], root: str, target: str,
                    year: str | list[str] = "2007", shuffle: bool = True, num_thread: int = 1,
                    class_names: list[str] | str | None = None, resize: int = 0,
                    ignore_unknown: bool = False, seed: int | None = None,
                    progress: bool = True, keep_backgrounds: bool = False) -> dict:
    """Read, check, list and pack a dataset; return its summary.

    Writes ``target`` (the ``.lst``) and, beside it, the ``.rec`` and ``.idx`` of the same
    name. Paths in the list are relative to ``root``. ``keep_backgrounds``: images without
    objects are listed as backgrounds instead of left out (both counted).

    Returns
    -------
    dict
        :meth:`Imdb.summary` plus ``lst``, ``rec``, ``idx``, ``classes`` and ``num_listed``.
    """
    from tools.pack_rec import pack_rec

    if not target.endswith(".lst"):
        raise ValueError(f"--target {target!r}: must be a .lst path (.rec/.idx go beside it)")
    imdb = load_imdb(dataset, image_set, root, year, shuffle, class_names, ignore_unknown, seed)
    imdb.check_images()
    num_listed = imdb.save_imglist(target, root=root, backgrounds=keep_backgrounds)
    rec_path, idx_path = pack_rec(target, root, num_thread=num_thread, resize=resize,
                                  progress=progress)
    check_packed(rec_path)
    summary = imdb.summary()
    summary.update(lst=target, rec=rec_path, idx=idx_path, classes=imdb.classes,
                   num_listed=num_listed, keep_backgrounds=keep_backgrounds)
    return summary


def check_packed(rec_path: str) -> None:
    """Read back every record of ``rec_path`` (structure, label, image) as training will.

    Raises
    ------
    ValueError
        A record is bad (named by its index in the ``.idx``), or the ``.idx`` does not match.
    """
    from dataset.record_check import check_records

    report = check_records(rec_path)
    if report.bad:
        raise ValueError(f"{report.bad[0].describe(rec_path)} ({len(report.bad)} of "
                         f"{report.num_records} records are bad after packing)")
    logger.info("checked %s: %d records read back in %.2f s", rec_path, report.num_records,
                report.seconds)


def check_rec_command(rec_path: str) -> int:
    """``--check-rec``: print every bad record of an existing ``.rec``; 0 clean, 1 bad."""
    from dataset.record_check import scan_records

    report = scan_records(rec_path)
    for bad in report.bad:
        print(f"bad: {bad.describe(rec_path)}")
    print(f"{rec_path}: {report.num_records} records, {len(report.bad)} bad "
          f"(checked in {report.seconds:.2f} s)")
    return 1 if report.bad else 0


def get_parser() -> argparse.ArgumentParser:
    """Command-line parser (flags of the original ``prepare_dataset.py`` plus additions)."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    p = argparse.ArgumentParser(description="Prepare a detection dataset as .lst + .rec/.idx",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--dataset", default="pascal", choices=DATASETS, help="annotation format")
    p.add_argument("--year", default="2007,2012", help="VOC years, comma list (pascal only)")
    p.add_argument("--set", dest="image_set", default="trainval", help="image sets, comma list")
    p.add_argument("--target", default=os.path.join(here, "train.lst"),
                   help=".lst to write; the .rec/.idx go beside it")
    p.add_argument("--root", default=os.path.join(here, "data", "VOCdevkit"),
                   help="dataset root (VOCdevkit for pascal)")
    p.add_argument("--no-shuffle", dest="shuffle", action="store_false",
                   help="keep the image order of the sets (default: shuffle)")
    p.add_argument("--num-thread", type=int, default=1, help="packing processes")
    p.add_argument("--class-names", default=None,
                   help="comma list or file (one per line); default VOC 20 / COCO JSON / "
                        "<root>/classes.txt")
    p.add_argument("--ignore-unknown-classes", dest="ignore_unknown", action="store_true",
                   help="skip objects of classes not in --class-names instead of failing")
    p.add_argument("--keep-backgrounds", action="store_true",
                   help="list images without objects as backgrounds (trained as such) instead "
                        "of leaving them out; counted either way")
    p.add_argument("--resize", type=int, default=0,
                   help="store images with the longest side at most N px (0: unchanged)")
    p.add_argument("--seed", type=int, default=0, help="seed of the shuffle")
    p.add_argument("--summary-json", default=None, help="also write the summary to this JSON file")
    p.add_argument("--check-rec", default=None, metavar="REC",
                   help="only check an existing .rec against its .idx (structure, labels, "
                        "images) and list its bad records; exit 1 when there are any")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    from config.runtime import setup_threads
    setup_threads()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args = get_parser().parse_args(argv)
    logger.info("arguments: %s", vars(args))
    if args.check_rec:
        try:
            return check_rec_command(args.check_rec)
        except (ValueError, FileNotFoundError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    from training.checkpoint import FileWriteError  # imports mxnet: after setup_threads()
    try:
        summary = prepare_dataset(args.dataset, args.image_set, args.root, args.target,
                                  year=args.year, shuffle=args.shuffle, num_thread=args.num_thread,
                                  class_names=args.class_names, resize=args.resize,
                                  ignore_unknown=args.ignore_unknown, seed=args.seed,
                                  keep_backgrounds=args.keep_backgrounds)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except FileWriteError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(format_summary(summary))
    print(f"wrote {summary['lst']} ({summary['num_listed']} images), {summary['rec']}, {summary['idx']}")
    if args.summary_json:
        with open(args.summary_json, "w") as f:
            json.dump(summary, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
