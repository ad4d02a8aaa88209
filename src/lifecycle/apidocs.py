"""How the task routes describe themselves to the ecosystem: an OpenAPI path item per task (the service's
/docs.json and the Swagger page at /) and a route in BentoML's client schema (/schema.json, what
`bentoml.SyncHTTPClient` reads to find endpoints)."""

from __future__ import annotations

from typing import Any

from lifecycle.tasks import Task

ERROR_SCHEMA = {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}
ERRORS = {
    "400": "bad input: a malformed body, a missing field, two files, an unreadable or too large input",
    "413": "the upload is over serving.max_upload_mb",
    "415": "not multipart/form-data, or a file that is not the medium the task reads",
    "503": "over capacity: try again after Retry-After seconds",
}


def answer_schema(task: Task) -> dict[str, Any]:
    """The task's answer and the tag of the model that gave it."""
    schema = task.outputs.answer_schema
    return {
        **schema,
        "required": [*schema.get("required", []), "model"],
        "properties": {**schema.get("properties", {}), "model": {"type": "string"}},
    }


def client_route(task: Task) -> dict[str, Any]:
    """A task route as /schema.json describes an API: a file field makes bentoml's client send multipart."""
    field = task.codec.input_field
    return {
        "name": task.spec.endpoint,
        "route": f"/{task.spec.endpoint}",
        "description": f"{task.name}: POST the input file in the multipart field '{field}'",
        "input": {
            "type": "object",
            "properties": {field: {"type": "file", "format": ", ".join(task.codec.media_types)}},
            "required": [field],
        },
        "output": answer_schema(task),
    }


def openapi_path(task: Task) -> dict[str, Any]:
    """A task route as an OpenAPI path item: the multipart file field, its media types, the query parameters,
    the answer's schema and the errors, each a JSON object with a message."""
    field = task.codec.input_field
    body = {"type": "object", "required": [field], "properties": {field: {"type": "string", "format": "binary"}}}
    errors = {
        code: {"description": why, "content": {"application/json": {"schema": ERROR_SCHEMA}}}
        for code, why in ERRORS.items()
    }
    return {
        "post": {
            "tags": ["Service APIs"],
            "summary": f"{task.name}: answer one {field} file",
            "operationId": task.spec.endpoint,
            "parameters": [
                {"name": name, "in": "query", "required": False, "schema": schema}
                for name, schema in task.outputs.query_schema.items()
            ],
            "requestBody": {
                "required": True,
                "content": {
                    "multipart/form-data": {
                        "schema": body,
                        "encoding": {field: {"contentType": ", ".join(task.codec.media_types)}},
                    }
                },
            },
            "responses": {
                "200": {"description": "the answer", "content": {"application/json": {"schema": answer_schema(task)}}},
                **errors,
            },
        }
    }
