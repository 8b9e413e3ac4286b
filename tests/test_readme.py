"""The README's Python API snippets run as written (on the packaged MiniLM, offline)."""

import logging
import re

from conftest import REPO


def python_api_blocks() -> list[str]:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Python API", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_readme_python_api_runs_as_written(tmp_path, monkeypatch, capsys, caplog):
    blocks = python_api_blocks()
    assert len(blocks) == 2  # the plain loop, then ReadTrainer
    monkeypatch.chdir(tmp_path)  # the snippets write out/, runs/ and out-trainer/ where they run
    namespace: dict = {}
    with caplog.at_level(logging.WARNING):
        for block in blocks:
            exec(compile(block, "README.md", "exec"), namespace)
    out = capsys.readouterr()
    assert "trainable params: 313,858" in out.out
    assert "MISSING" not in out.out + out.err + caplog.text  # no load report for a bare backbone
    assert (tmp_path / "out" / "read_config.json").is_file()
    assert (tmp_path / "out-trainer" / "read_model.safetensors").is_file()
    assert not (tmp_path / "out-trainer" / "model.safetensors").exists()  # never the backbone
    assert (tmp_path / "out-trainer" / "tokenizer_config.json").is_file()  # the tokenizer, as Trainer saves it
    assert type(namespace["model"]).__name__ == "ReadModel"
