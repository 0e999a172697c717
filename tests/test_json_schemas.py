"""The JSON Schema files in docs/ are the ones the documents' types generate (host/schemas.py): a field added to
results.json or to a baseline file without its schema fails here, saying how to write the files again."""

from __future__ import annotations

import pytest

from pytest_mlperf.host import schemas as json_schemas

DOCUMENTS = json_schemas.documents()


@pytest.mark.parametrize("name", list(DOCUMENTS))
def test_the_schema_file_is_the_one_the_types_generate(name: str) -> None:
    written = (json_schemas.DOCS / name).read_text()
    assert written == json_schemas.schema_text(DOCUMENTS[name]), (
        f"docs/{name} is stale: python -m pytest_mlperf.host.schemas")
