"""The JSON Schemas of the documents this project writes, generated from their msgspec Structs and kept in docs/
(tests/test_json_schemas.py fails when a file is stale, saying how to write it again):

    python -m pytest_mlperf.host.schemas        # writes every schema file from the types
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import msgspec

DOCS = Path(__file__).resolve().parents[2] / "docs"


def describe(text: str) -> msgspec.Meta:
    """A field's description in the schema (`Annotated[str, describe("...")]`)."""
    return msgspec.Meta(description=text)


def schema_text(kind: type) -> str:
    """`kind`'s JSON Schema as the docs/ file holds it: sorted keys, two-space indent, a final newline."""
    schema: dict[str, Any] = msgspec.json.schema(kind)
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def documents() -> dict[str, type]:
    """Each schema file's name under docs/ and the Struct it is generated from."""
    from pytest_mlperf.host.baselines.document import BaselineDocument
    from pytest_mlperf.host.results.document import ResultsDocument

    return {"results.schema.json": ResultsDocument, "baseline.schema.json": BaselineDocument}


def main() -> int:
    for name, kind in documents().items():
        (DOCS / name).write_text(schema_text(kind))
        print(f"wrote docs/{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
