"""The label as an expression over raw columns, declared in models/features.py (`LABEL`):
`amount > 0.2 * price`, `arr_delay > 15`, `status == 'late'`, `is_fraud`.

One definition serves Transform (TensorFlow, `evaluate`), the new-dataset command and the
leakage check (`evaluate` on numpy columns through TensorFlow's eager mode), so the label
cannot mean two things. Missing numbers count as 0 and missing strings as "" (a missing amount
is none); a declared expression that needs another rule can be replaced by a function in
models/preprocessing.py.

Grammar (Python syntax, nothing else): column names, number and string literals, + - * /,
comparisons (== != < <= > >=, chained), `and`, `or`, `not`, parentheses. A bare column is
true when it is non-zero (or a non-empty string).
"""

from __future__ import annotations

import ast
from typing import Callable, Mapping

ALLOWED_NODES = (
    ast.Expression,
    ast.BoolOp,
    ast.And,
    ast.Or,
    ast.UnaryOp,
    ast.Not,
    ast.USub,
    ast.UAdd,
    ast.BinOp,
    ast.Add,
    ast.Sub,
    ast.Mult,
    ast.Div,
    ast.Compare,
    ast.Eq,
    ast.NotEq,
    ast.Lt,
    ast.LtE,
    ast.Gt,
    ast.GtE,
    ast.Name,
    ast.Load,
    ast.Constant,
)


class LabelExpressionError(ValueError):
    """The label expression is not valid; the message quotes it and says why."""


def parse(expression: str) -> ast.Expression:
    """The expression's syntax tree, checked against the grammar above."""
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as error:
        raise LabelExpressionError(
            f"label expression {expression!r} is not valid: {error.msg}"
        ) from None
    for node in ast.walk(tree):
        if not isinstance(node, ALLOWED_NODES):
            raise LabelExpressionError(
                f"label expression {expression!r}: {type(node).__name__} is not allowed (use "
                "column names, numbers, strings, + - * /, comparisons, and/or/not)"
            )
        if isinstance(node, ast.Constant) and not isinstance(node.value, (int, float, str)):
            raise LabelExpressionError(
                f"label expression {expression!r}: constant {node.value!r} is not allowed"
            )
    return tree


def columns(expression: str) -> list[str]:
    """The raw columns the expression reads, in order of first use."""
    names: list[str] = []
    for node in ast.walk(parse(expression)):
        if isinstance(node, ast.Name) and node.id not in names:
            names.append(node.id)
    return names


def _string_columns(tree: ast.Expression) -> set[str]:
    """Columns compared with a string literal: read as strings."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            if any(isinstance(o, ast.Constant) and isinstance(o.value, str) for o in operands):
                found.update(o.id for o in operands if isinstance(o, ast.Name))
    return found


def evaluate(expression: str, column: Callable[[str, bool], object]):
    """The label as int64 0/1, built with TensorFlow ops. `column(name, as_string)` returns a
    dense [batch] tensor of the raw column with missing values filled (0.0 for numbers, ""
    for strings): models/preprocessing.py supplies it from Transform's inputs."""
    import tensorflow as tf

    tree = parse(expression)
    strings = _string_columns(tree)

    def truth(value):
        if value.dtype == tf.bool:
            return value
        if value.dtype == tf.string:
            return tf.not_equal(value, "")
        return tf.not_equal(value, 0.0)

    def build(node):
        if isinstance(node, ast.Expression):
            return build(node.body)
        if isinstance(node, ast.Name):
            return column(node.id, node.id in strings)
        if isinstance(node, ast.Constant):
            return (
                tf.constant(node.value)
                if isinstance(node.value, str)
                else tf.constant(float(node.value), tf.float32)
            )
        if isinstance(node, ast.UnaryOp):
            operand = build(node.operand)
            if isinstance(node.op, ast.Not):
                return tf.logical_not(truth(operand))
            return -operand if isinstance(node.op, ast.USub) else operand
        if isinstance(node, ast.BinOp):
            left, right = build(node.left), build(node.right)
            operations = {
                ast.Add: tf.add,
                ast.Sub: tf.subtract,
                ast.Mult: tf.multiply,
                ast.Div: tf.math.divide_no_nan,
            }
            return operations[type(node.op)](left, right)
        if isinstance(node, ast.BoolOp):
            combine = tf.logical_and if isinstance(node.op, ast.And) else tf.logical_or
            result = truth(build(node.values[0]))
            for value in node.values[1:]:
                result = combine(result, truth(build(value)))
            return result
        if isinstance(node, ast.Compare):
            comparisons = {
                ast.Eq: tf.equal,
                ast.NotEq: tf.not_equal,
                ast.Lt: tf.less,
                ast.LtE: tf.less_equal,
                ast.Gt: tf.greater,
                ast.GtE: tf.greater_equal,
            }
            left, result = build(node.left), None
            for op, right_node in zip(node.ops, node.comparators):
                right = build(right_node)
                step = comparisons[type(op)](left, right)
                result = step if result is None else tf.logical_and(result, step)
                left = right
            return result
        raise LabelExpressionError(
            f"label expression {expression!r}: cannot evaluate {type(node).__name__}"
        )

    return tf.cast(truth(build(tree)), tf.int64)


def evaluate_columns(expression: str, values: Mapping[str, object]):
    """`evaluate` over in-memory columns (numpy arrays or lists; NaN or None = missing), as a
    numpy int array: the new-dataset command and the leakage check use it."""
    import numpy as np
    import tensorflow as tf

    def column(name: str, as_string: bool):
        if name not in values:
            raise LabelExpressionError(
                f"label expression {expression!r} reads column '{name}', which the data does "
                f"not have (columns: {', '.join(sorted(values))})"
            )
        raw = values[name]
        if as_string:
            return tf.constant(
                [
                    "" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)
                    for v in raw
                ],
                tf.string,
            )
        array = np.asarray(raw)
        if array.dtype == object or array.dtype.kind in "US":
            try:
                array = np.array([np.nan if v is None or v == "" else float(v) for v in raw])
            except (TypeError, ValueError):
                text_columns.append(name)
                return column(name, True)  # text, as Transform reads a BYTES column
        return tf.constant(np.nan_to_num(array.astype(np.float64), nan=0.0), tf.float32)

    text_columns: list[str] = []
    try:
        return evaluate(expression, column).numpy()
    except (TypeError, tf.errors.InvalidArgumentError):
        named = ", ".join(f"'{c}'" for c in text_columns) or "a column"
        raise LabelExpressionError(
            f"label expression {expression!r} uses column {named} as a number, but it holds "
            "text: compare a text column with a string, e.g. status == 'late'"
        ) from None
