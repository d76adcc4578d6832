"""Wire models: pydantic mirrors of OpenAI's objects and request bodies.

Stored objects keep exactly these shapes (a record's body is the wire object), so converting a
record is `Model.model_validate(record.body)`. Requests accept unknown fields (newer SDKs send
new ones) and log them instead of failing.
"""
