"""A serializer whose fields are built and bound once per class, not once per request."""

from __future__ import annotations

from functools import cache
from typing import Any

from rest_framework import serializers
from rest_framework.utils.serializer_helpers import BindingDict


# No docstring: drf-spectacular would show it in /openapi.json as every subclass's description.
class SharedFieldsSerializer(serializers.Serializer):
    # Input rules whose fields every instance shares, for serializers on a hot path.
    #
    # DRF deep-copies the declared fields for every instance (docs/benchmarks.md: what it costs a POST),
    # so that an instance may change its own fields. These serializers never do, and sharing
    # is safe, with threads too: bind() only sets the field's name, source, label and parent,
    # and validating reads a field, never writes it (the validators, which DRF builds on first
    # use, are built here, before the fields are shared). The parent is a blank instance of the
    # class, so a field's root, context and `partial` come from it rather than from the instance
    # validating: hence no `partial` and no `context` here.

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if kwargs.get("partial") or kwargs.get("context"):
            raise TypeError(f"{type(self).__name__} shares its fields: it takes no partial or context.")
        super().__init__(*args, **kwargs)

    @property
    def fields(self) -> BindingDict:  # DRF's is a cached_property
        return _bound_fields(type(self))


@cache  # two threads may both build them the first time: either result is as good
def _bound_fields(serializer_class: type[SharedFieldsSerializer]) -> BindingDict:
    blank = serializer_class()
    fields = BindingDict(blank)  # binds each field to `blank`, as DRF does to the instance validating
    for name, field in blank.get_fields().items():
        fields[name] = field
        _build_validators(field)
    return fields


def _build_validators(field: serializers.Field) -> None:
    field.validators  # noqa: B018 - a lazy property: built now, so validating never writes
    child = getattr(field, "child", None)  # a DictField's or ListField's
    if child is not None:
        _build_validators(child)
