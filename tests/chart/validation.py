"""Validate rendered objects: core kinds with kubernetes-validate, custom resources against the
openAPIV3Schema of the vendored CRDs (tests/chart/crds, see its README).

Both are strict: an unknown field fails. The API server would prune (or, with strict field
validation, refuse) a field a CRD does not declare, so a typo like `pollingInterva` would
silently do nothing; here it fails the test.
"""

from __future__ import annotations

import copy
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

from tests.chart.rendering import KUBE_VERSION, Obj

CRDS = Path(__file__).parent / "crds"


def _closed(schema: Any) -> Any:
    """The schema with `additionalProperties: false` wherever it lists properties and allows no others."""
    if isinstance(schema, list):
        return [_closed(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    closed = {key: _closed(value) for key, value in schema.items()}
    if (
        "properties" in schema
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        closed["additionalProperties"] = False
    return closed


@cache
def _crd_validators() -> dict[tuple[str, str], jsonschema.protocols.Validator]:
    """(apiVersion, kind) -> a validator of the served versions' openAPIV3Schema (OpenAPI 3.0 ~ draft 4)."""
    validators: dict[tuple[str, str], jsonschema.protocols.Validator] = {}
    for path in sorted(CRDS.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if version.get("served"):
                schema = _closed(copy.deepcopy(version["schema"]["openAPIV3Schema"]))
                validators[(f"{group}/{version['name']}", kind)] = jsonschema.Draft4Validator(schema)
    return validators


def validate(obj: Obj) -> None:
    """Raise AssertionError naming the object and the field when `obj` is not valid."""
    name = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
    validator = _crd_validators().get((obj["apiVersion"], obj["kind"]))
    if validator is not None:
        errors = sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path))
        assert not errors, f"{name}: " + "; ".join(
            f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in errors
        )
        return
    try:
        kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(str(part) for part in exc.path)
        raise AssertionError(f"{name} (Kubernetes {exc.version}): {path}: {exc.message}") from None
    except kubernetes_validate.SchemaNotFoundError as exc:
        raise AssertionError(f"{name}: no schema to validate against: {exc.message}") from None
