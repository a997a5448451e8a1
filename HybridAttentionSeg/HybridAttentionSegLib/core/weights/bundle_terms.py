"""Presentation defaults for labels of imported bundles: SNOMED CT terms by name, a colour palette."""

_SCT_ORGAN = {"scheme": "SCT", "code": "123037004", "meaning": "Anatomical Structure"}
_SCT_ALTERED = {"scheme": "SCT", "code": "49755003", "meaning": "Morphologically Altered Structure"}
_RIGHT = {"scheme": "SCT", "code": "24028007", "meaning": "Right"}
_LEFT = {"scheme": "SCT", "code": "7771000", "meaning": "Left"}


def _term(code: str, meaning: str, category=_SCT_ORGAN, modifier=None) -> dict:
    out = {"category": category, "type": {"scheme": "SCT", "code": code, "meaning": meaning}}
    if modifier:
        out["modifier"] = modifier
    return out


#: lower-case label name -> terminology (SNOMED CT), for labels of imported bundles
KNOWN_TERMS = {
    "spleen": _term("78961009", "Spleen"),
    "liver": _term("10200004", "Liver"),
    "right kidney": _term("64033007", "Kidney", modifier=_RIGHT),
    "left kidney": _term("64033007", "Kidney", modifier=_LEFT),
    "left kideny": _term("64033007", "Kidney", modifier=_LEFT),
    "kidney": _term("64033007", "Kidney"),
    "gallbladder": _term("28231008", "Gallbladder"),
    "esophagus": _term("32849002", "Esophagus"),
    "stomach": _term("69695003", "Stomach"),
    "aorta": _term("15825003", "Aorta"),
    "ivc": _term("64131007", "Inferior vena cava"),
    "inferior vena cava": _term("64131007", "Inferior vena cava"),
    "pancreas": _term("15776009", "Pancreas"),
    "portal and splenic veins": _term("32764006", "Portal vein"),
    "right adrenal gland": _term("23451007", "Adrenal gland", modifier=_RIGHT),
    "left adrenal gland": _term("23451007", "Adrenal gland", modifier=_LEFT),
    "edema": _term("79654002", "Edema", _SCT_ALTERED),
    "necrosis": _term("6574001", "Necrosis", _SCT_ALTERED),
}

PALETTE = [
    (0.90, 0.30, 0.24),
    (0.18, 0.55, 0.85),
    (0.30, 0.75, 0.35),
    (0.95, 0.77, 0.20),
    (0.61, 0.35, 0.71),
    (0.10, 0.74, 0.74),
    (0.95, 0.50, 0.15),
    (0.85, 0.40, 0.65),
    (0.55, 0.45, 0.30),
    (0.45, 0.65, 0.25),
    (0.35, 0.35, 0.80),
    (0.80, 0.80, 0.45),
    (0.60, 0.20, 0.20),
    (0.20, 0.45, 0.45),
    (0.70, 0.55, 0.85),
]
