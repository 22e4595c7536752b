"""One cell identity, and the typed figures a cell's row is made from.

Every type that carries a cell's axes takes them from qkbench.cell_key.AXES (declaring one by
hand is refused when the class is made); what a worker sends back for a cell is a CellFigures,
whose every field is a summary column or one of the runner's declared working figures.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import pytest

from qkbench.backends.base import Problem
from qkbench.cell_key import AXES, CELL_KEY, CellKey, axis_fields, names
from qkbench.measure.cell import CellFigures
from qkbench.plan.sweep import Cell, Shape, Variant
from qkbench.records.record import SUMMARY_COLUMNS, SummaryRecord
from qkbench.records.results import summary_row


def _names(cls: type) -> list[str]:
    return [spec.name for spec in fields(cls)]


def test_every_type_that_carries_axes_takes_them_from_the_table():
    assert _names(CellKey) == CELL_KEY == [axis.name for axis in AXES]
    assert _names(Problem) == [axis.name for axis in AXES if axis.problem]
    assert _names(Shape) == names("shape")
    assert _names(Variant) == names("variant")
    assert _names(SummaryRecord)[:len(CELL_KEY)] == CELL_KEY
    # and with the table's defaults and meanings
    record = {spec.name: spec for spec in fields(SummaryRecord)}
    for axis in AXES:
        assert record[axis.name].metadata["meaning"].startswith(axis.meaning)


def test_an_axis_declared_by_hand_is_refused():
    with pytest.raises(TypeError, match="declares axes by hand"):
        @dataclass(frozen=True)
        @axis_fields(lambda axis: axis.part == "shape")
        class Twice:
            n: int


def test_a_cell_is_its_key_and_its_views_agree_with_it():
    shape, variant = Shape(16, 32, 8, batch=2, heads=4, kv_heads=2), Variant("float32")
    cell = Cell.of("numpy", shape, variant, "base")
    assert cell.shape == shape and cell.variant == variant
    assert cell.key == CellKey.of(cell.key.as_dict())
    assert cell.member == "numpy@base" and cell.key.group().member == ""
    assert cell.shape.problem() == Problem(16, 32, 8, batch=2, heads=4, kv_heads=2)


def test_every_figure_is_a_column_or_a_declared_working_figure():
    for spec in fields(CellFigures):
        assert spec.name in SUMMARY_COLUMNS or spec.name in CellFigures.WORKING, spec.name
    assert not set(CellFigures.WORKING) & set(SUMMARY_COLUMNS)


def test_an_undeclared_figure_is_refused_and_unknown_telemetry_is_kept_in_info():
    with pytest.raises(ValueError, match="undeclared cell figures: fan_rpm"):
        CellFigures().merge({"fan_rpm": 1200})
    figures = CellFigures(first_call_s=0.5)
    figures.add_telemetry({"sm_clock_start_mhz": 1980.0, "fan_start_rpm": 1200.0})
    cell = Cell.of("numpy", Shape(8, 8, 4), Variant("float32"))
    row = summary_row(cell, "cpu", "ok", "", figures)
    assert row["sm_clock_start_mhz"] == 1980.0 and row["first_call_s"] == 0.5
    assert row["info"] == {"fan_start_rpm": 1200.0}  # kept, not dropped


def test_merging_keeps_what_the_newer_figures_leave_unset():
    figures = CellFigures(precision="float32", info={"blas": "openblas"})
    figures.merge(CellFigures(peak_device_bytes=10, info={"threads": 2}))
    assert figures.precision == "float32" and figures.peak_device_bytes == 10
    assert figures.info == {"blas": "openblas", "threads": 2}
