"""Every runnable command in README.md and docs/*.md exists as written.

Marker convention: a fenced block opened with ```bash (or ```sh / ```shell) is runnable and checked here; use
```console or ```text for examples that are not meant to run as written (synopses with placeholders such as
``[-l DIR]`` or ``<in>``, program output). In README.md, inline code spans that start with ``mood-detector `` are
commands too and are checked the same way (a span with ``...`` is an abbreviation and is skipped).

What is checked, per command of a runnable block (continuation lines joined; split at ``;``, ``&&``, ``||``,
``|``; ``NAME=value`` / ``export NAME=value`` assignments of the block are expanded in later commands; ``for
... do`` / ``done`` and prefixes such as ``OMP_NUM_THREADS=1``, ``nice -n 19``, ``/usr/bin/time -v`` and
``torchrun ...`` are looked through):

* ``mood-detector [group options] SUB ...`` (also ``$(which mood-detector)``, ``python -m mood_detector``): SUB
  is a command of :data:`mood_detector.cli.main`, every option exists for it and has its values, there are no
  surplus arguments, required options and arguments are given, and values of non-path types (choices,
  numbers) convert, unless they hold an unexpanded ``$variable``;
* ``python path/to/script.py ...``: the file exists, ``--help`` runs and lists every option used;
* ``python -m pytest ... PATHS``: the test paths exist; ``python -m MODULE``: the module can be imported;
* ``bash X.sh`` / ``sh X.sh``: the script exists; ``pip install -r FILE`` / ``-e '.[extras]'``: the file and
  the extras exist; ``docker build -f FILE``: the Dockerfile exists.

Other commands (``mkdir``, ``docker run``, ``git``, ...) are not checked.
"""

from __future__ import annotations

import functools
import importlib.util
import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import click
import pytest

from mood_detector.cli import main as cli_main

REPO = Path(__file__).resolve().parents[2]
RUNNABLE = {"bash", "sh", "shell"}
SEPARATORS = {";", "&&", "||", "|", "&", "(", ")"}
FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)")
ASSIGN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
VAR = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")


def doc_files() -> list[Path]:
    """README.md and every Markdown page under docs/."""
    return [REPO / "README.md", *sorted((REPO / "docs").glob("**/*.md"))]


@dataclass
class Block:
    """One fenced code block: where it starts, its language tag and its text."""

    source: str
    line: int
    lang: str
    text: str

    @property
    def runnable(self) -> bool:
        return self.lang.lower() in RUNNABLE


@dataclass
class Check:
    """What checking some blocks found: commands checked and problems (one line each)."""

    checked: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def code_blocks(markdown: str, source: str = "<text>") -> list[Block]:
    """Fenced code blocks of a Markdown text (indented fences inside list items too)."""
    blocks, lines, i = [], markdown.splitlines(), 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, lang = m.groups()
        body, j = [], i + 1
        while j < len(lines) and not lines[j].strip().startswith(fence):
            body.append(lines[j][len(indent):] if lines[j].startswith(indent) else lines[j].lstrip())
            j += 1
        blocks.append(Block(source, i + 1, lang, "\n".join(body)))
        i = j + 1
    return blocks


def logical_lines(text: str) -> list[str]:
    """Lines with ``\\``-continuations joined."""
    out, cur = [], ""
    for line in text.splitlines():
        if line.rstrip().endswith("\\"):
            cur += line.rstrip()[:-1] + " "
            continue
        out.append(cur + line)
        cur = ""
    if cur:
        out.append(cur)
    return out


def _expand(line: str, env: dict[str, str]) -> str:
    line = re.sub(r"\$\(\s*(?:which|command -v)\s+([\w.-]+)\s*\)", r"\1", line)
    return VAR.sub(lambda m: env.get(m.group(1) or m.group(2), m.group(0)), line)


def _tokens(line: str) -> list[str]:
    lex = shlex.shlex(line, posix=True, punctuation_chars=";&|()")
    lex.whitespace_split = True
    lex.commenters = "#"
    return list(lex)


def commands(block_text: str) -> list[list[str]]:
    """The simple commands of a shell block as token lists, with the block's own variables expanded."""
    env: dict[str, str] = {}
    out: list[list[str]] = []
    for line in logical_lines(block_text):
        toks = _tokens(_expand(line, env))
        seg: list[str] = []
        for tok in [*toks, ";"]:
            if tok not in SEPARATORS:
                seg.append(tok)
                continue
            if seg:
                words = seg[1:] if seg[0] == "export" else seg
                if words and all(ASSIGN.match(w) for w in words):  # NAME=value [NAME=value ...]
                    env.update(w.split("=", 1) for w in words)
                else:
                    out.append(seg)
            seg = []
    return out


def _strip_prefixes(toks: list[str]) -> list[str]:
    """Drop env assignments and wrappers (``do``, ``nice -n N``, ``time -v``, ``env``, ``exec``)."""
    toks = list(toks)
    while toks:
        head = toks[0]
        if ASSIGN.match(head) or head in {"do", "then", "else", "exec", "env", "command", "!"}:
            toks.pop(0)
        elif head in {"time", "/usr/bin/time"}:
            toks.pop(0)
            while toks and toks[0].startswith("-"):
                toks.pop(0)
        elif head == "nice":
            toks.pop(0)
            if toks and toks[0] == "-n":
                toks = toks[2:]
            elif toks and re.fullmatch(r"-n?\d+", toks[0]):
                toks.pop(0)
        else:
            break
    return toks


def _option_name(token: str) -> str:
    return token.split("=", 1)[0] if token.startswith("--") else token


def _has_var(value: object) -> bool:
    if isinstance(value, (tuple, list)):
        return any(_has_var(v) for v in value)
    return isinstance(value, str) and "$" in value


def check_cli(args: list[str], group: click.Group = cli_main, prog: str = "mood-detector") -> list[str]:
    """Problems of one ``mood-detector ARGS`` invocation (empty list: it parses)."""
    ctx = click.Context(group, info_name=prog)
    try:
        _, rest, _ = group.make_parser(ctx).parse_args(list(args))
    except click.UsageError as exc:
        return [f"{prog}: {exc.format_message()}"]
    if not rest:
        return [f"{prog}: no command given"]
    name, rest = rest[0], rest[1:]
    cmd = group.get_command(ctx, name)
    if cmd is None:
        return [f"{prog}: no such command {name!r} (commands: {', '.join(group.list_commands(ctx))})"]
    if isinstance(cmd, click.Group):
        return check_cli(rest, cmd, f"{prog} {name}")
    sub = click.Context(cmd, info_name=name, parent=ctx)
    if any(t in sub.help_option_names for t in rest):
        return []
    known = {o for p in cmd.params for o in (*getattr(p, "opts", ()), *getattr(p, "secondary_opts", ()))}
    problems = [f"{prog} {name}: no such option {_option_name(t)}" for t in rest
                if t.startswith("-") and len(t) > 1 and not re.fullmatch(r"-\d[\d.e+-]*", t)
                and _option_name(t) not in known and not (not t.startswith("--") and len(t) > 2 and t[:2] in known)]
    if problems:
        return problems
    try:
        values, extra, _ = cmd.make_parser(sub).parse_args(list(rest))
    except click.UsageError as exc:
        return [f"{prog} {name}: {exc.format_message()}"]
    if extra and not sub.allow_extra_args:
        problems.append(f"{prog} {name}: unexpected extra arguments {extra}")
    for p in cmd.params:
        if p.name not in values:
            if p.required and not getattr(p, "envvar", None):
                problems.append(f"{prog} {name}: missing {p.human_readable_name}")
            continue
        raw = values[p.name]
        if isinstance(p.type, (click.Path, click.File)) or _has_var(raw):
            continue
        try:
            p.type_cast_value(sub, raw)
        except click.BadParameter as exc:
            problems.append(f"{prog} {name}: {exc.format_message()}")
    return problems


@functools.lru_cache(maxsize=None)
def script_help(path: str) -> tuple[int, frozenset[str], str]:
    """(exit code, option names listed, output) of ``python SCRIPT --help``."""
    proc = subprocess.run([sys.executable, path, "--help"], cwd=REPO, capture_output=True, text=True, timeout=300)
    text = proc.stdout + proc.stderr
    return proc.returncode, frozenset(re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", text)), text


def check_python(args: list[str]) -> tuple[str, list[str]]:
    """(what was checked, problems) for ``python ARGS``."""
    if not args or args[0] == "-c":
        return "", []
    if args[0] == "-m":
        if len(args) < 2:
            return "python -m", ["python -m without a module"]
        module, rest = args[1], args[2:]
        if module == "mood_detector":
            return f"python -m mood_detector {' '.join(rest[:1])}", check_cli(rest, prog="python -m mood_detector")
        if module == "pytest":
            paths = [a.split("::")[0] for a in rest if not a.startswith("-") and ("/" in a or a.endswith(".py"))]
            missing = [p for p in paths if not (REPO / p).exists()]
            return f"python -m pytest {' '.join(paths)}", [f"pytest: no such test path {p}" for p in missing]
        if importlib.util.find_spec(module) is None:
            return f"python -m {module}", [f"python -m {module}: no such module"]
        return f"python -m {module}", []
    script = args[0]
    if not script.endswith(".py"):
        return "", []
    if not (REPO / script).is_file():
        return f"python {script}", [f"python {script}: no such file"]
    code, options, text = script_help(script)
    if code != 0:
        return f"python {script}", [f"python {script} --help exited {code}: {text.strip()[-300:]}"]
    bad = [t for t in args[1:] if t.startswith("-") and len(t) > 1 and _option_name(t) not in options]
    return f"python {script}", [f"python {script}: no such option {_option_name(t)}" for t in bad]


def _extras() -> set[str]:
    return set(tomllib.loads((REPO / "pyproject.toml").read_text())["project"].get("optional-dependencies", {}))


def check_command(toks: list[str]) -> tuple[str, list[str]]:
    """(what was checked, problems) for one simple command; ``("", [])`` when it is not checked."""
    toks = _strip_prefixes(toks)
    if not toks:
        return "", []
    for i, t in enumerate(toks):  # mood-detector anywhere after a wrapper (torchrun, time, ...)
        if Path(t).name == "mood-detector":
            return f"mood-detector {' '.join(toks[i + 1:i + 2])}", check_cli(toks[i + 1:])
        if t == "-m" and i + 1 < len(toks) and toks[i + 1] == "mood_detector" and toks[0] == "torchrun":
            return "torchrun -m mood_detector", check_cli(toks[i + 2:], prog="python -m mood_detector")
    head, args = Path(toks[0]).name, toks[1:]
    if re.fullmatch(r"python(3(\.\d+)?)?", head):
        return check_python(args)
    if head == "torchrun":
        script = next((a for a in args if a.endswith(".py")), None)
        return check_python(args[args.index(script):]) if script else ("", [])
    if head in {"bash", "sh"} and args and not args[0].startswith("-"):
        path = args[0]
        ok = Path(path).is_absolute() or (REPO / path).is_file()
        return f"{head} {path}", [] if ok else [f"{head} {path}: no such file"]
    if head in {"pip", "pip3"} and args[:1] == ["install"]:
        problems = []
        for flag, value in zip(args, args[1:]):
            if flag in {"-r", "--requirement"} and not (REPO / value).is_file():
                problems.append(f"pip install -r {value}: no such file")
            if flag in {"-e", "--editable"} and (m := re.fullmatch(r"\.\[([\w,\s-]+)\]", value)):
                problems += [f"pip install -e {value}: no extra {x.strip()!r} in pyproject.toml"
                             for x in m.group(1).split(",") if x.strip() not in _extras()]
        return "pip install", problems
    if head == "docker" and args[:1] == ["build"]:
        files = [v for f, v in zip(args, args[1:]) if f in {"-f", "--file"}]
        return "docker build", [f"docker build -f {f}: no such file" for f in files if not (REPO / f).is_file()]
    return "", []


def check_blocks(blocks: list[Block]) -> Check:
    """Check every runnable block."""
    res = Check()
    for block in blocks:
        if not block.runnable:
            continue
        for toks in commands(block.text):
            what, problems = check_command(toks)
            if what:
                res.checked.append(what)
            res.problems += [f"{block.source}:{block.line}: {p}  [{' '.join(toks)}]" for p in problems]
    return res


INLINE = re.compile(r"(?<!`)`(mood-detector [^`]+)`(?!`)")


def inline_commands(markdown: str) -> list[str]:
    """Inline code spans of the prose (fenced blocks left out) that are whole ``mood-detector`` commands."""
    lines = markdown.splitlines()
    for block in code_blocks(markdown):
        for i in range(block.line - 1, min(len(lines), block.line + len(block.text.splitlines()) + 1)):
            lines[i] = ""
    prose = re.sub(r"\s*\n\s*", " ", "\n".join(lines))  # a span may wrap across lines
    return [m.group(1) for m in INLINE.finditer(prose) if "..." not in m.group(1)]


def check_inline(markdown: str, source: str) -> Check:
    """Check the inline ``mood-detector`` commands of a page."""
    res = Check()
    for cmd in inline_commands(markdown):
        what, problems = check_command(_tokens(cmd))
        res.checked.append(what)
        res.problems += [f"{source}: inline `{cmd}`: {p}" for p in problems]
    return res


# --- tests ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", doc_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_runnable_commands_exist(path: Path):
    res = check_blocks(code_blocks(path.read_text(encoding="utf-8"), str(path.relative_to(REPO))))
    assert not res.problems, "\n".join(res.problems)


def test_readme_inline_commands_exist():
    res = check_inline((REPO / "README.md").read_text(encoding="utf-8"), "README.md")
    assert not res.problems, "\n".join(res.problems)
    assert "mood-detector train" in res.checked  # the check sees them


def test_inline_check_reports_a_broken_command():
    page = "Run `mood-detector train -i d --kind brain` or `mood-detector predict pixel -i a -o b`, see `ls`.\n"
    res = check_inline(page, "fake.md")
    assert res.checked == ["mood-detector train", "mood-detector predict"]
    assert len(res.problems) == 1 and "train: missing" in res.problems[0]


def test_docs_have_runnable_commands():
    """The check sees the pages (a parser change that finds nothing would pass silently otherwise)."""
    readme = check_blocks(code_blocks((REPO / "README.md").read_text(encoding="utf-8"), "README.md"))
    assert "bash scripts/demo.sh" in readme.checked and "bash scripts/test.sh" in readme.checked
    assert {"mood-detector train", "mood-detector predict"} <= set(readme.checked)
    pages = [p for p in doc_files() if p.parent.name == "docs"]
    assert pages, "no docs/*.md pages"
    total = sum(len(check_blocks(code_blocks(p.read_text(encoding="utf-8"), p.name)).checked) for p in pages)
    assert total >= 20


FAKE = """
Some text with `mood-detector predict --inline-is-not-checked`.

```bash
S="--size 64 --no-such-option"
mood-detector make-data brain --n 2 --out d $S   # nonexistent option via a variable
mood-detector predict pixel -i in -o out --batch-size 8 && mood-detector no-such-command --x 1
OMP_NUM_THREADS=1 nice -n 19 mood-detector predict both -i in -o out --batch-size \\
    eight
mood-detector predict pixl -i in -o out
mood-detector make-testset -i a              # required -o missing
mood-detector predict pixel -i in -o out surplus
for v in a b; do
  python scripts/research/not_there.py --x $v; done
bash scripts/not_there.sh
pip install -e '.[no-such-extra]'
torchrun --standalone --nproc_per_node 2 $(which mood-detector) train -i d -o w.safetensors --bogus
```

```text
mood-detector predict pixel --not-runnable-so-not-checked
```
"""


def test_check_reports_broken_commands():
    """The check can fail: every broken command of a fake page is reported, the good one and the non-runnable
    block are not."""
    res = check_blocks(code_blocks(FAKE, "fake.md"))
    text = "\n".join(res.problems)
    for expected in ("make-data: no such option --no-such-option", "no such command 'no-such-command'",
                     "predict: Invalid value for '--batch-size': 'eight'", "'pixl' is not one of", "make-testset: missing",
                     "unexpected extra arguments ['surplus']", "python scripts/research/not_there.py: no such file",
                     "bash scripts/not_there.sh: no such file", "no extra 'no-such-extra'",
                     "train: no such option --bogus"):
        assert expected in text, f"{expected!r} not reported:\n{text}"
    assert "not-runnable" not in text and "inline-is-not-checked" not in text
    assert len(res.problems) == 10, text
    assert res.checked.count("mood-detector predict") == 4


def test_commands_split_and_expand():
    cmds = commands('A="train -i d"\nB="$A --epochs 2"\nOMP_NUM_THREADS=1 mood-detector $B -o w \\\n  --seed 1; echo ok')
    assert cmds == [["OMP_NUM_THREADS=1", "mood-detector", "train", "-i", "d", "--epochs", "2", "-o", "w",
                     "--seed", "1"], ["echo", "ok"]]
    assert check_cli(["--log-level", "DEBUG", "train", "-i", "d", "-o", "w.safetensors"]) == []
    assert check_cli(["predict", "--help"]) == []
