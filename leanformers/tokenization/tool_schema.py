"""Tools given as Python functions: a tool's JSON schema from its type hints and Google-style docstring."""

import json
import re

JSON_TYPES = {int: "integer", float: "number", str: "string", bool: "boolean", type(None): "null",
              list: "array", tuple: "array", dict: "object"}


def json_schema_of_hint(hint, where: str) -> dict:
    """The JSON schema of a type hint: scalars, list[...], tuple[...], dict[...], unions, Optional, Literal."""
    import types
    import typing

    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is typing.Any:
        return {}
    if origin is None and hint in JSON_TYPES:
        return {"type": JSON_TYPES[hint]}
    if origin in (typing.Union, types.UnionType):
        parts = [json_schema_of_hint(a, where) for a in args if a is not type(None)]
        if len(parts) == 1:
            schema = parts[0]
        elif all(p.keys() == {"type"} and isinstance(p["type"], str) for p in parts):
            names = sorted({p["type"] for p in parts})
            schema = {"type": names[0] if len(names) == 1 else names}
        else:
            schema = {"anyOf": parts}
        if type(None) in args:
            schema["nullable"] = True
        return schema
    if origin is typing.Literal and args:
        kinds = list(dict.fromkeys(JSON_TYPES[type(a)] for a in args))
        return {"type": kinds[0] if len(kinds) == 1 else kinds, "enum": list(args)}
    if origin is list:
        return {"type": "array", "items": json_schema_of_hint(args[0], where)} if args else {"type": "array"}
    if origin is tuple and args and ... not in args:
        return {"type": "array", "prefixItems": [json_schema_of_hint(a, where) for a in args]}
    if origin is dict:
        return {"type": "object", **({"additionalProperties": json_schema_of_hint(args[1], where)} if args else {})}
    raise TypeError(f"{where}: cannot describe the type hint {hint!r} in JSON schema; use int, float, str, bool, "
                    "list, dict, Optional, Union or Literal, or pass the tool as a JSON-schema dict")


def get_json_schema(func) -> dict:
    """A tool's JSON schema from a function's type hints and Google-style docstring (description, Args:, Returns:)."""
    import inspect
    import typing

    name = getattr(func, "__name__", "tool")
    doc = inspect.getdoc(func)
    if not doc:
        raise ValueError(f"tool {name!r} has no docstring; describe it and each argument (Google style, 'Args:')")
    description = re.match(r"(.*?)\s*(?:Args:|Returns:|Raises:|\Z)", doc, re.DOTALL).group(1).strip()
    args_block = re.search(r"\n\s*Args:\n(.*?)\s*(?:Returns:|Raises:|\Z)", doc, re.DOTALL)
    returns = re.search(r"\n\s*Returns:\n\s*(.*?)\s*(?:Raises:|\Z)", doc, re.DOTALL)
    arg_docs = {}
    if args_block:
        entries = re.findall(r"(?:^|\n)([ \t]*)(\w+)(?:[ \t]*\([^()\n]*\))?:\s*(.*?)\s*"
                             r"(?=\n(?!\1[ \t])[ \t]*\w+(?:[ \t]*\([^()\n]*\))?:|\Z)",
                             "\n".join(line for line in args_block.group(1).split("\n") if line.strip()), re.DOTALL)
        arg_docs = {arg: re.sub(r"\s*\n+\s*", " ", text.strip()) for _, arg, text in entries}
    hints = typing.get_type_hints(func)
    properties, required = {}, []
    for param in inspect.signature(func).parameters.values():
        if param.name in ("self", "cls") and param.annotation is inspect.Parameter.empty:
            continue
        if param.name not in hints:
            raise TypeError(f"tool {name!r}: argument {param.name!r} has no type hint")
        if param.name not in arg_docs:
            raise ValueError(f"tool {name!r}: the docstring's Args: section does not describe {param.name!r}")
        schema = json_schema_of_hint(hints[param.name], f"tool {name!r}, argument {param.name!r}")
        text = arg_docs[param.name]
        choices = re.search(r"\(choices:\s*(.*?)\)\s*$", text, flags=re.IGNORECASE)
        if choices:
            schema["enum"] = [c.strip() if isinstance(c, str) else c for c in json.loads(choices.group(1))]
            text = text[: choices.start()].strip()
        schema["description"] = text
        properties[param.name] = schema
        if param.default is inspect.Parameter.empty:
            required.append(param.name)
    parameters = {"type": "object", "properties": properties, **({"required": required} if required else {})}
    out = {"name": name, "description": description, "parameters": parameters}
    if "return" in hints:
        try:
            out["return"] = json_schema_of_hint(hints["return"], f"tool {name!r}, return value")
            if returns:
                out["return"]["description"] = returns.group(1).strip()
        except TypeError:
            pass
    return {"type": "function", "function": out}
