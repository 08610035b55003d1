"""The code blocks of every page of docs/ that has any run as written: ```python blocks are
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


RUNNABLE = sorted(p.name for p in DOCS.glob("*.md") if re.search(r"```(python|console)\n", p.read_text()))


def test_every_user_guide_page_with_code_is_covered():
    assert {"transformers.md", "cli.md", "workflow.md"} <= set(RUNNABLE)


@pytest.mark.parametrize("doc", RUNNABLE)
def test_doc_blocks_run(doc, tmp_path, monkeypatch, capsys):
    if doc == "transformers.md":
        pytest.importorskip("accelerate")  # its device_map block
    monkeypatch.chdir(tmp_path)
    run_blocks(DOCS / doc, capsys)
