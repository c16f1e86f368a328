"""python/README.md's example runs as written (its directory moved into a
temporary one)."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_readme_example_runs(tmp_path, capsys):
    text = README.read_text()
    example = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    assert "/var/lib/broker/facts" in example
    example = example.replace("/var/lib/broker/facts", str(tmp_path / "facts"))
    exec(compile(example, str(README), "exec"), {})
    assert "at least one operation" in capsys.readouterr().out
