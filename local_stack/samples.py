"""Sample images with known ground truth, generated at run time (nothing binary is committed).

Each sample is drawn upright: a soft gradient with faint noise (no palette colour anywhere) and a few solid
rectangles in the palette of docs/local-stack.md, at least `GAP` px apart. The ground truth is computed from
that layout, never from the endpoint's detection code, so a detection bug shows up as a test failure.
Exif samples store the pixels transformed by the inverse of their orientation and carry the tag, so a viewer
that applies the tag shows the upright picture (upright canvas is landscape: 5-8 are stored portrait).
"""

from __future__ import annotations

import io
import json
import random
import struct
import unicodedata
import zlib
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

GAP = 24
EDGE = 10
JPEG_OPTIONS: dict[str, Any] = {"quality": 92, "subsampling": 0}
EXIF_ORIENTATION_TAG = 0x0112
#: Pillow transpose that undoes each orientation (stored -> upright is its inverse's inverse).
STORE_TRANSFORM = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,  # shown after a 90 deg clockwise turn, so stored turned counter-clockwise
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}
COLOURS = {
    "face": (255, 0, 0),
    "celebrity": (255, 128, 0),
    "box": (0, 255, 0),
    "text": (0, 0, 255),
    "moderation": (255, 0, 255),
    "head_cover": (255, 255, 0),
    "face_cover": (0, 255, 255),
}
#: Rectangle sizes in upright pixels; the two face shapes are the two identity groups.
FACE_SHAPES = {"3:4": (66, 88), "1:1": (76, 76)}
LINE_WORDS = ("LOCAL", "STACK")
WORD_SPANS = ((0.0, 0.45), (0.55, 1.0))
CELEBRITY_NAME = "Ada Lovelace"


# ---- ground truth ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TruthWord:
    text: str
    box_px: tuple[int, int, int, int]
    box: tuple[float, float, float, float]


@dataclass(frozen=True)
class TruthObject:
    """One rectangle: `box_px` = [left, top, width, height] in upright pixels, `box` the same normalised."""

    kind: str  # face | celebrity | box | text | moderation | head_cover | face_cover
    box_px: tuple[int, int, int, int]
    box: tuple[float, float, float, float]
    identity: str | None = None  # faces: the aspect-ratio group ("3:4" or "1:1")
    text: str | None = None  # text lines
    words: tuple[TruthWord, ...] = ()


@dataclass(frozen=True)
class SampleTruth:
    """What one file is and what Rekognition (the local endpoint) should say about it."""

    name: str  # file name under the sample directory
    key: str  # S3 key once placed (== name before `GroundTruth.placed`)
    placement: str  # "prefix" | "outside" | "archive"
    format: str  # JPEG | PNG | MPO | WEBP | GIF | TIFF | BMP | TEXT | EMPTY
    size_bytes: int
    stored_width: int | None = None
    stored_height: int | None = None
    exif_orientation: int = 1
    exif_tag_present: bool = False
    upright_width: int | None = None
    upright_height: int | None = None
    objects: tuple[TruthObject, ...] = ()
    #: What Rekognition (the local endpoint) says about the file as stored; None: it analyses it.
    expected_error: str | None = None
    #: What the job does with it (default settings): its `images.status`, and for an image it does not
    #: analyse the `errors.error_code` (Rekognition's code, or the job's own such as `EmptyObject`).
    job_status: str = "analysed"
    job_error: str | None = None
    #: The job refuses it from its header: no Rekognition call, whatever the image source.
    refused_from_header: bool = False
    #: The job sends an upright JPEG copy of its first frame (`objects` are that frame's).
    converted: bool = False

    def of_kind(self, *kinds: str) -> list[TruthObject]:
        return [o for o in self.objects if o.kind in kinds]

    @property
    def faces(self) -> list[TruthObject]:
        return self.of_kind("face", "celebrity")

    @property
    def moderation(self) -> bool:
        return bool(self.of_kind("moderation"))

    @property
    def celebrities(self) -> list[str]:
        return [CELEBRITY_NAME for _ in self.of_kind("celebrity")]

    @property
    def line_texts(self) -> list[str]:
        return [o.text or "" for o in self.of_kind("text")]


@dataclass(frozen=True)
class GroundTruth:
    samples: tuple[SampleTruth, ...]
    bucket: str | None = None
    prefix: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def by_key(self, key: str) -> SampleTruth:
        return next(s for s in self.samples if s.key == key)

    def by_name(self, name: str) -> SampleTruth:
        return next(s for s in self.samples if s.name == name)

    def in_prefix(self) -> list[SampleTruth]:
        return [s for s in self.samples if s.placement == "prefix"]

    def outside_prefix(self) -> list[SampleTruth]:
        return [s for s in self.samples if s.placement != "prefix"]

    def good(self) -> list[SampleTruth]:
        """In the prefix and analysable by Rekognition as stored."""
        return [s for s in self.in_prefix() if s.expected_error is None]

    def bad(self) -> list[SampleTruth]:
        """Refused by Rekognition as stored (the job may still convert them: `converted`)."""
        return [s for s in self.samples if s.expected_error is not None]

    def placed(self, bucket: str, prefix: str) -> GroundTruth:
        """The same samples with their S3 keys under `prefix` (or outside it, as their placement says)."""

        def key(s: SampleTruth) -> str:
            if s.placement == "outside":
                return f"outside/{s.name}"
            if s.placement == "archive":
                return f"{prefix.rstrip('/')}-archive/{s.name}"
            return f"{prefix}{s.name}"

        return replace(
            self, bucket=bucket, prefix=prefix, samples=tuple(replace(s, key=key(s)) for s in self.samples)
        )

    def to_json(self) -> str:
        """JSON with, per sample, the derived fields too (moderation, celebrities, line_texts)."""
        raw = asdict(self)
        for sample, entry in zip(self.samples, raw["samples"], strict=True):
            entry.update(
                moderation=sample.moderation, celebrities=sample.celebrities, line_texts=sample.line_texts
            )
        return json.dumps(raw, indent=1, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> GroundTruth:
        raw = json.loads(text)

        def obj(o: dict[str, Any]) -> TruthObject:
            words = tuple(TruthWord(w["text"], tuple(w["box_px"]), tuple(w["box"])) for w in o["words"])
            return TruthObject(
                o["kind"], tuple(o["box_px"]), tuple(o["box"]), o["identity"], o["text"], words
            )

        derived = {"moderation", "celebrities", "line_texts", "objects"}
        samples = tuple(
            SampleTruth(
                **{k: v for k, v in s.items() if k not in derived}, objects=tuple(map(obj, s["objects"]))
            )
            for s in raw["samples"]
        )
        return cls(samples, raw["bucket"], raw["prefix"], raw["extra"])


# ---- drawing --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    """What to draw: upright size, rectangles (kind, w, h[, identity]), how to store it."""

    name: str
    size: tuple[int, int] = (480, 320)
    rects: tuple[tuple[str, int, int, str | None], ...] = ()
    fmt: str = "JPEG"
    orientation: int | None = None  # None = no Exif tag
    seed: int = 0
    placement: str = "prefix"
    #: Frames (pages) in the file: the first is the picture and its truth; the others show the same
    #: kinds of rectangles elsewhere, so analysing another frame than the first gives the wrong boxes.
    frames: int = 1


def _background(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """A soft warm-grey gradient with faint noise: channels in ~[105, 200], far from every palette colour."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = 130 + 40 * (x / width) + 20 * (y / height)
    rgb = np.stack([base + 8, base, base - 10], axis=-1) + rng.normal(0, 2.0, (height, width, 3))
    return np.clip(rgb, 0, 255).astype(np.uint8)


def _place(spec: Spec, rng: random.Random) -> list[TruthObject]:
    width, height = spec.size
    placed: list[tuple[int, int, int, int]] = []
    objects = []
    for kind, w, h, identity in spec.rects:
        for _ in range(2000):
            left, top = rng.randint(EDGE, width - w - EDGE), rng.randint(EDGE, height - h - EDGE)
            if all(
                left + w + GAP <= a or a + c + GAP <= left or top + h + GAP <= b or b + d + GAP <= top
                for a, b, c, d in placed
            ):
                break
        else:
            raise RuntimeError(f"{spec.name}: no room for {kind} {w}x{h}")
        placed.append((left, top, w, h))
        objects.append(_truth_object(kind, (left, top, w, h), spec.size, identity))
    return objects


def _norm(px: tuple[int, int, int, int], size: tuple[int, int]) -> tuple[float, float, float, float]:
    return (px[0] / size[0], px[1] / size[1], px[2] / size[0], px[3] / size[1])


def _truth_object(
    kind: str, px: tuple[int, int, int, int], size: tuple[int, int], identity: str | None
) -> TruthObject:
    words: tuple[TruthWord, ...] = ()
    text = None
    if kind == "text":
        left, top, w, h = px
        word_px = [(left + round(a * w), top, round((b - a) * w), h) for a, b in WORD_SPANS]
        words = tuple(TruthWord(t, p, _norm(p, size)) for t, p in zip(LINE_WORDS, word_px, strict=True))
        text = " ".join(LINE_WORDS)
    return TruthObject(kind, px, _norm(px, size), identity, text, words)


def render_upright(spec: Spec) -> tuple[Image.Image, list[TruthObject]]:
    """The upright picture and its objects."""
    width, height = spec.size
    img = Image.fromarray(_background(width, height, np.random.default_rng(spec.seed)))
    objects = _place(spec, random.Random(spec.seed))
    draw = ImageDraw.Draw(img)
    for o in objects:
        left, top, w, h = o.box_px
        draw.rectangle([left, top, left + w - 1, top + h - 1], fill=COLOURS[o.kind])
    return img, objects


#: How each format is saved. GIF: one adaptive palette per frame without dithering, so the palette colours
#: stay solid; TIFF: deflate-compressed to keep the set small.
SAVE_OPTIONS: dict[str, dict[str, Any]] = {
    "JPEG": JPEG_OPTIONS,
    "MPO": JPEG_OPTIONS,
    "WEBP": {"quality": 90},
    "GIF": {"duration": 500, "loop": 0},
    "TIFF": {"compression": "tiff_deflate"},
    "BMP": {},
}
#: Formats Rekognition reads as stored (an MPO is a JPEG to it); the job converts the others.
REKOGNITION_READS = ("JPEG", "PNG", "MPO")


def encode(
    img: Image.Image, fmt: str, orientation: int | None, more_frames: tuple[Image.Image, ...] = ()
) -> bytes:
    """Store upright `img` as `fmt`; with an orientation (JPEG, TIFF), the inverse-transformed pixels plus
    the tag. `more_frames` follow as further frames or pages (MPO, GIF, TIFF, WebP)."""
    buf = io.BytesIO()
    if fmt == "PNG":
        img.save(buf, "PNG", optimize=True)
        return buf.getvalue()
    frames = [_stored(frame, orientation) for frame in (img, *more_frames)]
    if fmt == "GIF":
        frames = [f.quantize(256, Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE) for f in frames]
    options = dict(SAVE_OPTIONS[fmt])
    if orientation is not None and fmt == "TIFF":
        options["tiffinfo"] = {EXIF_ORIENTATION_TAG: orientation}
    elif orientation is not None:
        exif = Image.Exif()
        exif[EXIF_ORIENTATION_TAG] = orientation
        options["exif"] = exif.tobytes()
    if more_frames:
        options.update(save_all=True, append_images=frames[1:])
    frames[0].save(buf, fmt, **options)
    return buf.getvalue()


def _stored(img: Image.Image, orientation: int | None) -> Image.Image:
    return img.transpose(STORE_TRANSFORM[orientation]) if orientation not in (None, 1) else img


def _sample(spec: Spec) -> tuple[bytes, SampleTruth]:
    """A drawn sample: analysed by Rekognition as stored (JPEG, PNG, MPO) or by the job once converted."""
    img, objects = render_upright(spec)
    more = tuple(render_upright(replace(spec, seed=spec.seed + 1000 * n))[0] for n in range(1, spec.frames))
    data = encode(img, spec.fmt, spec.orientation, more)
    converted = spec.fmt not in REKOGNITION_READS
    swapped = spec.orientation is not None and spec.orientation >= 5
    stored = (img.height, img.width) if swapped else (img.width, img.height)
    return data, SampleTruth(
        name=spec.name,
        key=spec.name,
        placement=spec.placement,
        format=spec.fmt,
        size_bytes=len(data),
        stored_width=stored[0],
        stored_height=stored[1],
        exif_orientation=spec.orientation or 1,
        exif_tag_present=spec.orientation is not None,
        upright_width=img.width,
        upright_height=img.height,
        objects=tuple(objects),
        expected_error="InvalidImageFormatException" if converted else None,
        converted=converted,
    )


def _face(identity: str, kind: str = "face") -> tuple[str, int, int, str | None]:
    w, h = FACE_SHAPES[identity]
    return (kind, w, h, identity)


BOX = ("box", 90, 60, None)
LINE = ("text", 150, 34, None)
MODERATION = ("moderation", 56, 56, None)


def good_specs() -> list[Spec]:
    specs = [
        Spec(f"orientation/exif-{o}.jpg", rects=(_face("3:4"), BOX, LINE), orientation=o, seed=o)
        for o in range(1, 9)
    ]
    specs += [
        Spec("plain/street.jpg", (560, 400), (_face("1:1"), BOX, BOX, LINE), seed=11),
        Spec("plain/no-exif.jpeg", (400, 520), (_face("3:4", "celebrity"), LINE), seed=12),
        Spec("png/shapes.png", (400, 300), (BOX, LINE, _face("1:1")), fmt="PNG", seed=13),
        Spec("png/flagged.png", (360, 280), (MODERATION, BOX), fmt="PNG", seed=14),
        Spec(
            "group/team.jpg",
            (640, 420),
            (_face("3:4"), _face("3:4"), _face("1:1"), _face("1:1"), _face("3:4", "celebrity")),
            seed=15,
        ),
        Spec("empty/nothing.jpg", (320, 240), (), seed=16),
        Spec("odd/with space.jpg", (360, 300), (BOX,), seed=17),
        Spec(unicodedata.normalize("NFC", "odd/café-nfc.jpg"), (360, 300), (_face("1:1"),), seed=18),
        Spec(unicodedata.normalize("NFD", "odd/café-nfd.jpg"), (360, 300), (LINE,), seed=19),
        Spec("odd/a=b+c%20d.jpg", (360, 300), (MODERATION,), seed=20),
        Spec("multi/stereo.jpg", (360, 300), (_face("1:1"), BOX), fmt="MPO", seed=23, frames=2),
        Spec("stray.jpg", (320, 240), (BOX,), seed=21, placement="outside"),
        Spec("old.jpg", (320, 240), (_face("3:4"),), seed=22, placement="archive"),
    ]
    return specs


def converted_specs() -> list[Spec]:
    """Formats Rekognition refuses and the job converts, some under a JPEG name, some multi-frame."""
    return [
        Spec("other/webp-inside.jpg", (320, 240), (BOX, _face("1:1")), fmt="WEBP", seed=30),
        Spec("other/real.webp", (320, 240), (LINE,), fmt="WEBP", seed=31),
        Spec("other/gif-inside.jpg", (360, 300), (BOX, _face("3:4")), fmt="GIF", seed=32),
        Spec("other/turned.tiff", (360, 240), (_face("3:4"), LINE), fmt="TIFF", orientation=6, seed=33),
        Spec("other/plain.bmp", (320, 240), (BOX,), fmt="BMP", seed=34),
        Spec("multi/animated.gif", (360, 300), (_face("1:1"), BOX), fmt="GIF", seed=35, frames=2),
        Spec("multi/pages.tif", (360, 300), (LINE, BOX), fmt="TIFF", seed=36, frames=2),
    ]


def _refused(
    name: str,
    data: bytes,
    fmt: str,
    error: str,
    size: tuple[int, int] | None = None,
    *,
    job_status: str = "rejected",
    job_error: str | None = None,
    from_header: bool = True,
) -> tuple[bytes, SampleTruth]:
    """A file nobody analyses: Rekognition says `error`; the job says `job_error` (default: the same)."""
    return data, SampleTruth(
        name=name,
        key=name,
        placement="prefix",
        format=fmt,
        size_bytes=len(data),
        stored_width=size[0] if size else None,
        stored_height=size[1] if size else None,
        upright_width=size[0] if size else None,
        upright_height=size[1] if size else None,
        expected_error=error,
        job_status=job_status,
        job_error=job_error or error,
        refused_from_header=from_header,
    )


def _solid_jpeg(size: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (150, 140, 130)).save(buf, "JPEG", **JPEG_OPTIONS)
    return buf.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims `width` x `height` (a decompression bomb if decoded)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def gif_claiming(width: int, height: int) -> bytes:
    """A 1-pixel GIF drawn on a `width` x `height` screen: Pillow's size is the screen's."""
    screen = struct.pack("<HHBBB", width, height, 0x80, 0, 0) + b"\0\0\0\xff\xff\xff"
    frame = b"," + struct.pack("<HHHHB", 0, 0, 1, 1, 0) + b"\x02\x02\x44\x01\x00"
    return b"GIF89a" + screen + frame + b";"


def bad_samples() -> list[tuple[bytes, SampleTruth]]:
    """Every file Rekognition refuses as stored: the ones the job refuses too, and the ones it converts."""
    img, _ = render_upright(Spec("x", (320, 240), (BOX,), seed=30))
    cut = encode(img, "JPEG", None)
    cut = cut[: len(cut) * 6 // 10]
    invalid, too_large, bomb = "InvalidImageFormatException", "ImageTooLargeException", "DecompressionBomb"
    return [
        # A truncated JPEG's header is intact: only decoding finds the damage, and the job leaves
        # decoding JPEGs to Rekognition.
        _refused("bad/truncated.jpg", cut, "JPEG", invalid, img.size, from_header=False),
        _refused("bad/zero.jpg", b"", "EMPTY", invalid, job_status="skipped", job_error="EmptyObject"),
        _refused("bad/text.jpg", b"this is not an image, just text with a .jpg name\n", "TEXT", invalid),
        _refused("bad/tiny.jpg", _solid_jpeg((60, 60)), "JPEG", "InvalidParameterException", (60, 60)),
        _refused("bad/wide.jpg", _solid_jpeg((10_001, 100)), "JPEG", too_large, (10_001, 100)),
        _refused("bad/bomb.png", png_claiming(20_000, 20_000), "PNG", too_large, (20_000, 20_000)),
        _refused("bad/bomb.gif", gif_claiming(9_999, 9_999), "GIF", invalid, (9_999, 9_999), job_error=bomb),
        *(_sample(spec) for spec in converted_specs()),
    ]


def oversized_samples() -> list[tuple[bytes, SampleTruth]]:
    """Objects over Rekognition's 15 MB S3 limit: not in `generate` (they would slow the demo down).

    A real JPEG header, then padding: the header reads as a 320x240 JPEG.
    """
    head = _solid_jpeg((320, 240))
    data = head + b"\0" * (15 * 1024 * 1024 + 1 - len(head))
    return [_refused("bad/huge.jpg", data, "JPEG", "ImageTooLargeException", (320, 240))]


HEAD_COVER = ("head_cover", 70, 26, None)
FACE_COVER = ("face_cover", 44, 30, None)


def ppe_samples() -> list[tuple[bytes, SampleTruth]]:
    """Persons with and without head and face covers (DetectProtectiveEquipment), in every Exif
    orientation and as a PNG, and an image too wide for it (4,200 px: over its 4,096 px, under the
    general 10,000). Not in `generate`: tests of the `ppe` analysis upload them."""
    specs = [
        Spec(f"ppe/exif-{o}.jpg", rects=(_face("3:4"), HEAD_COVER, FACE_COVER), orientation=o, seed=40 + o)
        for o in range(1, 9)
    ]
    specs += [
        Spec("ppe/crew.png", (560, 400), (_face("1:1"), _face("3:4"), HEAD_COVER), fmt="PNG", seed=49),
        Spec("ppe/bare.jpg", (400, 300), (_face("1:1"), BOX), seed=50),
        Spec("ppe/too-wide.jpg", (4200, 120), (_face("3:4"), BOX), seed=51),
    ]
    return [_sample(spec) for spec in specs]


#: Face users (`--users s3://BUCKET/people/`): one folder per person, each photo one face of the
#: person's identity group; "grace hopper" has a space, so its UserId is escaped (`grace:20hopper`).
PEOPLE = {"ada": "3:4", "grace hopper": "1:1"}


def people_samples() -> list[tuple[bytes, SampleTruth]]:
    """Reference photos under `people/<person>/`, the last of Ada's (`people/ada/later.png`) meant to be
    added by a later run. Not in `generate`: tests of `user_search` and the demo upload them."""
    specs = [
        Spec("people/ada/portrait.jpg", (320, 260), (_face("3:4"),), seed=60),
        Spec("people/ada/turned.jpg", (320, 260), (_face("3:4"), BOX), orientation=6, seed=61),
        Spec("people/grace hopper/badge.jpg", (320, 260), (_face("1:1"), LINE), seed=62),
        Spec("people/ada/later.png", (300, 240), (_face("3:4"),), fmt="PNG", seed=63),
    ]
    return [_sample(spec) for spec in specs]


def seed_people(s3: Any, bucket: str, prefix: str = "") -> list[str]:
    """Upload `people_samples` under `prefix` (so `--users s3://BUCKET/<prefix>people/`); their keys."""
    keys = []
    for data, truth in people_samples():
        s3.put_object(Bucket=bucket, Key=prefix + truth.name, Body=data)
        keys.append(prefix + truth.name)
    return keys


def generate(outdir: Path, *, oversized: bool = False) -> GroundTruth:
    """Write every sample under `outdir` plus `ground_truth.json`; return the ground truth.

    `oversized` adds the samples over 15 MB (`oversized_samples`).
    """
    entries = [_sample(spec) for spec in good_specs()] + bad_samples()
    if oversized:
        entries += oversized_samples()
    for data, sample in entries:
        path = outdir / sample.name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    truth = GroundTruth(
        tuple(t for _, t in entries),
        extra={
            "celebrity": CELEBRITY_NAME,
            "line_words": list(LINE_WORDS),
            "word_spans": [list(s) for s in WORD_SPANS],
        },
    )
    (outdir / "ground_truth.json").write_text(truth.to_json(), encoding="utf-8")
    return truth


def load(outdir: Path) -> GroundTruth:
    return GroundTruth.from_json((outdir / "ground_truth.json").read_text(encoding="utf-8"))
