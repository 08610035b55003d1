"""The code blocks of docs/transformers.md and docs/cli.md run as written: ```python blocks are
executed in order in one namespace, ```console lines ``$ lowbit ...`` through lowbit.cli.main,
all in an empty temporary folder."""
import os
import pathlib
import re
import shlex

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytest.importorskip("transformers")

DOCS = pathlib.Path(__file__).resolve().parents[2] / "docs"
pytestmark = pytest.mark.filterwarnings("ignore:lowbit.quantize:UserWarning")


def run_blocks(path, capsys):
    from lowbit.cli import main
    blocks = re.findall(r"```(python|console)\n(.*?)```", path.read_text(), flags=re.S)
    assert blocks, f"{path.name} has no runnable block"
    namespace = {}
    for kind, body in blocks:
        if kind == "python":
            exec(compile(body, str(path), "exec"), namespace)
            continue
        for line in body.splitlines():
            if line.startswith("$ lowbit "):
                rc = main(shlex.split(line)[2:])
                out, err = capsys.readouterr()
                assert rc == 0, f"{line!r} failed: {err}"


@pytest.mark.parametrize("doc", ["transformers.md", "cli.md"])
def test_doc_blocks_run(doc, tmp_path, monkeypatch, capsys):
    if doc == "transformers.md":
        pytest.importorskip("accelerate")  # its device_map block
    monkeypatch.chdir(tmp_path)
    run_blocks(DOCS / doc, capsys)
