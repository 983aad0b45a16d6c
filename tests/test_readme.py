"""The README's examples run (or compile where they need checkpoints); its set-up commands are CI's."""

import pathlib
import re

README = (pathlib.Path(__file__).parents[1] / "README.md").read_text()


def test_python_examples_run(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README, flags=re.S)
    assert blocks, "the README has no Python example"
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})
    assert "(2, 10)" in capsys.readouterr().out


def test_examples_that_need_checkpoints_compile():
    # `py` blocks load the user's own checkpoint files, which the tests do not have.
    blocks = re.findall(r"```py\n(.*?)```", README, flags=re.S)
    assert blocks, "expected the encoder examples as ```py blocks"
    for block in blocks:
        compile(block, "README.md", "exec")


def test_exactly_two_setup_commands():
    setup = README.split("## Set up on a fresh machine", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```bash\n(.*?)```", setup, flags=re.S)
    assert len(commands) == 2
    assert "mmrep train" in commands[0] and "pytest" in commands[1]
