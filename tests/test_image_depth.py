"""Images that are not 8-bit RGB (16-bit grey or colour, 32-bit integer, float TIFF) are scaled to uint8
by one rule, in the dataset readers and in the command line alike, or refused in one line."""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tinydeeplab.cli import main, read_image
from tinydeeplab.data import DatasetError, FolderDataset
from tinydeeplab.data.files import check_image_file, read_rgb

PRESET = Path(__file__).parent / "fixtures" / "v3_tiny" / "preset"


def _grey16(seed=0, shape=(5, 7)) -> np.ndarray:
    v = np.random.default_rng(seed).integers(0, 65536, shape).astype(np.uint16)   # (H, W)
    v[0, :3] = (0, 32768, 65535)
    return v


def _png16_rgb(path: Path, rgb: np.ndarray) -> Path:
    """A 16-bit-per-channel RGB PNG written by hand (Pillow cannot write one)."""
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    return path


def _as_rgb(grey8: np.ndarray) -> np.ndarray:
    return np.stack([grey8] * 3, axis=-1)


def test_16_bit_grey_png_keeps_the_high_byte_instead_of_clipping_to_white(tmp_path):
    v = _grey16()
    Image.fromarray(v).save(tmp_path / "g.png")                            # a 16-bit grey PNG
    with Image.open(tmp_path / "g.png") as im:
        assert im.mode == "I;16"
    got = read_rgb(tmp_path / "g.png")
    np.testing.assert_array_equal(got, _as_rgb((v // 256).astype(np.uint8)))
    assert got[0, 1].tolist() == [128, 128, 128]                           # mid grey stays mid grey


def test_the_usual_8_to_16_bit_expansion_reads_back_exactly(tmp_path):
    k = np.random.default_rng(1).integers(0, 256, (4, 6)).astype(np.uint8)
    Image.fromarray(k.astype(np.uint16) * 257).save(tmp_path / "x.png")
    np.testing.assert_array_equal(read_rgb(tmp_path / "x.png"), _as_rgb(k))


def test_16_bit_colour_agrees_with_16_bit_grey(tmp_path):
    v = _grey16(2)
    Image.fromarray(v).save(tmp_path / "grey.png")
    colour = read_rgb(_png16_rgb(tmp_path / "rgb.png", np.stack([v] * 3, axis=-1)))
    np.testing.assert_array_equal(colour, read_rgb(tmp_path / "grey.png"))


def test_32_bit_integer_image_is_read_as_16_bit_and_out_of_range_refused(tmp_path):
    v = _grey16(3).astype(np.int32)
    Image.fromarray(v, "I").save(tmp_path / "i.tif")
    np.testing.assert_array_equal(read_rgb(tmp_path / "i.tif"), _as_rgb((v // 256).astype(np.uint8)))
    v[1, 1] = 70000
    Image.fromarray(v, "I").save(tmp_path / "big.tif")
    with pytest.raises(DatasetError, match=r"big\.tif.*0\.\.65535"):
        read_rgb(tmp_path / "big.tif")


@pytest.mark.parametrize("peak", [1.0, 255.0])
def test_float_tiff_in_0_1_or_0_255_is_scaled(tmp_path, peak):
    f = np.random.default_rng(4).random((5, 6)).astype(np.float32)        # 0..1
    f[0, :3] = (0.0, 0.5, 1.0)
    Image.fromarray(f * np.float32(peak), "F").save(tmp_path / "f.tif")
    expected = np.floor(f.astype(np.float64) * 255 + 0.5).astype(np.uint8)
    got = read_rgb(tmp_path / "f.tif")
    assert np.abs(got.astype(int) - _as_rgb(expected)).max() <= (0 if peak == 1.0 else 1)
    assert got[0, 2].tolist() == [255, 255, 255] and got[0, 1, 0] in (127, 128)


@pytest.mark.parametrize("value,expected", [(-0.5, "-0.5"), (300.0, "300"), (np.nan, "NaN")])
def test_float_tiff_out_of_range_is_refused_in_one_line(tmp_path, value, expected):
    f = np.full((4, 4), 0.25, np.float32)
    f[2, 3] = value
    Image.fromarray(f, "F").save(tmp_path / "bad.tif")
    for read in (read_rgb, check_image_file, read_image):
        with pytest.raises(DatasetError) as info:
            read(tmp_path / "bad.tif")
        msg = str(info.value)
        assert "\n" not in msg and "bad.tif" in msg and expected in msg


def test_a_folder_dataset_of_16_bit_images_reads_them_scaled(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    v = _grey16(5, (6, 8))
    Image.fromarray(v).save(tmp_path / "images" / "a.png")
    Image.fromarray(np.zeros((6, 8), np.uint8)).save(tmp_path / "masks" / "a.png")
    image, _ = FolderDataset(tmp_path / "images", tmp_path / "masks", num_classes=2)[0]
    np.testing.assert_array_equal(image, _as_rgb((v // 256).astype(np.uint8)))


def test_the_cli_reads_images_with_the_same_rule(tmp_path, capsys):
    v = np.full((20, 30), 32768, np.uint16)
    Image.fromarray(v).save(tmp_path / "mid.png")
    np.testing.assert_array_equal(read_image(tmp_path / "mid.png"), read_rgb(tmp_path / "mid.png"))
    assert read_image(tmp_path / "mid.png").max() == 128
    f = np.full((20, 30), 2.0, np.float32) * np.arange(30, dtype=np.float32)[None] * 100
    Image.fromarray(f, "F").save(tmp_path / "hot.tif")
    assert main(["predict", "--preset", str(PRESET), str(tmp_path / "hot.tif"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "hot.tif" in err[0] and "[0, 1] or [0, 255]" in err[0]
