"""Which attention maps a model card offers: shipped, withheld (failed the faithfulness test) or not evaluated.

Policy ("prefer removing a method from a model's card to shipping noise", issue 11):

* A card with a generated ``explanations`` block (the bundled demo models) carries an ``offer`` section written
  by ``hybridseg explain-eval --write-card`` from the measured verdicts (:func:`offer_from_verdicts`), never by
  hand: a class-agnostic method is **shipped** when it was faithful on validation, a class-dependent one is
  shipped **for the classes** it was faithful on; everything else is **withheld**, with the reasons.
* Withheld maps are not offered by default (the Slicer panel, the demo, ``segment`` without ``--attention``);
  asking for one fails with one line naming why and the remedy, unless the caller opts in explicitly
  (``segment --allow-unfaithful``, ``Logic.process(allowUnfaithful=True)``) for research. A map computed that
  way is still labelled "not faithful on validation" wherever it is shown.
* A card without a block (the downloadable catalog models, imported models) offers every method of its
  architecture, labelled **not evaluated**; a block for other weights (stale) is treated the same way.
* ``uncertainty`` is not an explanation of a decision: always offered, never scored.

Pure Python on the card's JSON (``ModelCard.to_json()`` or the dict the worker lists), so the Slicer side
(which never imports torch) applies the same rules as the command line and the worker.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UserInputError

#: attention maps that are not explanations of a decision and are therefore not scored (always offered)
NOT_EXPLANATIONS = ("uncertainty",)

SHIPPED, WITHHELD, NOT_EVALUATED, STALE, NOT_EXPLANATION = (
    "shipped", "withheld", "not evaluated", "stale", "not an explanation")
#: how a caller opts in to a withheld map, per front end (named in the refusal)
OPT_IN_CLI = "--allow-unfaithful"


class WithheldMethodError(UserInputError):
    """A withheld map was requested without the explicit opt-in (exit 2 on the command line)."""


@dataclass(frozen=True)
class Offer:
    """What a card offers for one method.

    Attributes:
        method: method name.
        status: ``shipped``, ``withheld``, ``not evaluated``, ``stale`` or ``not an explanation``.
        classes: class names it is shipped for (class-dependent maps with an evaluated block); ``None``: no
            class restriction (class-agnostic, or not evaluated).
        withheld: ``{class name or "": reasons}`` of the withheld parts ("" = the whole class-agnostic map).
    """

    method: str
    status: str
    classes: tuple[str, ...] | None = None
    withheld: dict | None = None

    @property
    def offered(self) -> bool:
        """Offered by default (in the panel, the demo, as the natural method)."""
        return self.status != WITHHELD


def _data(card) -> dict:
    """The card's JSON (a dict as listed by the worker, or a ``ModelCard``)."""
    if isinstance(card, dict):
        return card
    return {**card.data, "attention_methods": list(card.attention_methods)}


def offer_from_verdicts(items: list[dict]) -> dict:
    """The ``offer`` section of an ``explanations`` block, from its evaluated ``methods`` items.

    ``{"rule", "shipped": [{"method", "classes"}], "withheld": [{"method", "class", "reasons"}]}``: a method
    with only class-agnostic items is shipped when every item passed (``classes``: null); a class-dependent
    method is shipped for the classes whose item passed (``classes``: their names) and withheld for the rest.
    """
    shipped, withheld = [], []
    for method in dict.fromkeys(item["method"] for item in items):
        own = [item for item in items if item["method"] == method]
        passed = [item for item in own if item["faithful"]]
        for item in own:
            if not item["faithful"]:
                withheld.append({"method": method, "class": item.get("class"),
                                 "reasons": list(item.get("reasons", []))})
        if not passed:
            continue
        if all(item.get("class") is None for item in own):
            if len(passed) == len(own):
                shipped.append({"method": method, "classes": None})
        else:
            shipped.append({"method": method, "classes": [item["class"] for item in passed]})
    return {"rule": "shipped when faithful on validation (for class maps: per class); withheld maps are "
                    "computed only on explicit request and stay labelled",
            "shipped": shipped, "withheld": withheld}


def _stale(data: dict, block: dict) -> bool:
    return block.get("weights_sha256") != (data.get("weights") or {}).get("sha256")


def offers(card) -> dict[str, Offer]:
    """``{method: Offer}`` for every attention method of the card's architecture, in the architecture's order."""
    data = _data(card)
    block = data.get("explanations") or {}
    offer = block.get("offer")
    out = {}
    for method in data.get("attention_methods", []):
        if method in NOT_EXPLANATIONS:
            out[method] = Offer(method, NOT_EXPLANATION)
        elif not block or offer is None:
            out[method] = Offer(method, NOT_EVALUATED)
        elif _stale(data, block):
            out[method] = Offer(method, STALE)
        else:
            shipped = next((s for s in offer.get("shipped", []) if s["method"] == method), None)
            withheld = {(w.get("class") or ""): list(w.get("reasons", []))
                        for w in offer.get("withheld", []) if w["method"] == method}
            if shipped is None:
                out[method] = Offer(method, WITHHELD, None, withheld or {"": ["not evaluated on validation"]})
            else:
                classes = tuple(shipped["classes"]) if shipped.get("classes") is not None else None
                out[method] = Offer(method, SHIPPED, classes, withheld or None)
    return out


def offered_methods(card) -> list[str]:
    """Methods offered by default, in the architecture's order (withheld ones left out)."""
    return [m for m, offer in offers(card).items() if offer.offered]


def natural_method(card) -> str | None:
    """The method computed when none is named: the first offered one (the architecture's own map first)."""
    methods = offered_methods(card)
    return methods[0] if methods else None


def allowed_classes(card, method: str) -> tuple[str, ...] | None:
    """Class names a class-dependent map is shipped for; ``None``: any class."""
    offer = offers(card).get(method)
    return offer.classes if offer is not None and offer.status == SHIPPED else None


def default_classes(card, methods) -> list[str] | None:
    """Classes the default target ("largest structure") may be chosen from, for these methods together.

    ``None``: any class. Raises :class:`WithheldMethodError` when the methods are shipped for disjoint classes.
    """
    allowed = None
    for method in methods:
        classes = allowed_classes(card, method)
        if classes is not None:
            allowed = list(classes) if allowed is None else [c for c in allowed if c in classes]
    if allowed == []:
        message = (f"{', '.join(methods)} are shipped for different classes of {_data(card).get('id')}; "
                   "request them in separate runs, or name a class with --class")
        raise WithheldMethodError(message)
    return allowed


def withheld_reason(card, method: str, class_name: str | None = None) -> str | None:
    """Why ``method`` (for ``class_name``, if class-dependent) is withheld; ``None`` when it is offered."""
    offer = offers(card).get(method)
    withheld = (offer.withheld if offer is not None else None) or {}
    if offer is not None and offer.status == WITHHELD:
        if class_name in withheld or "" in withheld:
            return "; ".join(withheld.get(class_name) or withheld[""])
        return "; ".join(f"{name}: {'; '.join(reasons)}" for name, reasons in withheld.items())
    if offer is not None and offer.classes is not None and class_name is not None and class_name not in offer.classes:
        return "; ".join(withheld.get(class_name) or ["not evaluated on validation for this class"])
    return None


def check_request(card, methods, class_name: str | None, allow_unfaithful: bool = False,
                  opt_in: str = OPT_IN_CLI) -> None:
    """Refuse a withheld map (one line: why and the remedy) unless ``allow_unfaithful``.

    ``class_name``: the requested class (canonical name) or ``None`` (the default target, which
    :func:`default_classes` keeps inside the shipped classes).
    """
    if allow_unfaithful:
        return
    data = _data(card)
    for method in methods:
        reason = withheld_reason(card, method, class_name)
        if reason is None:
            continue
        offered = [m for m in offered_methods(card) if m != method]
        classes = allowed_classes(card, method)
        target = f" for {class_name!r}" if classes is not None and class_name else ""
        remedies = ([f"--class {' or '.join(repr(c) for c in classes)}"] if classes else []) + (
            [f"another method ({', '.join(offered)})"] if offered else [])
        message = (f"{method}{target} is withheld on {data.get('id')}: not faithful on validation ({reason}); "
                   f"use {', '.join(remedies) + ', or ' if remedies else ''}{opt_in} to compute it anyway "
                   "(the result stays labelled)")
        raise WithheldMethodError(message)
