"""Multi-channel image files in the folder reader: .npy, TIFF page stacks, grey PNG; the bad ones refused."""
import struct

import numpy as np
import pytest
from PIL import Image

from tinydeeplab.data import BatchLoader, Compose, DatasetError, FolderDataset, RandomCrop, RandomScale
from tinydeeplab.data.stacks import read_stack, stack_info
from tinydeeplab.data.transforms import resize_bands
from tinydeeplab.data.validate import validate_dataset
from tinydeeplab.models.preprocessor import ImageConverter


def _folder(tmp_path, images: dict, size=(12, 10)):
    """images/ with the given {file name: writer(path)} and masks/ with a label PNG per stem."""
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for name, write in images.items():
        write(tmp_path / "images" / name)
        label = (np.arange(size[0] * size[1]).reshape(size) % 3).astype(np.uint8)
        Image.fromarray(label).save(tmp_path / "masks" / f"{name.split('.')[0]}.png")
    return tmp_path / "images", tmp_path / "masks"


def _npy(arr):
    return lambda path: np.save(path, arr)


def _pages(arr):
    """A multi-page TIFF: one single-band page per channel of ``arr`` (H, W, C)."""
    def write(path):
        pages = [Image.fromarray(np.ascontiguousarray(arr[:, :, c])) for c in range(arr.shape[2])]
        pages[0].save(path, save_all=True, append_images=pages[1:])
    return write


def _interleaved_tiff(path, arr):
    """A minimal uncompressed little-endian TIFF with ``C`` interleaved uint8 samples per pixel (Pillow
    cannot read it when C > 4): header, one IFD, the BitsPerSample array, the pixels."""
    h, w, c = arr.shape
    data = np.ascontiguousarray(arr, np.uint8).tobytes()
    n, ifd = 10, 8
    bits_at = ifd + 2 + 12 * n + 4
    data_at = bits_at + 2 * c
    tags = [(256, 3, 1, w), (257, 3, 1, h), (258, 3, c, bits_at), (259, 3, 1, 1), (262, 3, 1, 1),
            (273, 4, 1, data_at), (277, 3, 1, c), (278, 3, 1, h), (279, 4, 1, len(data)), (284, 3, 1, 1)]
    out = b"II*\x00" + struct.pack("<I", ifd) + struct.pack("<H", n)
    out += b"".join(struct.pack("<HHII", *t) for t in tags) + struct.pack("<I", 0)
    path.write_bytes(out + struct.pack(f"<{c}H", *([8] * c)) + data)


def test_npy_stacks_of_every_dtype_read_as_stored(tmp_path):
    rng = np.random.default_rng(0)
    for dtype, top in (("uint8", 256), ("uint16", 65536)):
        arr = rng.integers(0, top, size=(12, 10, 4)).astype(dtype)
        np.save(tmp_path / f"{dtype}.npy", arr)
        got = read_stack(tmp_path / f"{dtype}.npy")
        assert got.dtype == arr.dtype
        np.testing.assert_array_equal(got, arr)
    f = rng.normal(size=(12, 10)).astype(np.float32)
    np.save(tmp_path / "f.npy", f)
    np.testing.assert_array_equal(read_stack(tmp_path / "f.npy"), f[:, :, None])
    assert stack_info(tmp_path / "f.npy") == (1, "float32")


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32"])
def test_multi_page_tiff_pages_become_channels(tmp_path, dtype):
    arr = (np.random.default_rng(1).random((12, 10, 5)) * 250).astype(dtype)
    _pages(arr)(tmp_path / "a.tif")
    assert stack_info(tmp_path / "a.tif") == (5, dtype)
    np.testing.assert_array_equal(read_stack(tmp_path / "a.tif"), arr)


def test_a_folder_of_npy_stacks_trains_through_the_loader(tmp_path):
    rng = np.random.default_rng(2)
    stacks = {f"{k}.npy": rng.integers(0, 65536, size=(12, 10, 4)).astype(np.uint16) for k in "ab"}
    ds = FolderDataset(*_folder(tmp_path, {k: _npy(v) for k, v in stacks.items()}), num_classes=3, channels=4)
    assert (ds.channels, ds.dtype, ds.names) == (4, "uint16", ["a", "b"])
    image, label = ds[1]
    np.testing.assert_array_equal(image, stacks["b.npy"])
    assert validate_dataset(ds).checked == 2
    std = np.array([100.0, 200.0, 300.0, 400.0], np.float32)
    converter = ImageConverter(scale=1 / std, offset=-1000 / std)
    loader = BatchLoader(ds, 2, transform=Compose([RandomScale(0.8, 1.5), RandomCrop(8)]), converter=converter,
                         prefetch=0)
    x, y = next(iter(loader))
    assert x.shape == (2, 8, 8, 4) and x.dtype == np.float32 and y.shape == (2, 8, 8)


def test_grey_png_is_one_channel_and_tiff_pages_agree(tmp_path):
    grey = np.random.default_rng(3).integers(0, 256, size=(12, 10), dtype=np.uint8)
    images = {"a.png": lambda p: Image.fromarray(grey).save(p), "b.tif": _pages(grey[:, :, None])}
    ds = FolderDataset(*_folder(tmp_path, images), num_classes=3, channels="auto")
    assert ds.channels == 1
    np.testing.assert_array_equal(ds[0][0], grey[:, :, None])
    np.testing.assert_array_equal(ds[1][0], grey[:, :, None])


def test_rgb_folders_read_as_before_without_channels(tmp_path):
    grey = np.random.default_rng(4).integers(0, 256, size=(12, 10), dtype=np.uint8)
    ds = FolderDataset(*_folder(tmp_path, {"a.png": lambda p: Image.fromarray(grey).save(p)}), num_classes=3)
    assert not ds.multichannel and ds[0][0].shape == (12, 10, 3)                  # grey repeated to RGB


def test_resize_bands_keeps_uint16_constant_and_in_range():
    img = np.full((9, 7, 2), 60000, np.uint16)
    img[:, :, 1] = np.arange(7, dtype=np.uint16) * 10000
    out = resize_bands(img, (5, 12))
    assert out.dtype == np.uint16 and out.shape == (5, 12, 2)
    assert (out[:, :, 0] == 60000).all() and out[:, :, 1].min() >= 0 and out[:, :, 1].max() <= 60000
    assert (np.diff(out[:, :, 1].astype(int), axis=1) >= 0).all()                 # a ramp stays monotone


# -- refused in one line naming the file -----------------------------------------------------------------
def _one_line(exc_info, *needles):
    text = str(exc_info.value)
    assert "\n" not in text and all(n in text for n in needles), text


def test_mismatched_channel_counts_are_refused_naming_the_file(tmp_path):
    images = {"a.npy": _npy(np.zeros((12, 10, 4), np.uint8)), "b.npy": _npy(np.zeros((12, 10, 3), np.uint8))}
    folders = _folder(tmp_path, images)
    with pytest.raises(DatasetError) as info:
        FolderDataset(*folders, num_classes=3, channels="auto")
    _one_line(info, "b.npy", "3 channels", "a.npy has 4")
    with pytest.raises(DatasetError) as info:
        FolderDataset(*folders, num_classes=3, channels=3)
    _one_line(info, "a.npy", "4 channels; expected 3")


def test_mismatched_dtypes_are_refused(tmp_path):
    images = {"a.npy": _npy(np.zeros((12, 10, 2), np.uint8)), "b.npy": _npy(np.zeros((12, 10, 2), np.uint16))}
    with pytest.raises(DatasetError) as info:
        FolderDataset(*_folder(tmp_path, images), num_classes=3, channels=2)
    _one_line(info, "b.npy", "dtype uint16", "a.npy is uint8")


@pytest.mark.parametrize("write, needles", [
    (lambda p: np.save(p, np.array([{"a": 1}], dtype=object), allow_pickle=True), ["never unpickles"]),
    (lambda p: np.save(p, np.zeros((4, 4, 2))), ["dtype float64", "uint8, uint16, float32"]),
    (lambda p: np.save(p, np.zeros((2, 4, 4, 2), np.uint8)), ["shape (2, 4, 4, 2)"]),
    (lambda p: p.write_bytes(b"\x93NUMPY garbage"), ["not a readable .npy"]),
])
def test_bad_npy_files(tmp_path, write, needles):
    write(tmp_path / "x.npy")
    with pytest.raises(DatasetError) as info:
        stack_info(tmp_path / "x.npy")
    _one_line(info, "x.npy", *needles)


def test_nan_in_a_float_stack_is_refused_when_read_and_by_the_dataset_check(tmp_path):
    bad = np.zeros((12, 10, 2), np.float32)
    bad[3, 4, 1] = np.nan
    ds = FolderDataset(*_folder(tmp_path, {"a.npy": _npy(bad)}), num_classes=3, channels=2)
    with pytest.raises(DatasetError) as info:
        validate_dataset(ds)
    _one_line(info, "a.npy", "NaN")


def test_tiff_pillow_cannot_read_is_refused_with_what_to_do(tmp_path):
    _interleaved_tiff(tmp_path / "five.tif", np.zeros((4, 6, 5), np.uint8))
    with pytest.raises(DatasetError) as info:
        read_stack(tmp_path / "five.tif")
    _one_line(info, "five.tif", "more than 4 samples per pixel", ".npy")
    rgb = [Image.fromarray(np.zeros((4, 6, 3), np.uint8)) for _ in range(2)]
    rgb[0].save(tmp_path / "rgb_pages.tif", save_all=True, append_images=rgb[1:])
    with pytest.raises(DatasetError) as info:
        read_stack(tmp_path / "rgb_pages.tif")
    _one_line(info, "rgb_pages.tif", "2-page TIFF of RGB pages")


def test_tiff_pages_of_different_sizes_or_modes_are_refused(tmp_path):
    for name, second in (("size.tif", Image.fromarray(np.zeros((5, 6), np.uint8))),
                         ("mode.tif", Image.fromarray(np.zeros((4, 6), np.float32)))):
        Image.fromarray(np.zeros((4, 6), np.uint8)).save(tmp_path / name, save_all=True, append_images=[second])
        with pytest.raises(DatasetError) as info:
            read_stack(tmp_path / name)
        _one_line(info, name, "page 1 is", "one size and mode")


def test_a_bad_channels_argument(tmp_path):
    folders = _folder(tmp_path, {"a.npy": _npy(np.zeros((12, 10, 2), np.uint8))})
    with pytest.raises(DatasetError, match="channels must be a count >= 1 or 'auto', got 0"):
        FolderDataset(*folders, num_classes=3, channels=0)
