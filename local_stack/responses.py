"""Rendering what `vision` saw into Rekognition's response structures (names from botocore's output shapes).

Pure functions of an `Analysis`; every number is derived from the pixels, so the same image gives the
same answer. Boxes are ratios of the upright frame, as Rekognition returns them for Exif-rotated JPEGs.
"""

from __future__ import annotations

from typing import Any

from local_stack.vision import Analysis, DominantColor, PixelBox, RegionStats, SeenObject

#: Landmarks at fixed places inside the face box (fractions of its width and height, upright frame).
LANDMARKS: dict[str, tuple[float, float]] = {
    "eyeLeft": (0.30, 0.35),
    "eyeRight": (0.70, 0.35),
    "nose": (0.50, 0.55),
    "mouthLeft": (0.35, 0.75),
    "mouthRight": (0.65, 0.75),
    "upperJawlineLeft": (0.05, 0.30),
    "upperJawlineRight": (0.95, 0.30),
    "chinBottom": (0.50, 0.98),
}

CSS_COLORS: dict[str, tuple[int, int, int]] = {
    "black": (0, 0, 0),
    "white": (255, 255, 255),
    "gray": (128, 128, 128),
    "silver": (192, 192, 192),
    "dimgray": (105, 105, 105),
    "red": (255, 0, 0),
    "maroon": (128, 0, 0),
    "orange": (255, 165, 0),
    "darkorange": (255, 140, 0),
    "yellow": (255, 255, 0),
    "olive": (128, 128, 0),
    "lime": (0, 255, 0),
    "green": (0, 128, 0),
    "teal": (0, 128, 128),
    "cyan": (0, 255, 255),
    "blue": (0, 0, 255),
    "navy": (0, 0, 128),
    "magenta": (255, 0, 255),
    "purple": (128, 0, 128),
    "pink": (255, 192, 203),
    "brown": (165, 42, 42),
    "beige": (245, 245, 220),
    "tan": (210, 180, 140),
    "khaki": (240, 230, 140),
    "lightsteelblue": (176, 196, 222),
    "rosybrown": (188, 143, 143),
    "darkkhaki": (189, 183, 107),
}
SIMPLIFIED_COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (240, 140, 20),
    "yellow": (240, 220, 40),
    "green": (40, 180, 40),
    "blue": (40, 60, 220),
    "purple": (140, 40, 160),
    "pink": (240, 150, 190),
    "brown": (140, 90, 50),
    "black": (20, 20, 20),
    "white": (240, 240, 240),
    "grey": (128, 128, 128),
}


def confidence(obj: SeenObject) -> float:
    """99.0 .. 99.9, higher for a cleaner (more solid) component."""
    return round(99.0 + 0.9 * obj.box.fill, 4)


def bounding_box(box: PixelBox, analysis: Analysis) -> dict[str, float]:
    return {
        "Width": box.width / analysis.width,
        "Height": box.height / analysis.height,
        "Left": box.left / analysis.width,
        "Top": box.top / analysis.height,
    }


def polygon(box: dict[str, float]) -> list[dict[str, float]]:
    left, top, right, bottom = box["Left"], box["Top"], box["Left"] + box["Width"], box["Top"] + box["Height"]
    return [
        {"X": left, "Y": top},
        {"X": right, "Y": top},
        {"X": right, "Y": bottom},
        {"X": left, "Y": bottom},
    ]


def _nearest(rgb: tuple[int, int, int], table: dict[str, tuple[int, int, int]]) -> str:
    return min(table, key=lambda name: sum((a - b) ** 2 for a, b in zip(rgb, table[name], strict=True)))


def dominant_color(color: DominantColor) -> dict[str, Any]:
    rgb = (color.red, color.green, color.blue)
    return {
        "Red": color.red,
        "Blue": color.blue,
        "Green": color.green,
        "HexCode": "#{:02x}{:02x}{:02x}".format(*rgb),
        "CSSColor": _nearest(rgb, CSS_COLORS),
        "SimplifiedColor": _nearest(rgb, SIMPLIFIED_COLORS),
        "PixelPercent": color.pixel_percent,
    }


def image_quality(stats: RegionStats) -> dict[str, float]:
    return {"Brightness": stats.brightness, "Sharpness": stats.sharpness, "Contrast": stats.contrast}


def landmarks(obj: SeenObject, analysis: Analysis) -> list[dict[str, Any]]:
    box = obj.box
    return [
        {
            "Type": name,
            "X": (box.left + fx * box.width) / analysis.width,
            "Y": (box.top + fy * box.height) / analysis.height,
        }
        for name, (fx, fy) in LANDMARKS.items()
    ]


def _flag(value: bool, conf: float = 98.5) -> dict[str, Any]:
    return {"Value": value, "Confidence": conf}


def _emotions(obj: SeenObject) -> list[dict[str, Any]]:
    happy = obj.stats.brightness > 50  # a brighter face "smiles": deterministic, from the pixels
    first, second = ("HAPPY", "CALM") if happy else ("CALM", "HAPPY")
    return [
        {"Type": first, "Confidence": 92.5},
        {"Type": second, "Confidence": 5.25},
        {"Type": "SURPRISED", "Confidence": 1.5},
    ]


def _age_range(obj: SeenObject) -> dict[str, int]:
    low = 20 + int(obj.box.aspect * 17) % 30
    return {"Low": low, "High": low + 8}


def _gender(obj: SeenObject) -> dict[str, Any]:
    value = "Female" if obj.kind == "celebrity" or obj.box.aspect < 1 else "Male"
    return {"Value": value, "Confidence": 99.25}


#: Attribute name in the request -> (response member, how to compute it).
OPTIONAL_ATTRIBUTES = {
    "AGE_RANGE": ("AgeRange", _age_range),
    "SMILE": ("Smile", lambda o: _flag(o.stats.brightness > 50)),
    "EYEGLASSES": ("Eyeglasses", lambda o: _flag(False)),
    "SUNGLASSES": ("Sunglasses", lambda o: _flag(False)),
    "GENDER": ("Gender", _gender),
    "BEARD": ("Beard", lambda o: _flag(False)),
    "MUSTACHE": ("Mustache", lambda o: _flag(False)),
    "EYES_OPEN": ("EyesOpen", lambda o: _flag(True)),
    "MOUTH_OPEN": ("MouthOpen", lambda o: _flag(False)),
    "EMOTIONS": ("Emotions", _emotions),
    "FACE_OCCLUDED": ("FaceOccluded", lambda o: _flag(False, 97.0)),
    "EYE_DIRECTION": ("EyeDirection", lambda o: {"Yaw": 0.0, "Pitch": 0.0, "Confidence": 96.0}),
}


def face_detail(obj: SeenObject, analysis: Analysis, attributes: list[str] | None) -> dict[str, Any]:
    """A FaceDetail; DEFAULT members always, the others per requested attribute (ALL = every one)."""
    wanted = set(attributes or ["DEFAULT"])
    detail: dict[str, Any] = {
        "BoundingBox": bounding_box(obj.box, analysis),
        "Landmarks": landmarks(obj, analysis),
        "Pose": {"Roll": 0.0, "Yaw": 0.0, "Pitch": 0.0},
        "Quality": {"Brightness": obj.stats.brightness, "Sharpness": obj.stats.sharpness},
        "Confidence": confidence(obj),
    }
    for name, (member, compute) in OPTIONAL_ATTRIBUTES.items():
        if "ALL" in wanted or name in wanted:
            detail[member] = compute(obj)
    return detail


def compared_face(obj: SeenObject, analysis: Analysis) -> dict[str, Any]:
    return {
        "BoundingBox": bounding_box(obj.box, analysis),
        "Confidence": confidence(obj),
        "Landmarks": landmarks(obj, analysis),
        "Pose": {"Roll": 0.0, "Yaw": 0.0, "Pitch": 0.0},
        "Quality": {"Brightness": obj.stats.brightness, "Sharpness": obj.stats.sharpness},
        "Emotions": _emotions(obj),
        "Smile": _flag(obj.stats.brightness > 50),
    }
