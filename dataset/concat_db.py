"""Concatenation of several image databases with the same classes (VOC07 + VOC12 style)."""
from __future__ import annotations

from dataset.imdb import Imdb


class ConcatDB(Imdb):
    """Several :class:`Imdb` seen as one.

    Parameters
    ----------
    imdbs : list of Imdb
        Databases to join, in order; all must have the same class names in the same order.
    shuffle : bool
        Kept for the original signature; the order is that of ``imdbs`` (each may be shuffled).

    Raises
    ------
    ValueError
        No database given, or their classes differ.
    """

    def __init__(self, imdbs: list[Imdb], shuffle: bool = False) -> None:
        if not imdbs:
            raise ValueError("ConcatDB needs at least one imdb")
        first = imdbs[0]
        for db in imdbs[1:]:
            if db.classes != first.classes:
                raise ValueError(f"cannot concatenate {db.name} (classes {db.classes}) with "
                                 f"{first.name} (classes {first.classes}): classes must be equal")
        super().__init__("+".join(db.name for db in imdbs), first.classes)
        self.imdbs = list(imdbs)
        self._where: list[tuple[Imdb, int]] = []
        for db in imdbs:
            self._where.extend((db, i) for i in range(db.num_images))
            self.image_set_index.extend(db.image_set_index)
            self.labels.extend(db.labels)
            self.report.merge(db.report)

    def image_path_from_index(self, index: int) -> str:
        """Path of image ``index`` in the concatenation."""
        db, i = self._where[index]
        return db.image_path_from_index(i)
