"""Procedural "student drawings" demo data set, so `make demo` and the tests run without real data.

generate_demo_dataset writes DATA_DIR/metadata.csv (file_name,tier,artist) and DATA_DIR/images/ in the
Hugging Face imagefolder layout. Every work has a latent quality q in [0, 1] that drives composition,
tonal range, line steadiness and paper cleanliness; its tier S/A/B/C is q cut at fixed thresholds, so
neighbouring tiers are harder to tell apart than S and C. Every artist has a style of their own (palette,
motif, stroke width, paper tint, hatching) and a skill that shifts their q. Style alone therefore predicts
tier for a known artist, which is why train and test must be split by artist.

DATA_DIR/comparisons.csv holds the judgements of synthetic teachers (RATERS: each names the work of higher q,
and gives the wrong answer with a known probability; works closer than TIE_GAP in q are a tie), half of them
between works of one tier, where only q, never the tier, decides. They come from an RNG of their own, so the
images are the same with or without them.
"""

import colorsys
import csv
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .tables import TIERS

THRESHOLDS = (0.68, 0.5, 0.32)  # lower bounds of q for S, A, B; anything below is C
ASPECTS = (4 / 3, 3 / 4, 1.0, 3 / 2, 2 / 3)
ANCHORS = ((0.5, 0.5), (1 / 3, 0.55), (2 / 3, 0.55), (0.5, 0.6))  # centre and rule-of-thirds points
MOTIFS = ("still_life", "landscape", "blocks")
SS = 2  # draw at 2x and downsample, for anti-aliased edges
RATERS = {"teacher1": 0.05, "teacher2": 0.1, "teacher3": 0.3}  # the probability each names the wrong winner
TIE_GAP = 0.02  # works closer than this in q are judged a tie
COMPARISONS, SECOND_OPINIONS = 1500, 0.2  # judgements, and the share of pairs a second teacher judges too


@dataclass
class Style:
    hue: float
    sat: float
    motif: str
    stroke: float
    paper: tuple[int, int, int]
    ink: tuple[int, int, int]
    hatch: bool
    rough: float  # paper specks and line wobble that belong to the artist, not to the quality of the work
    sketchy: float
    skill: float
    pencil: bool


def rgb(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v)) * 255


def make_style(rng: np.random.Generator, skill: float, pencil: bool) -> Style:
    hue = rng.random()
    sat = 0.0 if pencil else rng.uniform(0.35, 0.8)
    tint = rgb(rng.uniform(0.05, 0.6), 0.0 if pencil else rng.uniform(0.02, 0.12), rng.uniform(0.88, 0.98))
    ink = rgb(hue + 0.5, 0.0 if pencil else rng.uniform(0.2, 0.6), rng.uniform(0.1, 0.3))
    return Style(
        hue=hue,
        sat=sat,
        motif=MOTIFS[rng.integers(len(MOTIFS))],
        stroke=rng.uniform(1.0, 3.0),
        paper=tuple(tint.astype(int)),
        ink=tuple(ink.astype(int)),
        hatch=bool(rng.random() < 0.5),
        rough=rng.uniform(0, 5),
        sketchy=rng.uniform(0, 1),
        skill=skill,
        pencil=pencil,
    )


class Canvas:
    """Supersampled drawing surface; objects are placed in a subject frame in units of its half-size."""

    def __init__(self, w: int, h: int, style: Style, q: float, rng: np.random.Generator):
        self.style, self.rng = style, rng
        self.img = Image.new("RGB", (w * SS, h * SS), style.paper)
        self.draw = ImageDraw.Draw(self.img)
        # each skill shows unevenly within one work, so no single statistic gives the tier away
        self.q_comp, self.q_tone, self.q_line, self.q_clean = np.clip(q + rng.normal(0, 0.15, 4), 0, 1)
        bad = 1.0 - self.q_comp
        anchor = np.array(ANCHORS[rng.integers(len(ANCHORS))])
        self.centre = (anchor + bad**1.5 * rng.uniform(-0.6, 0.6, 2) + rng.normal(0, 0.03, 2)) * (w, h) * SS
        self.half = 0.45 * min(w, h) * SS * np.exp(rng.normal(0, 0.05 + 0.45 * bad))
        self.contrast = 0.25 + 0.75 * self.q_tone
        self.levels = round(2 + 14 * self.q_tone**2)  # flat, banded shading for weak works
        fade = 0.55 * (1 - self.q_tone)  # timid, faint lines
        self.ink = tuple(int((1 - fade) * i + fade * p) for i, p in zip(style.ink, style.paper))

    def xy(self, u: float, v: float) -> tuple[float, float]:
        return self.centre[0] + u * self.half, self.centre[1] - v * self.half

    def colour(self, dh: float, t: float, sat: float = 1.0) -> tuple[int, int, int]:
        """Palette colour at tone t in [0, 1], squeezed into the work's washed-out, muddy or full range."""
        t = 0.62 + 0.2 * (1 - self.q_tone) + (t - 0.5) * self.contrast * 0.75
        sat *= self.style.sat * (0.4 + 0.6 * self.q_tone)
        return tuple(rgb(self.style.hue + dh, sat, min(t, 1.0)).astype(int))

    def line(self, pts: list[tuple[float, float]], width: float = 1.0) -> None:
        """Densified polyline; weak works get jitter and hesitant, re-traced strokes."""
        rng, bad = self.rng, 1.0 - self.q_line
        p = np.array(pts, dtype=float)
        t = np.concatenate([[0], np.cumsum(np.linalg.norm(np.diff(p, axis=0), axis=1))])
        s = np.linspace(0, t[-1], max(2, int(t[-1] / (3 * SS))))
        p = np.stack([np.interp(s, t, p[:, 0]), np.interp(s, t, p[:, 1])], 1)
        w = max(1, round(self.style.stroke * width * SS))
        for _ in range(1 + rng.poisson(2.5 * bad**2)):
            jit = rng.normal(0, 0.2 + 0.6 * self.style.sketchy + 3.0 * bad**1.5, p.shape) * SS
            self.draw.line([tuple(x) for x in p + jit], fill=self.ink, width=w, joint="curve")

    def sphere(self, u: float, v: float, r: float, dh: float = 0.0, outline: bool = True) -> None:
        x, y = self.xy(u, v)
        rad = r * self.half
        box = [int(x - rad), int(y - rad), int(x + rad) + 1, int(y + rad) + 1]
        n = box[2] - box[0]
        if n < 2:
            return
        g = (np.arange(n) + 0.5) / n * 2 - 1
        gx, gy = np.meshgrid(g, g)
        z = np.sqrt(np.clip(1 - gx**2 - gy**2, 0, 1))
        t = np.clip(0.1 + 0.9 * (-0.5 * gx - 0.5 * gy + 0.7 * z), 0, 1)
        t = np.round(t * self.levels) / self.levels
        lo, hi = np.array(self.colour(dh, 0.0)), np.array(self.colour(dh, 1.0))
        shade = Image.fromarray((lo + t[..., None] * (hi - lo)).astype(np.uint8))
        mask = Image.fromarray(((gx**2 + gy**2) <= 1).astype(np.uint8) * 255)
        self.img.paste(shade, box[:2], mask)
        if outline:
            a = np.linspace(0, 2 * np.pi, 48)
            self.line([self.xy(u + r * np.cos(b), v + r * np.sin(b)) for b in a], 0.7)

    def poly(self, pts: list[tuple[float, float]], dh: float, tone: float, sat: float = 1.0) -> None:
        xy = [self.xy(u, v) for u, v in pts]
        self.draw.polygon(xy, fill=self.colour(dh, round(tone * self.levels) / self.levels, sat))
        self.line(xy + xy[:1])

    def hatch(self, u: float, v: float, rx: float, ry: float) -> None:
        """Hatched cast shadow: even, parallel strokes when skilled, uneven and wandering when not."""
        bad = 1.0 - self.q_line
        for k in np.arange(-1, 1, 0.12 + self.rng.normal(0, 0.03 * bad)):
            ang = 0.8 + self.rng.normal(0, 0.4 * bad)
            h = np.sqrt(max(0.0, 1 - k**2))
            a, b = (k - h * np.cos(ang), -h * np.sin(ang)), (k + h * np.cos(ang), h * np.sin(ang))
            self.line([self.xy(u + rx * a[0], v + ry * a[1]), self.xy(u + rx * b[0], v + ry * b[1])], 0.5)


def draw_subject(c: Canvas) -> None:
    rng = c.rng
    if c.style.motif == "still_life":
        c.poly([(-4, -0.3), (4, -0.3), (4, -4), (-4, -4)], 0.08, 0.7, 0.4)
        for u in sorted(rng.uniform(-0.6, 0.6, rng.integers(2, 4))):
            r = rng.uniform(0.22, 0.38)
            if c.style.hatch:
                c.hatch(u + r * 0.8, -0.32, r * 1.1, r * 0.25)
            c.sphere(u, -0.3 + r, r, rng.uniform(-0.1, 0.1))
        u0, wv = rng.uniform(-0.3, 0.3), rng.uniform(0.15, 0.25)
        prof = [(wv, -0.35), (wv * 1.5, 0.2), (wv * 0.6, 0.7), (wv * 0.8, 0.85)]
        c.poly([(u0 - a, b) for a, b in prof] + [(u0 + a, b) for a, b in prof[::-1]], 0.15, 0.4)
    elif c.style.motif == "landscape":
        c.sphere(rng.uniform(-0.7, 0.7), rng.uniform(0.5, 0.8), 0.15, 0.5, outline=False)
        for i, base in enumerate((-0.1, -0.35, -0.6)):
            us = np.linspace(-4, 4, 16)
            vs = base + 0.15 * np.sin(us * rng.uniform(1, 3) + rng.uniform(0, 6)) + rng.normal(0, 0.03, 16)
            c.poly([(-4, -4), *zip(us, vs), (4, -4)], 0.05 * i, 0.75 - 0.3 * i)
        for u in rng.uniform(-0.8, 0.8, rng.integers(1, 4)):
            c.line([c.xy(u, -0.6), c.xy(u, -0.1)], 1.5)
            c.sphere(u, 0.05, rng.uniform(0.15, 0.28), 0.3)
    else:
        c.poly([(-4, -0.35), (4, -0.35), (4, -4), (-4, -4)], 0.08, 0.7, 0.4)
        for u in sorted(rng.uniform(-0.5, 0.5, rng.integers(1, 3))):
            s, d, v0 = rng.uniform(0.35, 0.55), rng.uniform(0.12, 0.2), -0.4
            if c.style.hatch:
                c.hatch(u + d + 0.2, v0 + 0.02, 0.25, 0.07)
            c.poly([(u - s, v0), (u, v0), (u, v0 + s), (u - s, v0 + s)], 0.0, 0.75)
            c.poly([(u, v0), (u + d, v0 + d), (u + d, v0 + s + d), (u, v0 + s)], 0.0, 0.25)
            c.poly([(u - s, v0 + s), (u, v0 + s), (u + d, v0 + s + d), (u - s + d, v0 + s + d)], 0.0, 1.0)
        r = rng.uniform(0.2, 0.3)
        c.sphere(rng.choice([-0.75, 0.75]), v0 + r, r, 0.5)


def finish(c: Canvas, w: int, h: int) -> Image.Image:
    """Downsample, then add the paper's wear: stray marks, smudges, blotches and specks in weak works."""
    rng, bad = c.rng, 1.0 - c.q_clean
    for _ in range(rng.poisson(5 * bad**1.5)):
        x, y, dx, dy = *rng.uniform(0, 1, 2) * c.img.size, *rng.normal(0, 20 * SS, 2)
        c.draw.line([(x, y), (x + dx, y + dy)], fill=c.ink, width=SS)
    img = c.img.resize((w, h), Image.Resampling.LANCZOS)
    smudge = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(smudge)
    for _ in range(rng.poisson(6 * bad**1.5)):
        x, y, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(4, 18)
        draw.ellipse([x - r, y - r * 0.6, x + r, y + r * 0.6], fill=int(rng.uniform(30, 90)))
    dark = np.asarray(smudge.filter(ImageFilter.GaussianBlur(4)), dtype=float)[..., None] / 255
    a = np.asarray(img, dtype=float) * (1 - 0.6 * dark)
    blot = Image.fromarray(rng.normal(128, 40, (h // 16 + 1, w // 16 + 1)).clip(0, 255).astype(np.uint8))
    a += 0.3 * bad * (np.asarray(blot.resize((w, h), Image.Resampling.BICUBIC), dtype=float)[..., None] - 128)
    # sparse 2x2 specks rather than dense grain, so that noisy PNGs stay small
    shape = ((h + 1) // 2, (w + 1) // 2, 1)
    specks = -np.abs(rng.normal(0, 40, shape)) * (rng.random(shape) < 0.01 * c.style.rough + 0.2 * bad**1.5)
    a += specks.repeat(2, 0).repeat(2, 1)[:h, :w]
    out = Image.fromarray(a.clip(0, 255).round().astype(np.uint8))
    return out.convert("L") if c.style.pencil else out


def draw_work(style: Style, q: float, rng: np.random.Generator) -> Image.Image:
    long = int(rng.integers(128, 193))
    aspect = ASPECTS[rng.integers(len(ASPECTS))]
    w, h = (long, round(long / aspect)) if aspect >= 1 else (round(long * aspect), long)
    c = Canvas(w, h, style, q, rng)
    draw_subject(c)
    return finish(c, w, h)


def tier_of(q: float) -> str:
    return next((t for t, lo in zip(TIERS, THRESHOLDS) if q >= lo), TIERS[-1])


def planned_works(num_artists: int, works_per_artist: int, seed: int):
    """Every work before it is drawn, in order: (artist, index, style, the work's own RNG, latent quality q).
    write_works draws from it, and latent_quality reads q from it without drawing."""
    root = np.random.SeedSequence(seed)
    skills = np.random.default_rng(root.spawn(1)[0]).permutation(np.linspace(0.15, 0.85, num_artists))
    for a, artist_seed in enumerate(root.spawn(num_artists)):
        style_seed, *work_seeds = artist_seed.spawn(works_per_artist + 1)
        style = make_style(np.random.default_rng(style_seed), float(skills[a]), pencil=a % 11 == 5)
        for i, work_seed in enumerate(work_seeds):
            rng = np.random.default_rng(work_seed)
            yield f"artist{a:02d}", i, style, rng, float(np.clip(style.skill + rng.normal(0, 0.15), 0, 1))


def work_stem(artist: str, index: int) -> str:
    """A work's file name without its folder and extension (the extension is drawn after the image)."""
    return f"{artist}_{index:03d}"


def latent_quality(*, num_artists: int = 60, works_per_artist: int = 10, seed: int = 42) -> dict[str, float]:
    """The latent quality q of every work of generate_demo_dataset's data set of these arguments, by work_stem:
    what the synthetic teachers judge by and the tiers are cut from, never written into the data folder."""
    return {work_stem(artist, i): q for artist, i, _, _, q in planned_works(num_artists, works_per_artist, seed)}


def write_works(out: Path, num_artists: int, works_per_artist: int, seed: int) -> None:
    (out / "images").mkdir(parents=True)
    rows = []
    for artist, i, style, rng, q in planned_works(num_artists, works_per_artist, seed):
        img = draw_work(style, q, rng)
        name = f"images/{work_stem(artist, i)}.{'jpg' if rng.random() < 0.6 else 'png'}"
        img.save(out / name, **({"quality": 90} if name.endswith(".jpg") else {}))
        rows.append((name, tier_of(q), artist, q))
    with open(out / "metadata.csv", "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(("file_name", "tier", "artist"))
        writer.writerows(row[:3] for row in rows)
    names, tiers, artists, q = (list(column) for column in zip(*rows))
    write_comparisons(out, names, tiers, artists, np.array(q), seed)


def rater_answer(q_a: float, q_b: float, rater: str, rng: np.random.Generator) -> str:
    """What synthetic teacher `rater` answers for works of latent quality q_a and q_b: a tie closer than TIE_GAP,
    else the better one, wrong with the rater's probability (RATERS)."""
    if abs(q_a - q_b) < TIE_GAP:
        return "tie"
    return "a" if (q_a > q_b) != (rng.random() < RATERS[rater]) else "b"


def write_comparisons(out: Path, names: list[str], tiers: list[str], artists: list[str], q: np.ndarray,
                      seed: int) -> None:
    """comparisons.csv: COMPARISONS judgements by RATERS, half of them of two works by one student (as a
    teacher compares a student's works; such a pair never crosses splits), the rest of random pairs of which
    half are of one tier."""
    rng = np.random.default_rng([seed, 24])  # its own stream: the images do not depend on it
    tiers, artists, raters = np.asarray(tiers), np.asarray(artists), list(RATERS)
    judgements, seen = [], set()
    while len(judgements) < COMPARISONS:
        a = int(rng.integers(len(names)))
        if rng.random() < 0.5:
            same = np.flatnonzero(artists == artists[a])
        else:
            same = np.flatnonzero((tiers == tiers[a]) if rng.random() < 0.5 else (tiers != tiers[a]))
        b = int(rng.choice(same[same != a]))
        if (min(a, b), max(a, b)) in seen:  # one judgement per teacher and pair: a flip would contradict it
            continue
        seen.add((min(a, b), max(a, b)))
        for rater in rng.permutation(raters)[:2 if rng.random() < SECOND_OPINIONS else 1]:
            judgements.append((names[a], names[b], rater_answer(q[a], q[b], rater, rng), rater))
    with open(out / "comparisons.csv", "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(("image_a", "image_b", "winner", "rater"))
        writer.writerows(judgements)


def generate_demo_dataset(
    data_dir: str | Path, *, num_artists: int = 60, works_per_artist: int = 10, seed: int = 42
) -> Path:
    """Write DATA_DIR/metadata.csv (file_name,tier,artist), DATA_DIR/comparisons.csv and DATA_DIR/images/*.png|jpg.
    Returns data_dir."""
    data_dir = Path(data_dir)
    if (data_dir / "metadata.csv").exists():
        return data_dir
    if data_dir.exists() and any(data_dir.iterdir()):
        raise FileExistsError(f"{data_dir} exists and is not empty but has no metadata.csv")
    # build beside the target and rename at the end, so a crash never leaves a data set that looks complete
    tmp = data_dir.with_name(f"{data_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        write_works(tmp, num_artists, works_per_artist, seed)
        if data_dir.exists():
            data_dir.rmdir()
        os.replace(tmp, data_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return data_dir
