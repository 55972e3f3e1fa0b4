"""minidl.data: the synthetic data set, VOC-format folders, transforms and the resumable loader."""
import json
import os

import numpy as np
import pytest
from PIL import Image

import minidl
from minidl.data import (
    IGNORE_INDEX,
    Compose,
    DataLoader,
    FolderSegmentation,
    Normalize,
    PadToSize,
    RandomCrop,
    RandomHorizontalFlip,
    RandomScale,
    SyntheticSegmentation,
    ToArrays,
    VOCSegmentation,
    colorize,
    palette,
    train_transform,
)
from minidl.data.transforms import resize_bilinear, resize_nearest

# ----------------------------------------------------------------------------- synthetic


def test_synthetic_items_are_deterministic_and_order_free():
    a = SyntheticSegmentation(size=10, seed=3)
    b = SyntheticSegmentation(size=10, seed=3)
    forward = [a[i] for i in range(6)]
    backward = [b[i] for i in reversed(range(6))][::-1]
    for (ia, la), (ib, lb) in zip(forward, backward):
        np.testing.assert_array_equal(ia, ib)
        np.testing.assert_array_equal(la, lb)
    np.testing.assert_array_equal(a[-1][1], a[9][1])
    # a larger data set begins with the same items
    np.testing.assert_array_equal(SyntheticSegmentation(size=100, seed=3)[4][0], forward[4][0])


def test_synthetic_cache_gives_the_same_items_and_copies():
    plain = SyntheticSegmentation(size=4)
    cached = SyntheticSegmentation(size=4, cache=True)
    for i in (2, 0, 2):
        image, label = cached[i]
        np.testing.assert_array_equal(image, plain[i][0])
        np.testing.assert_array_equal(label, plain[i][1])
        assert label.dtype == np.int64
        image[:] = 0  # scribbling on a returned item must not reach the cache
        label[:] = 0


def test_synthetic_cache_filled_by_worker_processes_holds_the_same_items(monkeypatch):
    def made_here(*args):
        raise AssertionError("an item was made in this process, not in a worker")

    with monkeypatch.context() as patched:
        patched.setattr(SyntheticSegmentation, "load", made_here)
        filled = SyntheticSegmentation(size=120, image_size=33, seed=2, split="val", cache=True).fill_cache(2)
    assert sorted(filled._cache) == list(range(120))
    plain = SyntheticSegmentation(size=120, image_size=33, seed=2, split="val")
    for i in (0, 59, 60, 119):
        np.testing.assert_array_equal(filled[i][0], plain[i][0])
        np.testing.assert_array_equal(filled[i][1], plain[i][1])
    with pytest.raises(ValueError, match="cache=False"):
        plain.fill_cache()


def test_synthetic_splits_and_seeds_differ():
    train = SyntheticSegmentation(size=5, split="train")
    val = SyntheticSegmentation(size=5, split="val")
    other = SyntheticSegmentation(size=5, seed=1)
    for i in range(5):
        assert not np.array_equal(train[i][0], val[i][0])
        assert not np.array_equal(train[i][0], other[i][0])
    assert not np.array_equal(train[0][0], train[1][0])


def test_synthetic_items_types_ranges_and_classes():
    data = SyntheticSegmentation(size=36, seed=0)
    seen = np.zeros(len(data.CLASSES), int)
    for i in range(len(data)):
        image, label = data[i]
        assert image.shape == (3, 97, 97) and image.dtype == np.float32
        assert label.shape == (97, 97) and label.dtype == np.int64
        assert 0 <= image.min() and image.max() <= 1
        assert 0 <= label.min() and label.max() < data.num_classes  # no 255 unless asked for
        seen += np.bincount(label.ravel(), minlength=data.num_classes) > 0
    assert (seen > 0).all(), f"classes missing over 36 images: {seen}"
    assert seen[0] == 36


def test_synthetic_objects_span_scales_and_occlude():
    data = SyntheticSegmentation(size=40, seed=0)
    objects = [o for i in range(len(data)) for o in data.objects(i)]
    radii = np.array([o["radius"] for o in objects])
    visible = np.array([o["visible_pixels"] for o in objects])
    assert radii.min() < 5 and radii.max() > 35  # from a few pixels to most of the image
    assert visible[visible > 0].min() < 40 and visible.max() > 2500
    area = np.array([np.pi * o["radius"] ** 2 for o in objects])
    assert (visible < 0.5 * area).any()  # some objects are partly hidden (or partly outside)


def test_synthetic_options():
    data = SyntheticSegmentation(size=3, image_size=(40, 64), num_classes=3, ignore_boundary=1, seed=2)
    image, label = data[0]
    assert image.shape == (3, 40, 64) and label.shape == (40, 64)
    values = set(np.unique(label).tolist())
    assert values <= {0, 1, 2, IGNORE_INDEX} and IGNORE_INDEX in values
    # the ignore band sits on class boundaries: it is what the same item without the band changes there
    plain = SyntheticSegmentation(size=3, image_size=(40, 64), num_classes=3, seed=2)[0][1]
    kept = label != IGNORE_INDEX
    np.testing.assert_array_equal(label[kept], plain[kept])
    assert len(np.unique(plain[~kept])) >= 2
    with pytest.raises(ValueError, match="split"):
        SyntheticSegmentation(split="tests")
    with pytest.raises(ValueError, match="num_classes"):
        SyntheticSegmentation(num_classes=9)
    with pytest.raises(IndexError, match="out of range"):
        data[3]


def test_synthetic_colour_alone_is_not_enough():
    """A per-pixel colour classifier (Gaussian, one per class) fitted on training images scores a low mIoU:
    disk and square share their colours, and the background takes any hue."""
    k = 7

    def pixels(data):
        items = [data[i] for i in range(len(data))]
        return (np.concatenate([im.reshape(3, -1).T for im, _ in items]).astype(np.float64),
                np.concatenate([lab.ravel() for _, lab in items]))

    x, y = pixels(SyntheticSegmentation(size=40, split="train"))
    xv, yv = pixels(SyntheticSegmentation(size=20, split="val"))
    scores = []
    for c in range(k):
        xc = x[y == c]
        mean, cov = xc.mean(0), np.cov(xc.T) + 1e-4 * np.eye(3)
        d = xv - mean
        scores.append(-0.5 * np.einsum("ij,jk,ik->i", d, np.linalg.inv(cov), d)
                      - 0.5 * np.log(np.linalg.det(cov)) + np.log(len(xc) / len(x)))
    pred = np.argmax(scores, 0)
    cm = np.bincount(yv * k + pred, minlength=k * k).reshape(k, k)
    iou = np.diag(cm) / np.maximum(cm.sum(0) + cm.sum(1) - np.diag(cm), 1)
    assert iou.mean() < 0.45, iou
    assert iou[1:3].max() < 0.4, iou  # disk vs square: the same colours


def _scene_items(count=40, size=65):
    data = SyntheticSegmentation(size=count, image_size=size, scenes=True, seed=0)
    return data, [data.generate(i) for i in range(count)]


def test_scenes_boat_on_water_car_on_road_and_nowhere_else():
    data, items = _scene_items()
    assert data.num_classes == 9 and data.classes[7:] == ("boat", "car") and data.CLASSES == data.classes
    scenes = [objects[0]["scene"] for _, _, objects in items]
    assert set(scenes) == {"water", "road"}
    boat, car = data.classes.index("boat"), data.classes.index("car")
    for (_, label, objects), scene in zip(items, scenes):
        assert {o["scene"] for o in objects} == {scene}
        assert not (label == (car if scene == "water" else boat)).any()
    assert sum((label == boat).sum() for _, label, _ in items) > 0 and sum((label == car).sum() for _, label, _ in items) > 0


def test_scenes_only_the_scene_tells_boat_from_car():
    """A colour classifier fitted to boat and car pixels does no better than chance on new images, while the
    background's colours tell the scene of every image."""
    train, train_items = _scene_items(count=120)
    val_items = [SyntheticSegmentation(size=60, image_size=65, scenes=True, split="val").generate(i) for i in range(60)]
    boat, car = train.classes.index("boat"), train.classes.index("car")

    def pixels(items, cls):
        return np.concatenate([image[:, label == cls].T for image, label, _ in items]).astype(np.float64)

    fitted = []
    for cls in (boat, car):
        x = pixels(train_items, cls)
        fitted.append((x.mean(0), np.linalg.inv(np.cov(x.T) + 1e-4 * np.eye(3))))

    def accuracy(x, right):
        distances = [np.einsum("ij,jk,ik->i", x - mean, inverse, x - mean) for mean, inverse in fitted]
        return np.mean(np.argmin(distances, 0) == right)

    balanced = (accuracy(pixels(val_items, boat), 0) + accuracy(pixels(val_items, car), 1)) / 2
    assert balanced < 0.65, balanced
    saturation = {"water": [], "road": []}
    for image, label, objects in val_items + train_items:
        colour = image[:, label == 0].mean(1)
        saturation[objects[0]["scene"]].append(colour.max() - colour.min())
    assert min(saturation["water"]) > max(saturation["road"])  # every water image is bluer than every road


def test_scenes_statistics_and_errors():
    data = SyntheticSegmentation(size=200, image_size=161, scenes=True, split="train")
    pixels = np.concatenate([data.generate(i)[0].reshape(3, -1) for i in range(len(data))], axis=1)
    np.testing.assert_allclose(pixels.mean(1), data.MEAN, atol=0.01)
    np.testing.assert_allclose(pixels.std(1), data.STD, atol=0.01)
    assert SyntheticSegmentation(size=1).MEAN != data.MEAN  # the default set keeps its own
    with pytest.raises(ValueError, match="scenes=True num_classes is 9"):
        SyntheticSegmentation(num_classes=7, scenes=True)


def test_scenes_train_from_the_command_line_with_chosen_rates(tmp_path, capsys):
    from minidl.cli import main
    from minidl.train import TrainConfig

    out = tmp_path / "run"
    assert main(["train", "--data", "scenes", "--model", "deeplabv2", "--backbone", "resnet_small",
                 "--atrous-rates", "3", "--iters", "1", "--batch-size", "2", "--crop-size", "33",
                 "--train-size", "4", "--out", str(out)]) == 0
    assert "mIoU" in capsys.readouterr().out
    config = json.loads((out / "config.json").read_text())
    assert config["data"] == "scenes" and config["num_classes"] == 9
    assert config["model_options"] == {"atrous_rates": [3]}
    with pytest.raises(ValueError, match="'scenes'"):
        TrainConfig(data="sceens")


def test_palette_and_colorize():
    p = palette()
    assert p.shape == (256, 3) and p.dtype == np.uint8
    assert p[0].tolist() == [0, 0, 0] and p[1].tolist() == [128, 0, 0] and p[2].tolist() == [0, 128, 0]
    assert p[15].tolist() == [192, 128, 128] and p[255].tolist() == [224, 224, 192]
    label = np.array([[0, 1], [255, 2]])
    rgb = colorize(label)
    assert rgb.shape == (2, 2, 3) and rgb[1, 0].tolist() == [224, 224, 192]
    np.testing.assert_array_equal(SyntheticSegmentation.colorize(label), rgb)
    with pytest.raises(ValueError, match="0..255"):
        colorize(np.array([[256]]))


# ----------------------------------------------------------------------------- VOC folders


def _labels():
    """Three label maps (sizes differ) with values 0..3 and 255."""
    rng = np.random.default_rng(0)
    out = {}
    for name, (h, w) in {"2007_000001": (20, 28), "2007_000002": (24, 16), "2008_000003": (18, 18)}.items():
        label = rng.integers(0, 4, (h, w)).astype(np.uint8)
        label[:, :2] = 255
        out[name] = label
    return out


def _write_label(path, label, mode="P"):
    if mode == "P":  # as VOC's: the pixel values are palette indices
        im = Image.frombytes("P", label.shape[::-1], np.ascontiguousarray(label, np.uint8).tobytes())
        im.putpalette(palette().ravel().tolist())
    elif mode == "L":
        im = Image.fromarray(np.ascontiguousarray(label, np.uint8))
    else:
        im = Image.fromarray(colorize(label))
    im.save(path)


@pytest.fixture
def voc(tmp_path):
    root = tmp_path / "VOC"
    for d in ("JPEGImages", "SegmentationClass", os.path.join("ImageSets", "Segmentation")):
        (root / d).mkdir(parents=True)
    labels = _labels()
    for name, label in labels.items():
        image = np.stack([label.astype(np.int64) * 60 % 256, np.full(label.shape, 90), np.full(label.shape, 200)], -1)
        Image.fromarray(image.astype(np.uint8)).save(root / "JPEGImages" / f"{name}.jpg", quality=95)
        _write_label(root / "SegmentationClass" / f"{name}.png", label)
    lists = root / "ImageSets" / "Segmentation"
    (lists / "train.txt").write_text("2007_000001\n2007_000002\n")
    (lists / "val.txt").write_text("2008_000003\n")
    return root, labels


def test_voc_reads_ids_images_and_label_indices(voc):
    root, labels = voc
    train = VOCSegmentation(root, "train")
    assert train.ids == ["2007_000001", "2007_000002"] and len(train) == 2
    for i, name in enumerate(train.ids):
        image, label = train[i]
        h, w = labels[name].shape
        assert image.shape == (3, h, w) and image.dtype == np.float32
        assert 0 <= image.min() and image.max() <= 1
        assert label.dtype == np.int64
        np.testing.assert_array_equal(label, labels[name])  # palette indices, not colours
        assert abs(float(image[2].mean()) - 200 / 255) < 0.03
    val = VOCSegmentation(str(root), split="val")
    assert val.ids == ["2008_000003"]
    np.testing.assert_array_equal(val[0][1], labels["2008_000003"])


def test_voc_grayscale_labels_also_read(voc):
    root, labels = voc
    _write_label(root / "SegmentationClass" / "2008_000003.png", labels["2008_000003"], mode="L")
    np.testing.assert_array_equal(VOCSegmentation(root, "val")[0][1], labels["2008_000003"])


def test_voc_missing_folder_and_list(voc, tmp_path):
    root, _ = voc
    with pytest.raises(FileNotFoundError, match="nowhere"):
        VOCSegmentation(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=r"test\.txt.*splits there: train, val"):
        VOCSegmentation(root, "test")


def test_voc_missing_files_are_listed(voc):
    root, _ = voc
    os.remove(root / "JPEGImages" / "2007_000002.jpg")
    os.remove(root / "SegmentationClass" / "2007_000001.png")
    with pytest.raises(FileNotFoundError) as err:
        VOCSegmentation(root, "train")
    message = str(err.value)
    assert "2 file(s)" in message and "train.txt" in message
    assert os.path.join("JPEGImages", "2007_000002.jpg") in message
    assert os.path.join("SegmentationClass", "2007_000001.png") in message
    VOCSegmentation(root, "val")  # the other split is complete


def test_voc_unreadable_image(voc):
    root, _ = voc
    (root / "JPEGImages" / "2007_000002.jpg").write_bytes(b"not a jpeg")
    data = VOCSegmentation(root, "train")
    data[0]
    with pytest.raises(ValueError, match=r"cannot read image .*2007_000002\.jpg"):
        data[1]


def test_voc_size_mismatch(voc):
    root, labels = voc
    _write_label(root / "SegmentationClass" / "2007_000001.png", labels["2007_000001"][:10])
    with pytest.raises(ValueError, match=r"label .*2007_000001\.png.* is 28x10 .*image .*2007_000001\.jpg.* is 28x20"):
        VOCSegmentation(root, "train")[0]


def test_voc_bad_class_ids(voc):
    root, labels = voc
    bad = labels["2007_000002"].copy()
    bad[5, 5] = 30
    _write_label(root / "SegmentationClass" / "2007_000002.png", bad)
    data = VOCSegmentation(root, "train")
    with pytest.raises(ValueError, match=r"2007_000002\.png.* class ids \[30\] outside 0..20"):
        data[1]
    with pytest.raises(ValueError, match=r"2007_000001\.png.* class ids \[3\] outside 0..2"):
        VOCSegmentation(root, "train", num_classes=3)[0]


def test_voc_rgb_label_is_refused(voc):
    root, labels = voc
    _write_label(root / "SegmentationClass" / "2008_000003.png", labels["2008_000003"], mode="RGB")
    with pytest.raises(ValueError, match=r"2008_000003\.png.* 'RGB' image"):
        VOCSegmentation(root, "val")[0]


def test_voc_through_transforms_and_loader(voc):
    root, _ = voc
    data = VOCSegmentation(root, "train")
    loader = DataLoader(data, batch_size=2, transform=train_transform(21), seed=1)
    images, labels = next(iter(loader))
    assert images.shape == (2, 3, 21, 21) and labels.shape == (2, 21, 21)
    assert set(np.unique(labels).tolist()) <= {0, 1, 2, 3, 255}


def test_voc_train_aug_reads_the_sbd_labels_and_val_the_voc_ones(voc):
    """DeepLab's setup: train_aug.txt with SegmentationClassAug/ (grayscale), val with SegmentationClass/."""
    from minidl.train import TrainConfig, build_datasets

    root, labels = voc
    (root / "SegmentationClassAug").mkdir()
    aug = {name: (label + 1) % 4 for name, label in labels.items() if name != "2008_000003"}  # other labels
    for name, label in aug.items():
        _write_label(root / "SegmentationClassAug" / f"{name}.png", label, mode="L")
    (root / "ImageSets" / "Segmentation" / "train_aug.txt").write_text("2007_000002\n2007_000001\n")
    train, val, stats = build_datasets(TrainConfig(data=f"voc:{root}", train_split="train_aug", num_classes=21))
    assert train.ids == ["2007_000002", "2007_000001"] and stats == (None, None)
    for i, name in enumerate(train.ids):
        np.testing.assert_array_equal(train[i][1], aug[name])
    np.testing.assert_array_equal(val[0][1], labels["2008_000003"])
    os.remove(root / "SegmentationClassAug" / "2007_000001.png")
    with pytest.raises(FileNotFoundError, match=r"train_aug\.txt.*SegmentationClassAug.2007_000001\.png"):
        VOCSegmentation(root, "train_aug")


# ----------------------------------------------------------------------------- a user's own folder


def _folder(tmp_path, names, extension=".png"):
    """images/<name><extension> and masks/<name>.png of values 0..2 and 255; the masks by name."""
    root = tmp_path / "mine"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    masks = {}
    for i, name in enumerate(names):
        mask = np.random.default_rng(i).integers(0, 3, (17 + i % 3, 20)).astype(np.uint8)
        mask[0, :3] = 255
        masks[name] = mask
        image = np.stack([mask * 80, np.full(mask.shape, i * 20), np.full(mask.shape, 30)], -1).astype(np.uint8)
        Image.fromarray(image).save(root / "images" / f"{name}{extension}")
        _write_label(root / "masks" / f"{name}.png", mask, mode="L")
    return root, masks


def test_folder_reads_pairs_and_splits_every_tenth_image_to_val_without_lists(tmp_path):
    names = [f"img{k:02d}" for k in range(12)]
    root, masks = _folder(tmp_path, names)
    train, val = FolderSegmentation(root, "train", num_classes=3), FolderSegmentation(root, "val", num_classes=3)
    assert val.ids == ["img00", "img10"] and train.ids == [n for n in names if n not in ("img00", "img10")]
    image, label = train[0]
    assert image.shape == (3, *masks["img01"].shape) and image.dtype == np.float32
    np.testing.assert_array_equal(label, masks["img01"])
    np.testing.assert_allclose(image[0], masks["img01"] * 80 / 255, atol=1e-6)  # PNG images: lossless


def test_folder_lists_name_the_splits_and_a_missing_list_is_the_rest(tmp_path):
    root, _ = _folder(tmp_path, ["a", "b", "c", "d"], extension=".jpg")
    (root / "val.txt").write_text("c\na.jpg\n")
    assert FolderSegmentation(root, "val").ids == ["c", "a"]
    assert FolderSegmentation(root, "train").ids == ["b", "d"]
    (root / "train.txt").write_text("d\n")
    assert FolderSegmentation(root, "train").ids == ["d"]
    (root / "extra.txt").write_text("b\n")
    assert FolderSegmentation(root, "extra").ids == ["b"]
    with pytest.raises(FileNotFoundError, match=r"split 'test' needs the list .*test\.txt"):
        FolderSegmentation(root, "test")
    (root / "val.txt").write_text("c\nzebra\n")
    with pytest.raises(FileNotFoundError, match=r"1 name\(s\) listed by .*val\.txt.* no image and mask: zebra"):
        FolderSegmentation(root, "val")


def test_folder_names_every_image_without_a_mask_and_mask_without_an_image(tmp_path):
    root, masks = _folder(tmp_path, ["a", "b", "c"])
    os.remove(root / "masks" / "b.png")
    _write_label(root / "masks" / "ghost.png", masks["a"])
    with pytest.raises(FileNotFoundError) as error:
        FolderSegmentation(root, "train", num_classes=3)
    message = str(error.value)
    assert "2 file(s) have no partner" in message
    assert os.path.join("images", "b.png") in message and os.path.join("masks", "ghost.png") in message
    with pytest.raises(FileNotFoundError, match=r"nowhere.*images/ and root/masks/"):
        FolderSegmentation(tmp_path / "nowhere")


def test_folder_names_a_mask_of_another_size_and_a_class_index_out_of_range(tmp_path):
    root, masks = _folder(tmp_path, ["a", "b"])
    _write_label(root / "masks" / "a.png", masks["a"][:5])
    bad = masks["b"].copy()
    bad[3, 3] = 7
    _write_label(root / "masks" / "b.png", bad)
    data = FolderSegmentation(root, "train", num_classes=3)
    assert data.ids == ["b"]  # "a" is the tenth-image validation item
    with pytest.raises(ValueError, match=r"masks.b\.png.* class ids \[7\] outside 0..2"):
        data[0]
    with pytest.raises(ValueError, match=r"label .*masks.a\.png.* is 20x5 .*image .*images.a\.png.* is 20x17"):
        FolderSegmentation(root, "val", num_classes=3)[0]
    with pytest.raises(ValueError, match=r"num_classes must be in 1..255"):
        FolderSegmentation(root, num_classes=0)


def test_folder_data_trains_from_the_command_line_and_needs_num_classes(tmp_path, capsys):
    from minidl.cli import main

    root, _ = _folder(tmp_path, [f"img{k}" for k in range(5)])
    common = ["train", "--data", f"folder:{root}", "--backbone", "resnet_small", "--head-channels", "8",
              "--iters", "1", "--batch-size", "2", "--crop-size", "17", "--out", str(tmp_path / "run")]
    assert main(common) == 1
    assert "folder:PATH needs --num-classes" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    assert main(common + ["--num-classes", "3"]) == 0
    assert "mIoU" in capsys.readouterr().out


# ----------------------------------------------------------------------------- transforms


def _coded_pair(seed=0, shape=(40, 56)):
    """A blocky label map with an ignore region, and an image whose channel 0 encodes it (k -> k / 255);
    channels 1 and 2 hold each pixel's source row and column."""
    rng = np.random.default_rng(seed)
    h, w = shape
    label = np.kron(rng.integers(0, 5, (h // 8, w // 8)), np.ones((8, 8), np.int64))
    label[5:13, 30:38] = IGNORE_INDEX
    rows, cols = np.mgrid[0:h, 0:w].astype(np.float32)
    image = np.stack([label / 255.0, rows, cols]).astype(np.float32)
    return image, label


def _interior(label, r=2):
    """Pixels whose (2r+1)^2 neighbourhood has one value."""
    h, w = label.shape
    padded = np.pad(label, r, mode="edge")
    same = np.ones(label.shape, bool)
    for dy in range(2 * r + 1):
        for dx in range(2 * r + 1):
            same &= padded[dy : dy + h, dx : dx + w] == label
    return same


@pytest.mark.parametrize("seed", range(6))
def test_transforms_keep_image_and_label_aligned(seed):
    image, label = _coded_pair(seed)
    pipeline = Compose([RandomScale(0.5, 2.0), PadToSize(64, image_fill=-1.0), RandomCrop(64),
                        RandomHorizontalFlip(0.5), ToArrays()])
    out_image, out_label = pipeline(image, label, np.random.default_rng(seed))
    assert out_image.shape == (3, 64, 64) and out_label.shape == (64, 64)
    assert out_image.dtype == np.float32 and out_label.dtype == np.int64
    pad = out_image[0] == -1.0
    assert (out_label[pad] == IGNORE_INDEX).all()  # the pad is ignored
    assert set(np.unique(out_label).tolist()) <= set(np.unique(label).tolist()) | {IGNORE_INDEX}
    inside = ~pad & _interior(pad) & _interior(out_label)  # away from class edges and from the pad
    codes = np.round(out_image[0] * 255).astype(np.int64)
    np.testing.assert_array_equal(codes[inside], out_label[inside])  # 255 -> code 255 too: ignore kept
    assert (codes[~pad] == out_label[~pad]).mean() > 0.85
    # geometry: every label pixel is the source label nearest to the source coordinates that bilinear
    # interpolation carried through scaling, padding, cropping and flipping in channels 1 and 2
    src_r = np.floor(out_image[1] + 0.5).astype(int)
    src_c = np.floor(out_image[2] + 0.5).astype(int)
    np.testing.assert_array_equal(label[src_r[~pad], src_c[~pad]], out_label[~pad])


def test_ignore_region_survives_scaling():
    image, label = _coded_pair()
    for scale in (0.5, 1.37, 2.0):
        t = RandomScale(scale, scale)
        out_image, out_label = t(image, label, np.random.default_rng(0))
        assert out_label.shape == (round(40 * scale), round(56 * scale))
        ignored = (out_label == IGNORE_INDEX).sum()
        assert abs(ignored - 64 * scale**2) <= 16 * scale + 4  # the 8x8 block, scaled
        assert set(np.unique(out_label).tolist()) == set(np.unique(label).tolist())
    out_image, out_label = Normalize()(image, label)
    np.testing.assert_array_equal(out_label, label)


def test_random_scale_step_and_reproducibility():
    t = RandomScale(0.5, 2.0, step=0.25)
    rng = np.random.default_rng(0)
    scales = {t.sample(rng) for _ in range(200)}
    assert scales == {0.5 + 0.25 * k for k in range(7)}
    image, label = _coded_pair()
    pipeline = train_transform(32, mean=(0.5, 0.5, 0.5), std=(0.2, 0.2, 0.2))
    a = pipeline(image, label, np.random.default_rng(7))
    b = pipeline(image, label, np.random.default_rng(7))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_flip_crop_pad_exact():
    image, label = _coded_pair()
    flipped_image, flipped_label = RandomHorizontalFlip(1.0)(image, label)
    np.testing.assert_array_equal(flipped_label, label[:, ::-1])
    np.testing.assert_array_equal(flipped_image, image[:, :, ::-1])
    same = RandomHorizontalFlip(0.0)(image, label)
    np.testing.assert_array_equal(same[1], label)
    cropped_image, cropped_label = RandomCrop((16, 24))(image, label, np.random.default_rng(3))
    top, left = int(cropped_image[1, 0, 0]), int(cropped_image[2, 0, 0])
    np.testing.assert_array_equal(cropped_label, label[top : top + 16, left : left + 24])
    padded_image, padded_label = PadToSize((48, 50), image_fill=(0.1, 0.2, 0.3))(image, label)
    assert padded_label.shape == (48, 56)  # the wider side is kept
    assert (padded_label[40:] == 255).all() and (padded_label[:40] == label).all()
    np.testing.assert_allclose(padded_image[:, 40:, 0], np.array([[0.1], [0.2], [0.3]]) * np.ones((1, 8)))
    # padding with the mean then normalising leaves zeros in the pad
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.2, 0.2)
    img, _ = Compose([PadToSize(48, image_fill=mean), Normalize(mean, std)])(image, label)
    assert np.abs(img[:, 40:]).max() < 1e-6
    with pytest.raises(ValueError, match="PadToSize"):
        RandomCrop(64)(image, label, np.random.default_rng(0))
    with pytest.raises(ValueError, match="differ in size"):
        RandomHorizontalFlip()(image, label[:-1])
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        RandomHorizontalFlip()(image.transpose(1, 2, 0), label)


def test_resampling_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    image = rng.random((3, 13, 17), dtype=np.float32)
    label = rng.integers(0, 6, (13, 17))
    for size in ((26, 34), (7, 9), (20, 11), (13, 17)):
        expected = torch.nn.functional.interpolate(torch.from_numpy(image)[None], size=size, mode="bilinear",
                                                   align_corners=False)[0].numpy()
        np.testing.assert_allclose(resize_bilinear(image, size), expected, atol=1e-5)
        expected = torch.nn.functional.interpolate(torch.from_numpy(label)[None, None].double(), size=size,
                                                   mode="nearest-exact")[0, 0].long().numpy()
        np.testing.assert_array_equal(resize_nearest(label, size), expected)


# ----------------------------------------------------------------------------- loader


class Indexed:
    """A tiny data set whose items name themselves and show their augmentation: image = index + noise
    drawn from the generator the loader passes."""

    def __init__(self, n=10, size=4):
        self.n, self.size = n, size

    def __len__(self):
        return self.n

    def get(self, index, rng=None):
        image = np.full((3, self.size, self.size), float(index), np.float32)
        image[0, 0, 0] += rng.random()
        return image, np.full((self.size, self.size), index, np.int64)

    def __getitem__(self, index):
        return self.get(index, np.random.default_rng())


def _collect(stream, count):
    return [(np.array(a), np.array(b)) for a, b in (next(stream) for _ in range(count))]


def _assert_same(batches_a, batches_b):
    assert len(batches_a) == len(batches_b)
    for (ia, la), (ib, lb) in zip(batches_a, batches_b):
        np.testing.assert_array_equal(ia, ib)
        np.testing.assert_array_equal(la, lb)


def test_loader_batches_shapes_and_epochs():
    loader = DataLoader(Indexed(10), batch_size=3, seed=5)
    assert len(loader) == 3
    epoch0 = list(loader)
    epoch1 = list(loader)
    assert loader.epoch == 2 and loader.batch == 0
    for images, labels in epoch0:
        assert images.shape == (3, 3, 4, 4) and images.dtype == np.float32
        assert labels.shape == (3, 4, 4) and labels.dtype == np.int64
    seen0 = np.concatenate([labels[:, 0, 0] for _, labels in epoch0])
    seen1 = np.concatenate([labels[:, 0, 0] for _, labels in epoch1])
    assert len(set(seen0.tolist())) == 9 and not np.array_equal(seen0, seen1)
    keep = DataLoader(Indexed(10), batch_size=3, shuffle=False, drop_last=False)
    sizes = [labels.shape[0] for _, labels in keep]
    assert sizes == [3, 3, 3, 1] and len(keep) == 4
    firsts = np.concatenate([labels[:, 0, 0] for _, labels in keep.epoch_batches(0)])
    np.testing.assert_array_equal(firsts, np.arange(10))
    with pytest.raises(ValueError, match="no batch"):
        DataLoader(Indexed(2), batch_size=3)


def test_loader_is_reproducible_and_seeded():
    run = lambda seed: _collect(DataLoader(Indexed(10), batch_size=2, seed=seed).batches(), 12)  # noqa: E731
    _assert_same(run(3), run(3))
    a, b = run(3), run(4)
    assert any(not np.array_equal(x[1], y[1]) for x, y in zip(a, b))
    # augmentation differs between epochs for the same item
    loader = DataLoader(Indexed(10), batch_size=10, seed=0)
    (img0, lab0), (img1, lab1) = _collect(loader.batches(), 2)
    by_index0 = img0[np.argsort(lab0[:, 0, 0]), 0, 0, 0]
    by_index1 = img1[np.argsort(lab1[:, 0, 0]), 0, 0, 0]
    assert not np.array_equal(by_index0, by_index1)


def test_loader_resumes_exactly_at_any_iteration():
    data = SyntheticSegmentation(size=8, image_size=33, seed=1)
    make = lambda: DataLoader(data, batch_size=3, seed=2, transform=train_transform(  # noqa: E731
        25, data.MEAN, data.STD))
    full = list(make().batches(0, 7))  # 3 epochs of 2 batches, and one more
    for k in (1, 2, 5):
        _assert_same(list(make().batches(start_iteration=k, num_iterations=7 - k)), full[k:])
    # epoch-style iteration with state_dict / load_state_dict
    loader = make()
    seen = []
    for i, batch in enumerate(loader):
        seen.append(batch)
        if i == 0:
            state = loader.state_dict()
    assert state["iteration"] == 1
    resumed = make()
    resumed.load_state_dict(state)
    rest = list(resumed) + list(resumed)
    _assert_same(seen[:1] + rest, full[:4])
    seek = make()
    seek.seek(5)
    _assert_same(list(seek), full[5:6])
    with pytest.raises(ValueError, match="batch_size 3"):
        DataLoader(data, batch_size=2, seed=2).load_state_dict(state)


def test_loader_workers_give_identical_results():
    data = SyntheticSegmentation(size=9, image_size=29, seed=4)
    transform = train_transform(21, data.MEAN, data.STD)
    serial = list(DataLoader(data, batch_size=3, transform=transform, seed=1).batches(0, 5))
    threaded = list(DataLoader(data, batch_size=3, transform=transform, seed=1, num_workers=2).batches(0, 5))
    _assert_same(serial, threaded)
    stream = DataLoader(data, batch_size=3, transform=transform, seed=1, num_workers=2).batches(2)
    _assert_same(_collect(stream, 3), serial[2:5])
    stream.close()


def test_loader_device_tensors_progress_and_errors(capsys):
    loader = DataLoader(Indexed(4), batch_size=2, device="cpu", progress=True)
    images, labels = next(iter(loader))
    assert isinstance(images, minidl.Tensor) and isinstance(labels, minidl.Tensor)
    assert images.shape == (2, 3, 4, 4) and labels.dtype == np.int64
    mixed = SyntheticSegmentation(size=2, image_size=33)
    mixed_loader = DataLoader(mixed, batch_size=2, transform=Compose([RandomScale(0.5, 2.0)]), seed=0)
    with pytest.raises(ValueError, match="share one size.*PadToSize"):
        next(iter(mixed_loader))
