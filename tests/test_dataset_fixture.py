"""The shared synthetic dataset fixture is complete and consistent."""
import os

from dataset.recordio_utils import count_records, scan_labels


def test_synth_data_files_and_counts(synth_data):
    for path in (synth_data.train_rec, synth_data.train_idx, synth_data.train_lst,
                 synth_data.val_rec, synth_data.val_idx, synth_data.val_lst):
        assert os.path.getsize(path) > 0, path
    assert os.path.isdir(os.path.join(synth_data.root, "VOCdevkit", "VOC2007", "JPEGImages"))
    assert synth_data.num_train == 48 and synth_data.num_val == 16
    assert count_records(synth_data.train_rec) == synth_data.num_train
    assert count_records(synth_data.val_rec) == synth_data.num_val
    stats = scan_labels(synth_data.train_rec)
    assert stats.object_width == 6
    assert 1 <= stats.max_objects <= 5
    assert set(stats.class_counts) <= set(range(synth_data.num_classes))
    assert synth_data.train_summary["difficult"] >= 1
