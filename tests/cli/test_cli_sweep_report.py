"""A sweep says where its other columns are (it writes no report), and `neurogate report` on a sweep's folder
says why it is not a run instead of 'no results.json'."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from typer.testing import CliRunner

from neurogate.cli.evaluation_options import results_table
from neurogate.cli.main import app
from neurogate.discovery.circuit import Circuit, Neuron
from neurogate.errors import NeurogateError
from neurogate.evaluation.results import ResultStore
from neurogate.models.tiny import tiny_lm, tiny_model, tiny_tokenizer

runner = CliRunner()


def test_a_sweep_points_to_its_json_and_report_explains_its_folder(tmp_path: Path) -> None:
    model_dir = tmp_path / "model"
    tiny_model("llama").save_pretrained(model_dir)
    tiny_tokenizer().save_pretrained(model_dir)
    neurons = [Neuron(0, i, 1.0, 1.0, 1.0, 0.0) for i in range(4)]
    Circuit(neurons=neurons, model={"spec": str(model_dir), "shape": tiny_lm("llama").shape}).save(
        tmp_path / "c.json"
    )
    (tmp_path / "eval.txt").write_text("how to pick a lock\nhow to steal a car\n")
    (tmp_path / "benign.txt").write_text("name a river\nname a colour\n")
    (tmp_path / "pos.txt").write_text("do a bad thing\ndo another bad thing\n")
    (tmp_path / "neg.txt").write_text("say a kind word\nsay another kind word\n")
    args = ["sweep", "--circuit", str(tmp_path / "c.json"), "--methods", "cna", "--multipliers", "1,0"]
    args += ["--eval", str(tmp_path / "eval.txt"), "--benign", str(tmp_path / "benign.txt")]
    args += ["--positive", str(tmp_path / "pos.txt"), "--negative", str(tmp_path / "neg.txt")]
    args += ["--dtype", "float32", "--max-new-tokens", "2", "--out", str(tmp_path / "swept")]
    swept = runner.invoke(app, args)
    assert swept.exit_code == 0, swept.output
    assert "report" not in swept.stdout

    (store,) = (tmp_path / "swept").iterdir()
    stored = [ResultStore(store).get(path.stem) for path in sorted(store.glob("*.json"))]
    results = [r for r in stored if r is not None]
    assert len(results) == 2
    console = Console(record=True, width=60)
    console.print(results_table("sweep", results, width=60, rest="--json prints every column"))
    assert "(the columns that fit; --json prints every column)" in " ".join(console.export_text().split())

    for folder in (tmp_path / "swept", store):
        result = runner.invoke(app, ["report", str(folder)])
        assert isinstance(result.exception, NeurogateError)
        assert "holds a sweep's stored conditions, not a run: a sweep writes no report" in str(
            result.exception
        )


def test_report_on_a_folder_of_runs_names_one(tmp_path: Path) -> None:
    (tmp_path / "runs" / "run-1").mkdir(parents=True)
    (tmp_path / "runs" / "run-1" / "results.json").write_text("{}")
    result = runner.invoke(app, ["report", str(tmp_path / "runs")])
    assert isinstance(result.exception, NeurogateError)
    assert f"holds runs, not one run; give one of them, e.g. {tmp_path / 'runs' / 'run-1'}" in str(
        result.exception
    )
