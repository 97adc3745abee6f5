"""The footage loader on real MP4s (sidecar captions, metadata.csv/.jsonl), its errors, and bucketed batching."""

import json
import logging

import numpy as np
import pytest
import torch

from train_helpers import footage_folder, moving_square, write_mp4
from videogen.data.footage import (
    BucketBatchSampler,
    FootageDataset,
    collate,
    cover_size,
    epoch_batches,
    nearest_bucket,
)
from videogen.errors import InputError


def test_sidecar_captions_clips_and_pixels(tmp_path):
    root = footage_folder(tmp_path / "d", count=2, frames=17, size=(32, 48))
    data = FootageDataset(root, frames=[5, 9], sizes=[(32, 32)], stride=4)
    # 17 frames at the file's own 8 fps: longest bucket 9, windows start at 0, 4, 8 -> 3 clips per file
    assert len(data) == 6 and data.skipped == []
    assert {c.caption for c in data.clips} == {"a square moving right, clip 0", "a square moving right, clip 1"}
    assert [c.start for c in data.clips[:3]] == [0.0, 0.5, 1.0]
    item = data[1]
    assert item["video"].shape == (3, 9, 32, 32) and item["video"].dtype == torch.float32
    assert -1.0 <= item["video"].min() and item["video"].max() <= 1.0
    # the clip is the centre crop of frames 4..12: compare with the source (H.264 loses a little)
    source = moving_square(17, 32, 48, seed=0)[4:13, :, 8:40].astype(np.float32)
    ours = (item["video"].permute(1, 2, 3, 0).numpy() + 1) * 127.5
    assert np.abs(ours - source).mean() < 6.0
    assert len(set(data.keys)) == len(data)


def test_metadata_csv_and_jsonl(tmp_path):
    root = footage_folder(tmp_path / "csv", count=2, captions="csv")
    data = FootageDataset(root, frames=[9], sizes=[(32, 32)])
    assert [c.caption for c in data.clips] == ["a square moving right, clip 0", "a square moving right, clip 1"]
    jroot = footage_folder(tmp_path / "jsonl", count=1, captions="none")
    (jroot / "metadata.jsonl").write_text(json.dumps({"path": "clip0.mp4", "caption": "from jsonl"}) + "\n")
    assert FootageDataset(jroot, frames=[9]).clips[0].caption == "from jsonl"


def test_fps_resampling_and_images(tmp_path):
    from PIL import Image

    root = footage_folder(tmp_path / "d", count=1, frames=17)  # 17 frames at 8 fps
    Image.fromarray(moving_square(1, 40, 40)[0]).save(root / "still.png")
    (root / "still.txt").write_text("a still")
    data = FootageDataset(root, frames=[1, 5, 9], sizes=[(32, 32)], fps=4.0)
    video = next(c for c in data.clips if c.path.suffix == ".mp4")
    assert (video.num_frames, video.fps) == (5, 4.0)  # 17 frames at 8 fps = 8 frames at 4 fps -> bucket 5
    image = next(c for c in data.clips if c.path.suffix == ".png")
    assert image.num_frames == 1 and data[data.clips.index(image)]["video"].shape == (3, 1, 32, 32)


def test_unreadable_and_uncaptioned_files_are_skipped_and_counted(tmp_path, caplog):
    root = footage_folder(tmp_path / "d", count=1)
    (root / "broken.mp4").write_bytes(b"\x00garbage" * 50)
    (root / "broken.txt").write_text("broken")
    write_mp4(root / "nocaption.mp4", moving_square(9, 32, 32))
    write_mp4(root / "short.mp4", moving_square(3, 32, 32))
    (root / "short.txt").write_text("too short")
    with caplog.at_level(logging.WARNING):
        data = FootageDataset(root, frames=[9], sizes=[(32, 32)])
    assert len(data) == 1
    reasons = {p.name: r for p, r in data.skipped}
    assert set(reasons) == {"broken.mp4", "nocaption.mp4", "short.mp4"}
    assert "no caption" in reasons["nocaption.mp4"] and "too short" in reasons["short.mp4"]
    assert sum("skipped" in r.message for r in caplog.records) == 3


def test_bad_folders_are_clear_errors(tmp_path):
    with pytest.raises(InputError, match="no such folder"):
        FootageDataset(tmp_path / "missing")
    (tmp_path / "file.mp4").write_bytes(b"x")
    with pytest.raises(InputError, match="file.mp4: not a folder"):
        FootageDataset(tmp_path / "file.mp4")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no usable clip"):
        FootageDataset(tmp_path / "empty")
    bad = tmp_path / "badcsv"
    bad.mkdir()
    (bad / "metadata.csv").write_text("file,text\nx.mp4,hello\n")
    with pytest.raises(InputError, match="missing column"):
        FootageDataset(bad)
    badj = tmp_path / "badjsonl"
    badj.mkdir()
    (badj / "metadata.jsonl").write_text("{not json\n")
    with pytest.raises(InputError, match=r"metadata.jsonl:1: not valid JSON"):
        FootageDataset(badj)


def test_resolution_buckets_by_aspect_ratio():
    sizes = [(32, 32), (32, 64), (64, 32)]
    assert nearest_bucket(720, 1280, sizes) == (32, 64)
    assert nearest_bucket(1280, 720, sizes) == (64, 32)
    assert nearest_bucket(500, 510, sizes) == (32, 32)
    assert cover_size(720, 1280, (32, 64)) == (36, 64)  # covers the bucket, then a centre crop


def test_batches_come_from_one_bucket_and_depend_only_on_seed_and_epoch():
    buckets = ["a"] * 7 + ["b"] * 5 + ["c"] * 2
    batches = epoch_batches(buckets, 3, seed=1, epoch=0)
    assert sorted(i for b in batches for i in b) == list(range(14))  # every clip once per epoch
    assert all(len({buckets[i] for i in b}) == 1 for b in batches)
    assert batches == epoch_batches(buckets, 3, seed=1, epoch=0)
    assert batches != epoch_batches(buckets, 3, seed=1, epoch=1)
    sampler = BucketBatchSampler(buckets, 3, seed=1)
    sampler.set_epoch(0)
    sampler.skip(2)
    assert list(sampler) == batches[2:]


def test_processes_get_disjoint_equal_shares():
    buckets = [0] * 10 + [1] * 9
    shares = [BucketBatchSampler(buckets, 2, seed=3, num_replicas=2, rank=r).batches(0) for r in (0, 1)]
    assert len(shares[0]) == len(shares[1]) > 0
    seen = [i for share in shares for b in share for i in b]
    assert len(seen) == len(set(seen))
    with pytest.raises(InputError, match="fewer than the 4 processes"):
        BucketBatchSampler([0, 0], 2, num_replicas=4)


def test_collate_stacks_one_bucket(tmp_path):
    data = FootageDataset(footage_folder(tmp_path / "d", count=2), frames=[9], sizes=[(32, 32)])
    batch = collate([data[0], data[1]])
    assert batch["video"].shape == (2, 3, 9, 32, 32) and len(batch["caption"]) == 2


def test_shapes_world_as_training_clips():
    from videogen.data.shapes import pairs
    from videogen.train.config import TrainConfig
    from videogen.train.data import build_dataset

    cfg = TrainConfig()
    cfg.data.kind, cfg.data.shapes_samples, cfg.data.shapes_size, cfg.data.frames = "shapes", 40, 32, [9]
    data = build_dataset(cfg)
    assert len(data) == 40 and set(data.buckets) == {(9, 32, 32)} and len(set(data.keys)) == 40
    item = data[3]
    assert item["video"].shape == (3, 9, 32, 32) and item["caption"] == data.captions[3]
    assert torch.equal(build_dataset(cfg)[3]["video"], item["video"])  # deterministic per (seed, index)
    heldout = {f"a {c} {s} " for c, s in pairs("heldout")}
    assert not any(cap.startswith(h) for cap in data.captions for h in heldout)
