"""``python -m myagent.protocol`` prints the published protocol document (``schema.json``)."""

from .schema import schema_json

print(schema_json(), end="")
