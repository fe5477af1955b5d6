"""The label expression: one definition for Transform, the new-dataset command and the
leakage check."""

import numpy as np
import pytest

from pipeline import label_expression


def test_columns_are_listed_in_order_of_first_use():
    assert label_expression.columns("amount > 0.2 * price and price > 0") == ["amount", "price"]
    assert label_expression.columns("status == 'late'") == ["status"]


@pytest.mark.parametrize(
    "expression, expected",
    [
        ("arr_delay > 15", [0, 1, 0, 0]),  # a missing delay counts as 0
        ("arr_delay >= 15", [1, 1, 0, 0]),
        ("-arr_delay > 0", [0, 0, 1, 0]),
        ("arr_delay / distance > 0.1", [0, 1, 0, 0]),  # division by 0 gives 0, not inf
        ("status == 'late'", [0, 1, 0, 0]),
        ("status != 'late' and not cancelled", [1, 0, 0, 0]),
        ("cancelled or status == 'late'", [0, 1, 1, 1]),
        ("0 < arr_delay < 20", [1, 0, 0, 0]),
        ("cancelled", [0, 0, 1, 1]),
        ("status", [1, 1, 1, 0]),  # a non-empty string is true
    ],
)
def test_evaluates_like_python_with_missing_values_as_zero(expression, expected):
    columns = {
        "arr_delay": [15.0, 40.0, -3.0, np.nan],
        "distance": [200.0, 300.0, 0.0, 0.0],
        "status": ["ok", "late", "ok", None],
        "cancelled": [0, 0, 1, 1],
    }
    assert label_expression.evaluate_columns(expression, columns).tolist() == expected


@pytest.mark.parametrize(
    "expression, message",
    [
        ("arr_delay >", "is not valid"),
        ("__import__('os').system('x')", "Call is not allowed"),
        ("delay[0] > 1", "Subscript is not allowed"),
        ("delay > None", "constant None is not allowed"),
    ],
)
def test_bad_expressions_are_refused_naming_the_problem(expression, message):
    with pytest.raises(label_expression.LabelExpressionError, match=message.replace("[", r"\[")):
        label_expression.columns(expression)


def test_a_missing_column_is_named_with_the_columns_there_are():
    with pytest.raises(
        label_expression.LabelExpressionError,
        match=r"reads column 'delay', which the data does not have \(columns: a, b\)",
    ):
        label_expression.evaluate_columns("delay > 1", {"a": [1.0], "b": [2.0]})


def test_text_used_as_a_number_says_to_compare_with_a_string():
    with pytest.raises(label_expression.LabelExpressionError, match="compare a text column"):
        label_expression.evaluate_columns("status > 1", {"status": ["late", "ok"]})
