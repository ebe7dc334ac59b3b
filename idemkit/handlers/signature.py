"""Signatures of decorated handlers: the handler's own, plus what idemkit needs injected.

FastAPI and Litestar build a handler's parameters from its signature. The decorator's
wrapper shows the handler's signature with its annotations resolved (the wrapper lives in
another module, so string annotations could not be resolved later) and adds keyword-only
parameters for what idemkit needs from the framework (the request, the response, background
tasks) where the handler does not ask for them itself. :meth:`Injected.take` hands idemkit
those values and removes the ones the handler did not ask for.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from idemkit.errors import ConfigurationError

__all__ = ["Injected", "Slot", "extend_signature", "resolved_signature"]

ParameterTest = Callable[[inspect.Parameter], bool]


def resolved_signature(fn: Callable[..., Any]) -> inspect.Signature:
    """``fn``'s signature with string annotations evaluated in ``fn``'s module where they can
    be; the others stay strings (frameworks resolve them in the same module, through the
    wrapper's ``__wrapped__``)."""
    try:
        return inspect.signature(fn, eval_str=True)
    except NameError:
        pass
    signature = inspect.signature(fn)
    namespace = getattr(inspect.unwrap(fn), "__globals__", {})

    def resolve(annotation: Any) -> Any:
        if not isinstance(annotation, str):
            return annotation
        try:
            return eval(annotation, namespace)
        except Exception:
            return annotation

    return signature.replace(
        parameters=[
            p.replace(annotation=resolve(p.annotation)) for p in signature.parameters.values()
        ],
        return_annotation=resolve(signature.return_annotation),
    )


def annotated_as(kind: type) -> ParameterTest:
    def test(parameter: inspect.Parameter) -> bool:
        annotation = parameter.annotation
        return isinstance(annotation, type) and issubclass(annotation, kind)

    return test


def named(name: str) -> ParameterTest:
    return lambda parameter: parameter.name == name


@dataclass(frozen=True, slots=True)
class Slot:
    """One value idemkit needs: found in a handler parameter passing ``test``, or added as a
    keyword-only parameter ``name: annotation``."""

    name: str
    test: ParameterTest
    annotation: Any


@dataclass(slots=True)
class Injected:
    slots: tuple[Slot, ...]
    # slot name -> the handler's own parameter that carries it (kept in the call)
    own: dict[str, str] = field(default_factory=dict)

    def take(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """The injected values by slot name; removes those the handler did not declare."""
        values: dict[str, Any] = {}
        for slot in self.slots:
            parameter = self.own.get(slot.name)
            if parameter is not None:
                values[slot.name] = kwargs.get(parameter)
            else:
                values[slot.name] = kwargs.pop(slot.name, None)
        return values


def extend_signature(fn: Callable[..., Any], injected: Injected) -> inspect.Signature:
    """``fn``'s resolved signature plus a keyword-only parameter per slot it lacks."""
    signature = resolved_signature(fn)
    parameters = list(signature.parameters.values())
    names = {p.name for p in parameters}
    added: list[inspect.Parameter] = []
    for slot in injected.slots:
        own = next((p for p in parameters if slot.test(p)), None)
        if own is not None:
            injected.own[slot.name] = own.name
            continue
        if slot.name in names:
            raise ConfigurationError(
                f"{fn.__qualname__} has a parameter {slot.name!r} that idemkit needs for "
                "itself; rename it"
            )
        added.append(
            inspect.Parameter(slot.name, inspect.Parameter.KEYWORD_ONLY, annotation=slot.annotation)
        )
    var_keyword = [p for p in parameters if p.kind is inspect.Parameter.VAR_KEYWORD]
    regular = [p for p in parameters if p.kind is not inspect.Parameter.VAR_KEYWORD]
    return signature.replace(parameters=[*regular, *added, *var_keyword])


def annotations_of(signature: inspect.Signature) -> Mapping[str, Any]:
    annotations = {
        name: p.annotation
        for name, p in signature.parameters.items()
        if p.annotation is not inspect.Parameter.empty
    }
    if signature.return_annotation is not inspect.Signature.empty:
        annotations["return"] = signature.return_annotation
    return annotations
