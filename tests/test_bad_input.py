"""Issue 2 and 7: every kind of bad input is either decoded correctly or refused with an error that
names the file and the row, all bad rows at once, before anything is written."""

import io
import re
import struct
import unicodedata
import warnings
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import run_script, tiny_args, write_dataset
from PIL import Image

from data import TIERS, DataError, load_table, read_metadata
from images import IMAGENET_MEAN, IMAGENET_STD, check_image, open_image, preprocess

SPLIT = dict(val_fraction=0.1, test_fraction=0.1, seed=42)


def png_file(width: int, height: int, *, bit_depth: int = 8, color_type: int = 0, rows: bytes = b"\0") -> bytes:
    """A PNG written by hand: its header may claim any size (the default rows are far too short for it)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def encoded(image: Image.Image, kind: str = "PNG", **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, kind, **kwargs)
    return buffer.getvalue()


def append_rows(data_dir: Path, *lines: str) -> None:
    with open(data_dir / "metadata.csv", "a", encoding="utf-8") as f:
        f.write("".join(line + "\n" for line in lines))


def exif_rotated_jpeg() -> bytes:
    stored = Image.new("RGB", (40, 20), "white")
    stored.paste((255, 0, 0), (0, 0, 10, 10))  # red in the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    return encoded(stored, "JPEG", quality=95, exif=exif)


def ramp_16_bit_png() -> bytes:
    return encoded(Image.fromarray(np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (4, 1))))


def ramp_16_bit_rgb_png() -> bytes:
    """Red rises, green falls, blue stays at half: 16 bits per channel (Pillow cannot write these)."""
    ramp = np.linspace(0, 65535, 64)
    pixels = np.stack([ramp, ramp[::-1], np.full(64, 32768)], axis=-1).astype(">u2")
    return png_file(64, 1, bit_depth=16, color_type=2, rows=b"\0" + pixels.tobytes())


def cmyk_jpeg() -> bytes:
    return encoded(Image.new("RGB", (16, 16), (200, 30, 30)).convert("CMYK"), "JPEG", quality=95)


def transparent_palette_png() -> bytes:
    image = Image.new("P", (4, 4), 0)
    image.putpalette([0, 0, 0, 200, 20, 20] + [0] * 762)
    image.paste(1, (2, 0, 4, 4))  # right half: opaque red; left half: transparent black
    return encoded(image, transparency=0)


def one_pixel_png() -> bytes:
    return encoded(Image.new("RGB", (1, 1), (10, 200, 30)))


def truncated_jpeg() -> bytes:
    return encoded(Image.effect_noise((64, 64), 60).convert("RGB"), "JPEG")[:-300]


# ---------------------------------------------------------------- accepted, and decoded right

def test_exif_rotated_photo_is_turned_upright():
    image = open_image(exif_rotated_jpeg())
    assert image.size == (20, 40)
    pixels = np.asarray(image).astype(int)
    assert (np.abs(pixels[2:8, 12:18] - [255, 0, 0]) < 30).all()  # now the top-right corner
    assert (pixels[2:8, 2:8] > 225).all()


def test_16_bit_png_keeps_its_range():
    assert Image.open(io.BytesIO(ramp_16_bit_png())).mode.startswith("I;16")
    pixels = np.asarray(open_image(ramp_16_bit_png())).astype(int)
    ramp = np.round(np.linspace(0, 255, 64))
    assert np.abs(pixels[0, :, 0] - ramp).max() <= 1  # a ramp, not saturated to white
    assert (pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all()

    pixels = np.asarray(open_image(ramp_16_bit_rgb_png())).astype(int)[0]
    assert np.abs(pixels - np.stack([ramp, ramp[::-1], np.full(64, 128)], axis=-1)).max() <= 1


def test_cmyk_jpeg_becomes_the_same_rgb():
    assert Image.open(io.BytesIO(cmyk_jpeg())).mode == "CMYK"
    image = open_image(cmyk_jpeg())
    assert image.mode == "RGB"
    assert np.abs(np.asarray(image).astype(int) - [200, 30, 30]).max() <= 6


def test_transparent_palette_pixels_become_white_paper():
    pixels = np.asarray(open_image(transparent_palette_png()))
    assert (pixels[:, :2] == 255).all()
    assert (pixels[:, 2:] == [200, 20, 20]).all()


def test_rgba_is_composited_on_white_paper():
    image = Image.new("RGBA", (2, 1), (0, 0, 0, 0))
    image.putpixel((1, 0), (0, 0, 0, 128))
    pixels = np.asarray(open_image(encoded(image))).astype(int)
    assert (pixels[0, 0] == 255).all() and (np.abs(pixels[0, 1] - 127) <= 1).all()


def test_req_s_004_1x1_image_fills_the_whole_letterbox():
    tensor = preprocess(open_image(one_pixel_png()), 56, 14)
    expected = (np.array([10, 200, 30]) / 255 - IMAGENET_MEAN) / IMAGENET_STD
    assert tensor.shape == (3, 56, 56)
    assert np.allclose(tensor.numpy(), expected[:, None, None].astype(np.float32), atol=1e-5)


def test_every_accepted_kind_passes_the_image_checks(tmp_path):
    data_dir = write_dataset(tmp_path / "data")
    kinds = {"rotated.jpg": exif_rotated_jpeg, "ramp16.png": ramp_16_bit_png, "rgb16.png": ramp_16_bit_rgb_png,
             "cmyk.jpg": cmyk_jpeg, "palette.png": transparent_palette_png, "1x1.png": one_pixel_png}
    for name, make in kinds.items():
        (data_dir / "images" / name).write_bytes(make())
    append_rows(data_dir, *(f"images/{name},{TIERS[i % 4]},artist{i:02d}" for i, name in enumerate(kinds)))
    table, skipped = load_table(data_dir, **SPLIT)
    assert skipped == [] and len(table) == 96 + len(kinds)
    assert set(table.file_name) >= {f"images/{name}" for name in kinds}


def test_korean_file_name_with_spaces_is_read(tmp_path):
    data_dir = write_dataset(tmp_path / "data", artists=10, per_artist=4)
    name = "images/학생 그림 01.png"
    Image.new("RGB", (8, 8), (1, 2, 3)).save(data_dir / name)
    # the second file's name is decomposed (NFD), as macOS writes it; the metadata has it composed (NFC)
    Image.new("RGB", (8, 8), (4, 5, 6)).save(data_dir / unicodedata.normalize("NFD", "images/김민지 2.png"))
    append_rows(data_dir, f'"{name}",S,김민지', "images/김민지 2.png,C,김민지")
    table, skipped = load_table(data_dir, **SPLIT)
    assert skipped == []
    rows = table.set_index("file_name").loc[[name, "images/김민지 2.png"]]
    assert list(rows.tier) == ["S", "C"] and rows.split.nunique() == 1
    assert [np.asarray(open_image(p))[0, 0].tolist() for p in rows.path] == [[1, 2, 3], [4, 5, 6]]


def test_metadata_with_bom_extra_columns_blank_lines_and_lower_case_tiers(tmp_path):
    for name in ("a.png", "b.png", "c.png"):
        Image.new("RGB", (4, 4)).save(tmp_path / name)
    text = ("\ufefffile_name, tier ,artist,notes,image_id\n"
            "a.png,s,Kim,fine,\n"
            "\n"
            ' b.png , a ,"Lee, Jun",extra words,b-id\n'
            ",,,,\n"
            "c.png,c,Park,,\n"
            "\n\n")
    (tmp_path / "metadata.csv").write_text(text, encoding="utf-8")
    df = read_metadata(tmp_path)
    assert df.to_dict("list") == {
        "image_id": ["a.png", "b-id", "c.png"], "file_name": ["a.png", "b.png", "c.png"],
        "tier": ["S", "A", "C"], "artist": ["Kim", "Lee, Jun", "Park"],
        "path": [str(tmp_path / n) for n in ("a.png", "b.png", "c.png")], "row": [2, 4, 6]}


def test_artist_names_in_two_unicode_forms_are_one_artist(tmp_path):
    (tmp_path / "metadata.csv").write_text(
        f"file_name,tier,artist\na.png,S,{unicodedata.normalize('NFC', '김민지')}\n"
        f"b.png,A,{unicodedata.normalize('NFD', '김민지')}\n", encoding="utf-8")
    assert read_metadata(tmp_path).artist.nunique() == 1


# ---------------------------------------------------------------- refused, naming the file and the row

@pytest.mark.parametrize("payload, reason", [
    (truncated_jpeg, "truncated"),
    (lambda: b"", "empty file"),
    (lambda: b"file_name,tier,artist\nthis is text, not a picture\n", "cannot identify its format"),
    (lambda: png_file(20000, 20000), "decompression bomb"),
    (lambda: png_file(10000, 10000), "decompression bomb"),  # between Pillow's warning and error limits
], ids=["truncated-jpeg", "zero-byte", "text-named-png", "20000x20000", "10000x10000"])
def test_unreadable_images_are_refused_with_the_reason(tmp_path, payload, reason):
    path = tmp_path / "image.png"
    path.write_bytes(payload())
    _, error = check_image(path)
    assert reason in error


def test_decompression_bomb_is_refused_even_when_warnings_are_not_errors(monkeypatch):
    # scan_images decodes in threads, and warning filters are process-wide: one thread's filter can be gone
    monkeypatch.setattr(warnings, "simplefilter", lambda *args, **kwargs: None)
    with pytest.warns(Image.DecompressionBombWarning), \
            pytest.raises(Image.DecompressionBombError, match="10000x10000 = 100M pixels, over the 89M-pixel limit"):
        open_image(png_file(10000, 10000))


@pytest.fixture
def bad_folder(tmp_path) -> Path:
    """write_dataset's 96 good rows (lines 2-97) and then one row for each kind of bad input."""
    data_dir = write_dataset(tmp_path / "data")
    images = data_dir / "images"
    (images / "truncated.jpg").write_bytes(truncated_jpeg())
    (images / "empty.png").write_bytes(b"")
    (images / "text.png").write_text("not a picture")
    (images / "bomb.png").write_bytes(png_file(20000, 20000))
    (images / "copy of a00_00.png").write_bytes((images / "a00_00.png").read_bytes())
    append_rows(data_dir,
                "images/truncated.jpg,A,artist00",    # 98
                "images/empty.png,B,artist01",        # 99
                "images/text.png,C,artist02",         # 100
                "images/bomb.png,S,artist03",         # 101
                "images/missing.png,A,artist04",      # 102
                "images/a00_00.png,S,artist00",       # 103 listed twice
                '"images/copy of a00_00.png",B,artist05',  # 104 same content, another name
                "images/a01_00.png,D,artist06",       # 105 unknown tier (and listed twice)
                "images/a02_00.png,A,",               # 106 missing artist (and listed twice)
                "images/a03_00.png,A,artist07,extra")  # 107 too many fields
    return data_dir


EXPECTED = {98: ("images/truncated.jpg", "truncated"), 99: ("images/empty.png", "empty file"),
            100: ("images/text.png", "cannot identify its format"), 101: ("images/bomb.png", "decompression bomb"),
            102: ("images/missing.png", "file not found"), 103: ("images/a00_00.png", "listed twice, first at row 2"),
            104: ("images/copy of a00_00.png", "same image content as row 2 (images/a00_00.png)"),
            105: ("images/a01_00.png", "unknown tier 'D'"), 106: ("images/a02_00.png", "missing artist"),
            107: ("images/a03_00.png", "4 fields but the header has 3")}


def test_every_bad_row_is_listed_at_once_with_file_and_row(bad_folder):
    with pytest.raises(DataError) as info:
        load_table(bad_folder, **SPLIT)
    header, *lines = str(info.value).splitlines()
    assert header.startswith(f"{bad_folder / 'metadata.csv'}: 10 bad row(s)") and "--skip_bad_images" in header
    for row, (name, reason) in EXPECTED.items():
        assert any(line.strip().startswith(f"row {row} ({name}): ") and reason in line for line in lines), (row, lines)
    rows = [int(line.split()[1]) for line in lines]
    assert rows == sorted(rows) and set(rows) == set(EXPECTED)


def test_skip_bad_images_drops_exactly_the_bad_rows(bad_folder):
    table, skipped = load_table(bad_folder, skip_bad_images=True, **SPLIT)
    assert len(table) == 96 and set(table.row) == set(range(2, 98))
    assert {int(message.split()[2]) for message in skipped} == set(EXPECTED)  # "skipped row N (...)"
    assert set(table.split) == {"train", "val", "test"}


def test_metadata_problems_each_name_the_row(tmp_path):
    (tmp_path / "metadata.csv").write_text(
        "file_name,tier,artist,image_id\n"
        "a.png,S,Kim,one\n"
        "b.png,A,Lee,one\n"          # 3: duplicate image_id
        "\n"
        "c.png,E,Park,\n"            # 5: unknown tier, after a blank line
        ",B,Choi,\n"                 # 6: empty file_name
        "d.png,B,,\n")               # 7: missing artist
    with pytest.raises(DataError) as info:
        read_metadata(tmp_path)
    lines = [line.strip() for line in str(info.value).splitlines()[1:]]
    assert lines == ["row 3 (b.png): duplicate image_id 'one', first at row 2",
                     "row 5 (c.png): unknown tier 'E', expected one of S, A, B, C",
                     "row 6: empty file_name",
                     "row 7 (d.png): missing artist"]


@pytest.mark.parametrize("text, message", [
    (None, "metadata.csv: not found"),
    ("", "missing column(s) ['file_name', 'tier', 'artist']"),
    ("file_name;tier;artist\na.png;S;Kim\n", "missing column(s)"),
    ("file_name,tier,artist\n\n", "no image rows"),
    ("file_name,tier,artist,tier\na.png,S,Kim,A\n", "column(s) ['tier'] appear more than once"),
    ("file_name,tier,artist\na.png,S,김민지\n".encode("cp949"), "line 2 is not UTF-8"),
])
def test_unusable_metadata_file_is_refused(tmp_path, text, message):
    if text is not None:
        (tmp_path / "metadata.csv").write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(DataError, match=re.escape(message)):
        read_metadata(tmp_path)


def test_too_few_artists_to_split_is_refused(tmp_path):
    data_dir = write_dataset(tmp_path / "data", artists=9, per_artist=8)
    with pytest.raises(DataError, match="metadata.csv: need works by at least 10 artists .* found 9"):
        load_table(data_dir, **SPLIT)


def test_tier_with_too_few_artists_is_refused(tmp_path):
    data_dir = write_dataset(tmp_path / "data")
    metadata = pd.read_csv(data_dir / "metadata.csv")
    rare = (metadata.tier == "S") & ~metadata.artist.isin(["artist00", "artist01"])
    metadata.loc[rare, "tier"] = "A"  # only two artists keep works in tier S
    metadata.to_csv(data_dir / "metadata.csv", index=False)
    with pytest.raises(DataError, match=r"tier\(s\) S too small to split by artist.*S: 4 works by 2 artist"):
        load_table(data_dir, **SPLIT)


def test_a_stray_quote_is_refused_naming_its_line_not_swallowing_the_rows_after_it(tmp_path):
    head = "file_name,tier,artist\na.png,S,Kim\n"
    (tmp_path / "metadata.csv").write_text(head + '"b.png,A,Lee\nc.png,B,Park\nd.png,C,Choi\n')
    with pytest.raises(DataError, match=r"line 3: cannot parse: unexpected end of data \(an unclosed or stray"):
        read_metadata(tmp_path)
    (tmp_path / "metadata.csv").write_text(head + '"b.png,A,Lee\nc.png",B,Park\nd.png,C,Choi\n')  # closed later
    with pytest.raises(DataError, match=r"line 3: a field runs over 2 lines \(an unclosed quote\?\)"):
        read_metadata(tmp_path)


def test_one_artist_written_with_other_case_or_spacing_is_one_artist_and_the_merge_is_said(tmp_path):
    data_dir = write_dataset(tmp_path / "data")
    metadata = pd.read_csv(data_dir / "metadata.csv")
    spellings = ["Lee Jun", "lee  jun", " LEE JUN", "Lee\u3000Jun"]  # the last with an ideographic space
    metadata.loc[metadata.artist == "artist00", "artist"] = [spellings[i % 4] for i in range(8)]
    metadata.to_csv(data_dir / "metadata.csv", index=False)
    table, notes = load_table(data_dir, **SPLIT)
    assert set(table.loc[table.file_name.str.startswith("images/a00_"), "artist"]) == {"Lee Jun"}
    assert table.groupby("artist").split.nunique().max() == 1
    assert notes == ["artist names merged as one artist 'Lee Jun': 'Lee Jun', 'lee  jun', 'LEE JUN', "
                     "'Lee\\u3000Jun'"]  # repr shows the unusual space


def test_file_names_must_stay_inside_the_data_folder_and_name_regular_files(tmp_path):
    import os

    outside = tmp_path / "outside.png"
    Image.new("RGB", (4, 4)).save(outside)
    data_dir = tmp_path / "data"
    (data_dir / "folder.png").mkdir(parents=True)
    os.mkfifo(data_dir / "pipe.png")  # reading it would wait forever
    (data_dir / "link.png").symlink_to(outside)  # a link is followed: allowed
    (data_dir / "metadata.csv").write_text(
        "file_name,tier,artist\n../outside.png,S,Kim\n/etc/hostname,A,Lee\nfolder.png,B,Park\n"
        "pipe.png,C,Choi\nlink.png,S,Han\n")
    with pytest.raises(DataError) as info:
        load_table(data_dir, **SPLIT)
    lines = [line.strip() for line in str(info.value).splitlines()[1:]]
    assert lines == ["row 2 (../outside.png): file_name must be a path inside the data folder (no absolute path, "
                     "no '..')",
                     "row 3 (/etc/hostname): file_name must be a path inside the data folder (no absolute path, "
                     "no '..')",
                     "row 4 (folder.png): not a regular file (a folder, FIFO or device)",
                     "row 5 (pipe.png): not a regular file (a folder, FIFO or device)"]


def test_skipped_rows_are_listed_even_when_the_split_then_fails(tmp_path):
    data_dir = write_dataset(tmp_path / "data", artists=10)
    (data_dir / "images" / "a09_00.png").write_bytes(b"not an image")
    metadata = pd.read_csv(data_dir / "metadata.csv")
    metadata.loc[metadata.artist == "artist09", "file_name"] = "images/a09_00.png"  # listed 8 times
    metadata.loc[metadata.artist == "artist09", "artist"] = "artist09"
    metadata = metadata[(metadata.artist != "artist09") | (metadata.index == metadata.index[-1])]
    metadata.to_csv(data_dir / "metadata.csv", index=False)
    with pytest.raises(DataError, match=r"at least 10 artists.*found 9 \(after skipping 1 bad row\(s\): row \d+ "
                                        r"\(images/a09_00.png\): not an image"):
        load_table(data_dir, skip_bad_images=True, **SPLIT)


# ---------------------------------------------------------------- the script: nothing written on bad input

@pytest.mark.slow
def test_make_pairs_refuses_bad_rows_and_writes_nothing(tmp_path, bad_folder):
    out = tmp_path / "run"
    result = run_script("make_pairs.py", *tiny_args(tmp_path, bad_folder, tmp_path / "unused"), check=False)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    problems = [line.strip() for line in result.stderr[result.stderr.index("error: "):].splitlines()[1:]]
    assert len(problems) == 12  # one line per problem: rows 105 and 106 have two each
    for row, (name, reason) in EXPECTED.items():
        assert any(line.startswith(f"row {row} ({name}): ") and reason in line for line in problems), row
    assert not out.exists() or not any(out.iterdir())

    result = run_script("make_pairs.py", *tiny_args(tmp_path, bad_folder, tmp_path / "unused"),
                        "--skip_bad_images", "true")
    skipped = [line for line in result.stdout.splitlines() if line.startswith("warning: skipped row")]
    assert {int(line.split()[3]) for line in skipped} == set(EXPECTED)
    written = (out / "splits.csv").read_text().splitlines()
    assert len(written) == 1 + 96 and not any("truncated" in line or "bomb" in line for line in written)
    assert (out / "pairs").is_dir()
