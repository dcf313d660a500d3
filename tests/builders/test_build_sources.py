"""Source readers on fixtures in the exact OpenImages / ScanNet formats, gotchas included."""
from __future__ import annotations

import io
import struct
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from reasonseg.builders.release.openimages import (
    OpenImagesLayout,
    decode_mask,
    fit_mask,
    mask_location,
    read_attribution,
    read_class_names,
    read_location_bytes,
    read_mask_rows,
)
from reasonseg.builders.release.scannet import (
    ScanNetLayout,
    frame_locations,
    read_color,
    read_label_png,
    read_label_tsv,
)
from reasonseg.builders.release.sens import SensReader, export_sens
from reasonseg.errors import BuildError
from reasonseg.sample.openimages import image_ids, write_openimages_source
from reasonseg.sample.scannet import write_scannet_source, write_sens


@pytest.fixture(scope="module")
def oi(tmp_path_factory) -> Path:
    return write_openimages_source(tmp_path_factory.mktemp("oi") / "oi_src")


@pytest.fixture(scope="module")
def sn(tmp_path_factory) -> Path:
    return write_scannet_source(tmp_path_factory.mktemp("sn") / "sn_src", size=(242, 324))


def test_class_csv_with_and_without_header_give_the_same_names(oi):
    headerless = read_class_names(oi / "class-descriptions-boxable.csv")
    headed = read_class_names(oi / "oidv7-class-descriptions.csv")
    assert (oi / "class-descriptions-boxable.csv").read_text().startswith("/m/")
    assert "LabelName" not in headed and "LabelName" not in headerless
    assert headed["/m/018xm"] == "Ball (Object), round"  # a quoted name with a comma
    assert {k: v for k, v in headed.items() if k in headerless} == headerless


def test_image_ids_stay_strings_with_leading_zero(oi):
    first = image_ids()[0]
    assert first.startswith("0") and len(first) == 16
    rows = read_mask_rows(oi / "validation-annotations-object-segmentation.csv", {first})
    assert list(rows) == [first]
    assert all(r.image_id == first for r in rows[first])
    attribution = read_attribution(oi / "validation-images-with-rotation.csv", {first})
    assert attribution[first]["license"].startswith("https://creativecommons.org/licenses/by/2.0")


def test_empty_predicted_iou_and_quoted_title(oi):
    rows = read_mask_rows(oi / "validation-annotations-object-segmentation.csv")
    assert any(r.predicted_iou is None for rs in rows.values() for r in rs)
    titles = {v["title"] for v in read_attribution(oi / "validation-images-with-rotation.csv").values()}
    assert "Shapes, number 1" in titles


def test_imageid_column_spelled_imageid(tmp_path):
    csv_path = tmp_path / "seg.csv"
    csv_path.write_text("MaskPath,ImageId,LabelName,BoxID,BoxXMin,BoxXMax,BoxYMin,BoxYMax,PredictedIoU,Clicks\n"
                        "00ab_m01_1a2b3c4d.png,00ab,/m/01,1a2b3c4d,0.1,0.2,0.3,0.4,,\n")
    assert read_mask_rows(csv_path)["00ab"][0].mask_path == "00ab_m01_1a2b3c4d.png"
    bad = tmp_path / "bad.csv"
    bad.write_text("Path,Image\nx,y\n")
    with pytest.raises(BuildError, match="lacks column"):
        read_mask_rows(bad)


def test_masks_resize_to_the_exact_image_size_with_nearest_neighbour(oi):
    layout = OpenImagesLayout(oi)
    off_by_one = image_ids()[1]  # 333x250 image, 1600x1201 mask, in the f shard
    rows = read_mask_rows(layout.segmentation_csv("validation"), {off_by_one})[off_by_one]
    loc = mask_location(layout.mask_folder("validation"), off_by_one, rows[0].mask_path, "validation")
    assert loc[0] == "zip"
    mask = decode_mask(read_location_bytes(loc), loc[1])
    assert mask.shape == (1201, 1600)
    fitted = fit_mask(mask, 250, 333, loc[1])
    assert fitted.shape == (250, 333) and fitted.dtype == bool
    expected = cv2.resize(mask.astype(np.uint8), (333, 250), interpolation=cv2.INTER_NEAREST).astype(bool)
    assert np.array_equal(fitted, expected)
    with pytest.raises(BuildError, match="another aspect ratio"):
        fit_mask(mask, 250, 500, loc[1])


def test_mask_png_modes_decode_alike():
    mask = np.zeros((6, 8), bool)
    mask[2:4, 3:6] = True
    grey = Image.fromarray(mask.astype(np.uint8) * 255)
    for image in (Image.fromarray(mask), grey, Image.fromarray(mask.astype(np.uint16) * 3), grey.convert("RGB")):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        assert np.array_equal(decode_mask(buffer.getvalue(), "x.png"), mask), image.mode


def test_missing_mask_and_truncated_shard(oi, tmp_path):
    folder = OpenImagesLayout(oi).mask_folder("validation")
    with pytest.raises(BuildError, match="not found"):
        mask_location(folder, "0123", "0123_m0_deadbeef.png", "validation")
    shard = (folder / "validation-masks-f.zip").read_bytes()
    broken = tmp_path / "masks"
    broken.mkdir()
    (broken / "validation-masks-f.zip").write_bytes(shard[: len(shard) // 2])
    with pytest.raises(BuildError, match="truncated"):
        mask_location(broken, "f000", "f000_m0_deadbeef.png", "validation")


def test_scannet_tsv_ids_are_not_unique(sn):
    labels = read_label_tsv(sn / "scannetv2-labels.combined.tsv")
    assert labels.name(22) == "book"  # 22 is both "books" and "book": one category
    assert labels.raw_to_id["books"] == labels.raw_to_id["book"] == 22
    assert labels.name(1163) == "object"


def test_scannet_labels_are_read_as_16_bit(sn):
    layout = ScanNetLayout(sn)
    locations = frame_locations(layout, "scene0000_00", 200)
    assert locations["label"][0] == "zip"
    label = read_label_png(locations["label"])
    assert label.dtype == np.uint16 and 1163 in label
    assert 1163 % 256 not in np.unique(label)  # a default 8-bit read would have made 1163 into a small value
    instance = read_label_png(locations["instance"])
    assert instance.dtype == np.uint8 and instance.shape == label.shape == (242, 324)


def test_scannet_frame_from_sens_when_no_color_folder(sn):
    locations = frame_locations(ScanNetLayout(sn), "scene0001_00", 2)
    assert locations["color"][0] == "sens" and locations["label"][0] == "file"
    jpeg = read_color(locations["color"])
    assert jpeg[:3] == b"\xff\xd8\xff"
    assert cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR).shape == (242, 324, 3)
    with pytest.raises(BuildError, match="no color image"):
        frame_locations(ScanNetLayout(sn), "scene0000_00", 5)


def test_sens_reader_reads_and_exports_frames(tmp_path):
    colors = [cv2.imencode(".jpg", np.full((48, 64, 3), 40 * k, np.uint8))[1].tobytes() for k in range(3)]
    depths = [np.full((480, 640), 1000 + k, np.uint16) for k in range(3)]
    poses = [np.eye(4, dtype=np.float32), np.full((4, 4), -np.inf, np.float32), 2 * np.eye(4, dtype=np.float32)]
    path = write_sens(tmp_path / "s.sens", colors, depths, poses, color_size=(48, 64))
    with SensReader(path) as reader:
        assert reader.header.num_frames == 3 and reader.header.color_size == (64, 48)
        assert reader.header.color_compression == "jpeg" and reader.header.depth_shift == 1000.0
        frame = reader.frame(2)
        assert frame.color == colors[2]
        assert np.array_equal(frame.depth_array(reader.header), depths[2])
        assert np.array_equal(frame.camera_to_world, poses[2])
    assert export_sens(path, tmp_path / "export", frames=[0, 1]) == 2
    assert (tmp_path / "export" / "color" / "1.jpg").read_bytes() == colors[1]
    depth = cv2.imread(str(tmp_path / "export" / "depth" / "0.png"), cv2.IMREAD_UNCHANGED)
    assert depth.dtype == np.uint16 and int(depth[0, 0]) == 1000
    assert np.isneginf(np.loadtxt(tmp_path / "export" / "pose" / "1.txt")).all()
    assert (tmp_path / "export" / "intrinsic" / "intrinsic_depth.txt").is_file()


@pytest.mark.parametrize("damage, field", [
    (lambda b: struct.pack("<I", 3) + b[4:], "version"),
    (lambda b: b[:4] + b"\xff" * 8 + b[12:], "sensor_name"),
    (lambda b: b[:12 + 28 + 100], "calibration"),
])
def test_corrupted_sens_header_is_a_precise_error(tmp_path, damage, field):
    colors = [cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))[1].tobytes()]
    good = write_sens(tmp_path / "g.sens", colors, [np.zeros((480, 640), np.uint16)], [np.eye(4)],
                      color_size=(8, 8)).read_bytes()
    (tmp_path / "bad.sens").write_bytes(damage(good))
    with pytest.raises(BuildError) as info:
        SensReader(tmp_path / "bad.sens")
    assert info.value.field == field and "bad.sens" in str(info.value)


def test_sens_frame_count_larger_than_the_file(tmp_path):
    colors = [cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))[1].tobytes()]
    good = write_sens(tmp_path / "g.sens", colors, [np.zeros((480, 640), np.uint16)], [np.eye(4)],
                      color_size=(8, 8)).read_bytes()
    name_len = struct.unpack("<Q", good[4:12])[0]
    at = 12 + name_len + 256 + 8 + 16 + 4
    (tmp_path / "big.sens").write_bytes(good[:at] + struct.pack("<Q", 10**9) + good[at + 8:])
    with pytest.raises(BuildError, match="cannot fit"):
        SensReader(tmp_path / "big.sens")


def test_scannet_zip_members_are_official_paths(sn):
    with zipfile.ZipFile(sn / "scans" / "scene0000_00" / "scene0000_00_2d-label-filt.zip") as zf:
        assert sorted(zf.namelist()) == ["label-filt/0.png", "label-filt/100.png", "label-filt/200.png"]
