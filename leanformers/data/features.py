"""Features: the column types of a dataset as datasets names them (Value, ClassLabel, List, dicts).

A dataset's rows live in a pyarrow.Table; its Features are derived from the Arrow types, except
where the table's schema metadata records more (the names of a ClassLabel): datasets writes that
metadata under the "huggingface" key, so Arrow and Parquet files from either library keep it.
"""

import json
import re

import pyarrow as pa
import pyarrow.compute as pc

# Value dtype names (datasets' spellings) and their Arrow types; "float" and "double" are aliases.
VALUE_TYPES = {"null": pa.null(), "bool": pa.bool_(), "int8": pa.int8(), "int16": pa.int16(), "int32": pa.int32(),
               "int64": pa.int64(), "uint8": pa.uint8(), "uint16": pa.uint16(), "uint32": pa.uint32(),
               "uint64": pa.uint64(), "float16": pa.float16(), "float32": pa.float32(), "float64": pa.float64(),
               "string": pa.string(), "large_string": pa.large_string(), "binary": pa.binary(),
               "large_binary": pa.large_binary(), "date32": pa.date32(), "date64": pa.date64()}
# Arrow's own names for some of them (str(pa.float64()) is "double"), and datasets' short forms
DTYPE_ALIASES = {"float": "float32", "double": "float64", "boolean": "bool", "halffloat": "float16",
                 "date32[day]": "date32", "date64[ms]": "date64"}
TIME_UNIT = re.compile(r"(timestamp|duration|time32|time64)\[(s|ms|us|ns)(?:, tz=(.+))?\]")


def _arrow_of_dtype(dtype: str) -> pa.DataType:
    if dtype in VALUE_TYPES:
        return VALUE_TYPES[dtype]
    match = TIME_UNIT.fullmatch(dtype)
    if match:
        kind, unit, tz = match.groups()
        return pa.timestamp(unit, tz) if kind == "timestamp" else getattr(pa, kind)(unit)
    raise ValueError(f"unknown Value dtype {dtype!r}; use one of {sorted(VALUE_TYPES)} or 'timestamp[unit]'")


class Value:
    """A scalar column: Value("string"), Value("int64"), Value("float32"), ..."""

    def __init__(self, dtype: str):
        dtype = DTYPE_ALIASES.get(dtype, dtype)
        self.pa_type = _arrow_of_dtype(dtype)
        self.dtype = dtype

    def __repr__(self) -> str:
        return f"Value({self.dtype!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, Value) and other.dtype == self.dtype

    def __hash__(self) -> int:
        return hash(("Value", self.dtype))

    def __call__(self) -> pa.DataType:
        return self.pa_type


class ClassLabel:
    """Integer class ids (int64) with a name for each: ClassLabel(names=["neg", "pos"]) or num_classes=."""

    pa_type = pa.int64()
    dtype = "int64"

    def __init__(self, num_classes=None, names=None, names_file=None):
        if names is not None and names_file is not None:
            raise ValueError("ClassLabel takes names or names_file, not both")
        if names_file is not None:
            with open(names_file, encoding="utf-8") as f:
                names = [line.strip() for line in f if line.strip()]
        if names is None:
            if num_classes is None:
                raise ValueError("ClassLabel needs names=, num_classes= or names_file=")
            names = [str(i) for i in range(num_classes)]
        self.names = [str(name) for name in names]
        if num_classes is not None and num_classes != len(self.names):
            raise ValueError(f"ClassLabel got {len(self.names)} names but num_classes={num_classes}")
        self.num_classes = len(self.names)
        self._ids = {name: i for i, name in enumerate(self.names)}
        if len(self._ids) != len(self.names):
            raise ValueError(f"ClassLabel names must be unique, got {self.names}")

    def __repr__(self) -> str:
        return f"ClassLabel(names={self.names!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, ClassLabel) and other.names == self.names

    def __hash__(self) -> int:
        return hash(("ClassLabel", tuple(self.names)))

    def __call__(self) -> pa.DataType:
        return self.pa_type

    def str2int(self, values):
        """The id of a name (or of each name in a list)."""
        if isinstance(values, str):
            return self._id_of(values)
        return [self._id_of(value) for value in values]

    def _id_of(self, name) -> int:
        name = str(name)
        found = self._ids.get(name, self._ids.get(name.strip()))
        if found is not None:
            return found
        # datasets also takes an id written as text ("1"); -1 means "no label"
        if re.fullmatch(r"-?\d+", name.strip()) and -1 <= int(name) < self.num_classes:
            return int(name)
        raise ValueError(f"Invalid string class label {name!r}: not one of the ClassLabel names {self.names}")

    def int2str(self, values):
        """The name of an id (or of each id in a list)."""
        if isinstance(values, int) or hasattr(values, "__index__"):
            return self._name_of(values)
        return [self._name_of(value) for value in values]

    def _name_of(self, value) -> str:
        if not 0 <= int(value) < self.num_classes:
            raise ValueError(f"Invalid integer class label {value}: ids run from 0 to {self.num_classes - 1} "
                             f"({self.names})")
        return self.names[int(value)]

    def encode(self, column) -> pa.Array:
        """A string or integer Arrow column as class ids (int64), checked against the names."""
        column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            names = pc.unique(column).drop_null()
            ids = pa.array([self._id_of(name) for name in names.to_pylist()], pa.int64())
            return pc.take(ids, pc.index_in(column, value_set=names))
        if pa.types.is_integer(column.type):
            low, high = pc.min_max(column).values()
            if high.is_valid and (high.as_py() >= self.num_classes or low.as_py() < -1):
                bad = high.as_py() if high.as_py() >= self.num_classes else low.as_py()
                raise ValueError(f"Class label {bad} is out of range for ClassLabel with {self.num_classes} "
                                 f"names {self.names} (ids run from 0 to {self.num_classes - 1}, -1 for none)")
            return column.cast(pa.int64())
        raise TypeError(f"a ClassLabel column is built from strings or integers, not {column.type}")


class Sequence:
    """datasets' older spelling of a list feature: a List, or for a dict, a dict of Lists."""

    def __new__(cls, feature=None, length=-1):
        if cls is Sequence and isinstance(feature, dict):
            return {key: List(value, length) for key, value in feature.items()}
        return super().__new__(List if cls is Sequence else cls)


class List(Sequence):
    """A list column of `feature` (fixed size when length is given)."""

    def __init__(self, feature, length=-1):
        self.feature = feature
        self.length = length

    def __repr__(self) -> str:
        return f"List({self.feature!r}" + (f", length={self.length})" if self.length != -1 else ")")

    def __eq__(self, other) -> bool:
        return type(other) is type(self) and (other.feature, other.length) == (self.feature, self.length)

    def __hash__(self) -> int:
        return hash((type(self).__name__, repr(self.feature), self.length))

    @property
    def pa_type(self) -> pa.DataType:
        return pa.list_(arrow_type(self.feature), self.length)


class LargeList(List):
    """A list column with 64-bit offsets."""

    def __init__(self, feature):
        super().__init__(feature)

    def __repr__(self) -> str:
        return f"LargeList({self.feature!r})"

    @property
    def pa_type(self) -> pa.DataType:
        return pa.large_list(arrow_type(self.feature))


def arrow_type(feature) -> pa.DataType:
    """The Arrow type that stores `feature` (a dict of features is a struct)."""
    if isinstance(feature, dict):
        return pa.struct({name: arrow_type(sub) for name, sub in feature.items()})
    if isinstance(feature, (Value, ClassLabel, List)):
        return feature.pa_type
    raise TypeError(f"{feature!r} is not a feature; use Value, ClassLabel, List or a dict of them")


def feature_of_arrow(arrow: pa.DataType):
    """The feature datasets reports for an Arrow type with no metadata of its own."""
    if pa.types.is_struct(arrow):
        return {field.name: feature_of_arrow(field.type) for field in arrow}
    if pa.types.is_fixed_size_list(arrow):
        return List(feature_of_arrow(arrow.value_type), arrow.list_size)
    if pa.types.is_list(arrow):
        return List(feature_of_arrow(arrow.value_type))
    if pa.types.is_large_list(arrow):
        return LargeList(feature_of_arrow(arrow.value_type))
    if pa.types.is_dictionary(arrow):
        return feature_of_arrow(arrow.value_type)
    return Value(str(arrow))


def _to_dict(feature):
    if isinstance(feature, dict):
        return {name: _to_dict(sub) for name, sub in feature.items()}
    if isinstance(feature, Value):
        return {"dtype": feature.dtype, "_type": "Value"}
    if isinstance(feature, ClassLabel):
        return {"names": feature.names, "_type": "ClassLabel"}
    if isinstance(feature, LargeList):
        return {"feature": _to_dict(feature.feature), "_type": "LargeList"}
    entry = {"feature": _to_dict(feature.feature), "_type": "List"}
    return entry if feature.length == -1 else {**entry, "length": feature.length}


def _from_dict(entry):
    kind = entry.get("_type") if isinstance(entry, dict) else None
    if kind is None:
        return {name: _from_dict(sub) for name, sub in entry.items()}
    if kind == "Value":
        return Value(entry["dtype"])
    if kind == "ClassLabel":
        return ClassLabel(names=entry["names"])
    if kind == "LargeList":
        return LargeList(_from_dict(entry["feature"]))
    if kind in ("List", "Sequence"):  # "Sequence" in files written by datasets 3
        feature = _from_dict(entry["feature"])
        return Sequence(feature, entry.get("length", -1)) if kind == "Sequence" else List(feature, entry.get("length", -1))
    raise ValueError(f"unsupported feature type {kind!r} in {entry}")


class Features(dict):
    """{column: feature}, printed as datasets prints it."""

    @property
    def arrow_schema(self) -> pa.Schema:
        return pa.schema({name: arrow_type(feature) for name, feature in self.items()})

    @property
    def type(self) -> pa.StructType:
        return arrow_type(dict(self))

    def to_dict(self) -> dict:
        return _to_dict(dict(self))

    @classmethod
    def from_dict(cls, entries: dict) -> "Features":
        return cls(_from_dict(entries))

    def copy(self) -> "Features":
        return Features(self)

    @classmethod
    def from_arrow_schema(cls, schema: pa.Schema) -> "Features":
        """Features recorded in the schema metadata where they still fit the column's type, else from the type."""
        recorded = recorded_features(schema)
        return cls({field.name: recorded[field.name]
                    if field.name in recorded and arrow_type(recorded[field.name]) == field.type
                    else feature_of_arrow(field.type) for field in schema})


def recorded_features(schema: pa.Schema) -> dict:
    """The features in a schema's "huggingface" metadata (as datasets writes it), or {}."""
    metadata = schema.metadata or {}
    if b"huggingface" not in metadata:
        return {}
    info = json.loads(metadata[b"huggingface"]).get("info") or {}
    return Features.from_dict(info["features"]) if info.get("features") else {}


def with_features(table: pa.Table, features: dict) -> pa.Table:
    """`table` with `features` recorded in its schema metadata (no data is copied)."""
    metadata = dict(table.schema.metadata or {})
    metadata[b"huggingface"] = json.dumps({"info": {"features": Features(features).to_dict()}}).encode()
    return table.replace_schema_metadata(metadata)


def keep_features(table: pa.Table, features: dict) -> pa.Table:
    """`table` with the features of `features` recorded for its columns of the same name that hold none yet."""
    recorded = recorded_features(table.schema)
    missing = {name: f for name, f in features.items() if name in table.column_names and name not in recorded}
    return with_features(table, {**missing, **recorded}) if missing else table


def as_feature(feature):
    """A feature from what cast/cast_column take: a feature, a dict of them, or a pyarrow type."""
    if isinstance(feature, pa.DataType):
        return feature_of_arrow(feature)
    arrow_type(feature)  # a string such as "int64" is refused here, naming the types it takes
    return feature


def cast_array(column, feature):
    """An Arrow column cast to `feature`'s type; ClassLabels encode names and check ids."""
    if isinstance(feature, ClassLabel):
        return feature.encode(column)
    return column.cast(arrow_type(feature))
