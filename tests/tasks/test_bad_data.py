"""Bad user data is refused by ``ilora validate`` (no model loaded) with one line naming the fix.

Every case writes the files a user might have, then runs ``ilora validate`` on a config pointing
at them; ``ilora run`` performs the same checks before it loads a model.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from ilora.cli import app
from ilora.tasks.text_csv import TextCSV

runner = CliRunner()
HEADER = ["text", "label"]


def _csv(path: Path, rows: list[list[str]], header: list[str] = HEADER, enc: str = "utf-8") -> str:
    with path.open("w", encoding=enc, newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(header)
        writer.writerows(rows)
    return str(path)


def _rows(n: int = 24, classes: tuple[str, ...] = ("pos", "neg")) -> list[list[str]]:
    return [[f"review number {i}", classes[i % len(classes)]] for i in range(n)]


def _npz(path: Path, **override: Any) -> str:
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.integers(0, 255, (24, 8, 8), dtype=np.uint8),
        "y_train": np.arange(24) % 2,
        "x_test": rng.integers(0, 255, (6, 8, 8), dtype=np.uint8),
        "y_test": np.arange(6) % 2,
    }
    np.savez(path, **{**arrays, **override})
    return str(path)


def _config(tmp: Path, task: str, task_args: dict[str, Any], clients: int = 3) -> Path:
    cfg = {
        "algorithm": "fedit",
        "task": task,
        "task_args": task_args,
        "data": {"num_clients": clients, "partition": "iid"},
    }
    path = tmp / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _validate(config: Path, *extra: str) -> tuple[int, str]:
    result = runner.invoke(app, ["validate", str(config), *extra])
    assert "Traceback" not in result.output
    return result.exit_code, result.output


def _text(tmp: Path, make: Callable[[Path], str], **args: Any) -> Path:
    return _config(tmp, "text-csv", {"path": make(tmp), **args})


def _image(tmp: Path, make: Callable[[Path], str]) -> Path:
    return _config(tmp, "image-npz", {"path": make(tmp), "pretrained": False})


def _latin1(tmp: Path) -> str:
    return _csv(tmp / "latin.csv", [*_rows(), ["un film très réussi", "pos"]], enc="latin-1")


def _nan_pixels(tmp: Path) -> str:
    x = np.random.default_rng(0).random((24, 8, 8))
    x[0, 0, :3] = np.nan
    return _npz(tmp / "nan.npz", x_train=x)


def _text_as_npz(tmp: Path) -> str:
    path = tmp / "images.npz"
    path.write_text("x_train,y_train\n1,2\n")
    return str(path)


BAD: dict[str, tuple[Callable[[Path], Path], list[str]]] = {
    "missing csv": (
        lambda t: _config(t, "text-csv", {"path": str(t / "nope.csv")}),
        ["nope.csv' does not exist; fix task_args.path"],
    ),
    "missing column": (
        lambda t: _text(t, lambda t: _csv(t / "d.csv", _rows(), ["review", "label"])),
        ["d.csv' has no column 'text' (text_column); columns present: 'review', 'label'"],
    ),
    "latin-1 csv": (
        lambda t: _text(t, _latin1),
        ["latin.csv' is not utf-8 text (byte 0xe8", "set task_args.encoding", "latin-1"],
    ),
    "single class csv": (
        lambda t: _text(t, lambda t: _csv(t / "one.csv", _rows(classes=("pos",)))),
        ["one.csv: the training labels hold one class ('pos')", "needs at least two"],
    ),
    "empty label": (
        lambda t: _text(t, lambda t: _csv(t / "e.csv", [*_rows(), ["no label", " "]])),
        ["e.csv' line 26: empty label in column 'label'; fill it or drop the row"],
    ),
    "fractional labels": (
        lambda t: _text(t, lambda t: _csv(t / "f.csv", _rows(classes=("0.25", "1.5")))),
        ["f.csv' column 'label' holds fractional numbers (e.g. '0.25')", "class names"],
    ),
    "short row": (
        lambda t: _text(t, lambda t: _csv(t / "s.csv", [*_rows(), ["only text"]])),
        ["s.csv' line 26 has fewer fields than the header"],
    ),
    "bad split column": (
        lambda t: _text(
            t,
            lambda t: _csv(t / "sp.csv", [[*r, "dev"] for r in _rows()], [*HEADER, "split"]),
            split_column="split",
        ),
        ["sp.csv' column 'split' (split_column) holds 'dev'; allowed: 'train' or 'test'"],
    ),
    "missing npz": (
        lambda t: _config(t, "image-npz", {"path": str(t / "none.npz")}),
        ["image-npz: no file at path=", "none.npz"],
    ),
    "nan pixels": (
        lambda t: _image(t, _nan_pixels),
        ["array 'x_train' in", "nan.npz has 3 NaN or infinite values; replace them"],
    ),
    "text named npz": (
        lambda t: _image(t, _text_as_npz),
        ["images.npz is not an .npz archive (it starts with b'x_tr'", "np.savez(path, x_train="],
    ),
    "single class npz": (
        lambda t: _image(t, lambda t: _npz(t / "one.npz", y_train=np.zeros(24, np.int64))),
        ["one.npz: the training labels hold one class ('0')"],
    ),
    "more clients than rows": (
        lambda t: _config(t, "text-csv", {"path": _csv(t / "few.csv", _rows(4))}, clients=9),
        ["got n=4; lower num_clients or use more data"],
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_data_is_one_line_naming_the_file_and_the_fix(case: str, tmp_path: Path) -> None:
    make, fragments = BAD[case]
    code, output = _validate(make(tmp_path))
    assert code == 2, output
    lines = output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), output
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"


def test_good_files_pass_and_latin1_is_read_with_its_encoding(tmp_path: Path) -> None:
    assert _validate(_text(tmp_path, _latin1, encoding="latin-1"))[0] == 0
    assert _validate(_image(tmp_path, lambda t: _npz(t / "ok.npz")))[0] == 0


def test_iid_needs_no_partition_args(tmp_path: Path) -> None:
    config = _text(tmp_path, lambda t: _csv(t / "ok.csv", _rows()))
    assert _validate(config) == (0, f"{config}: ok\n")
    code, output = _validate(config, "--set", "data.partition_args={alpha: 0.3}")
    assert code == 2 and "partitioner 'iid' got unexpected keyword argument(s) alpha" in output


def test_run_refuses_bad_data_before_it_loads_a_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_model(*_: object) -> None:
        raise AssertionError("the model was loaded before the data was checked")

    monkeypatch.setattr(TextCSV, "build_model", no_model)
    monkeypatch.setattr(TextCSV, "load", no_model)
    config = _text(tmp_path, lambda t: _csv(t / "one.csv", _rows(classes=("pos",))))
    result = runner.invoke(app, ["run", str(config), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2, result.output
    assert "the training labels hold one class ('pos')" in result.output
    assert not (tmp_path / "run").exists()
