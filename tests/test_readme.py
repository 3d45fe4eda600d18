"""Every code block of the README (and of docs/*.md and CONTRIBUTING.md) runs, so the
documentation cannot rot.

Rules for authors (the same in every one of those files):

* A ```python block runs as a script in a subprocess whose ``ENTUR_*`` variables point at a
  fake Entur on loopback (with sample Journey Planner and geocoder answers); it must exit 0.
  A block that defines ``test_`` functions runs under pytest instead (the ``entur_*``
  fixtures are there) and must pass.
* In a ```console / ```sh / ```bash block, each line ``$ entur-oauth ...`` runs with the
  same variables and must exit 0. Other lines (``$ pip ...``, ``$ export ...``, output) are
  not run, nor are commands with pipes, redirections or ``$(...)``, nor ``fake-server``
  (it runs until stopped; tests/test_cli.py covers it).
* Put ``<!-- skip-test -->`` on the line before a block to leave it out (fragments, real
  Entur calls).
* Put ``<!-- test-needs: redis -->`` on the line before a python block that needs a Redis:
  it runs with ``REDIS_URL`` pointing at a real, empty ``redis-server`` on loopback (skipped
  without the binary, except in CI, as the Redis store tests are); a block that names
  ``REDIS_CLUSTER_URL`` (or ``REDIS_CLUSTER_URLS``: every node, comma-separated) or
  ``REDIS_SENTINELS`` also gets a real cluster or sentinels.
* The ``fake-server`` transcript is checked on its own: ``entur-oauth fake-server --port 0``
  must print the README's lines, with its port for 8765.
* Nothing reaches beyond loopback: every other address goes to a dead proxy.

Links between those files (``[text](docs/page.md#anchor)``) must lead to a file and, with an
anchor, to a heading of it; the README's "Contents" lists each of its sections.

``TEST_README=path`` runs the blocks of another markdown file alone (to try this runner out).
"""

from __future__ import annotations

import json
import os
import queue
import re
import shlex
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx2
import pytest

from entur_oauth.testing import FakeEntur

from .conftest import NO_NETWORK

pytest_plugins = ["tests.redis_fixture"]

ROOT = Path(__file__).resolve().parents[1]
README = Path(os.environ.get("TEST_README") or ROOT / "README.md")


def documents() -> list[Path]:
    """The markdown files whose blocks run: the README, CONTRIBUTING.md and docs/*.md."""
    if os.environ.get("TEST_README"):
        return [README]
    others = [ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]
    return [README, *(path for path in others if path.exists())]


def _name(path: Path) -> str:
    """``path`` as the tests name it: relative to the repository when it is in it."""
    return path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else path.name


def all_blocks() -> list[tuple[Path, Block]]:
    """Every block of every document, with the document it is in."""
    return [
        (path, block)
        for path in documents()
        if path.exists()
        for block in extract_blocks(path.read_text(encoding="utf-8"))
    ]


SKIP_MARK = "<!-- skip-test -->"
_NEEDS_MARK = re.compile(r"^<!-- test-needs: (?P<what>[\w-]+) -->$")
_FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})\s*(?P<lang>[\w+-]*)")
_LANGS = {
    "python": "python",
    "py": "python",
    "python3": "python",
    "console": "console",
    "sh": "console",
    "shell": "console",
    "bash": "console",
    "shell-session": "console",
}
_SHELL_SYNTAX = re.compile(r"[|<>;&`]|\$\(")


@dataclass(frozen=True)
class Block:
    """One fenced code block: its kind, first line number, text and skip mark."""

    kind: str
    line: int
    code: str
    skip: bool
    needs: str = ""


def extract_blocks(markdown: str) -> list[Block]:
    """Return the python and console blocks of ``markdown``, in order."""
    lines = markdown.splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        fence, start = match["fence"], i
        body: list[str] = []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i])
            i += 1
        i += 1  # the closing fence
        previous = next((ln.strip() for ln in reversed(lines[:start]) if ln.strip()), "")
        kind = _LANGS.get(match["lang"].lower())
        if kind is not None:
            code = textwrap.dedent("\n".join(body)) + "\n"
            needs = _NEEDS_MARK.match(previous)
            blocks.append(
                Block(kind, start + 1, code, previous == SKIP_MARK, needs["what"] if needs else "")
            )
    return blocks


def console_commands(code: str) -> list[str]:
    """Return the ``entur-oauth`` command lines of a console block (continuations joined)."""
    commands: list[str] = []
    pending: str | None = None
    for raw in code.splitlines():
        line = raw.strip()
        if pending is not None:
            pending += " " + line.rstrip("\\").strip()
            if not line.endswith("\\"):
                commands.append(pending)
                pending = None
            continue
        if line.startswith("$ "):
            command = line[2:].strip()
            if command.endswith("\\"):
                pending = command.rstrip("\\").strip()
            else:
                commands.append(command)
    return [c for c in commands if c.split(" ", 1)[0] == "entur-oauth"]


def _params() -> list[object]:
    if not README.exists():
        return [
            pytest.param(README, None, marks=pytest.mark.skip(reason=f"{README} does not exist"))
        ]
    return [
        pytest.param(path, block, id=f"{_name(path)}-{block.kind}-line{block.line}")
        for path, block in all_blocks()
    ]


@pytest.fixture(scope="module")
def readme_env() -> Iterator[dict[str, str]]:
    """A subprocess environment whose ENTUR_* variables point at a fake Entur on loopback."""
    fake = FakeEntur(samples=True)
    with fake.serve() as url:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ENTUR_", "PYTEST_"))}
        env.update(NO_NETWORK)
        env.update(fake.env(url, client_name="acme-readme"))
        yield env


def _run(command: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, env=env, cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.mark.parametrize(("document", "block"), _params())
@pytest.mark.slow
def test_readme_block_runs(
    document: Path,
    block: Block,
    readme_env: dict[str, str],
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    """Each python block (of the README, docs/*.md, CONTRIBUTING.md) runs (a script, or
    tests under pytest); each console block's entur-oauth commands exit 0."""
    if block.skip:
        pytest.skip(f"marked {SKIP_MARK}")
    where = f"{_name(document)} line {block.line}"
    if block.needs == "redis":
        # Skipped (or failed, in CI) by the fixture when redis-server is missing.
        readme_env = {**readme_env, "REDIS_URL": request.getfixturevalue("redis_url")}
        # The Cluster and Sentinel blocks get those too (from the Redis fixtures, which
        # skip or fail likewise).
        if "REDIS_CLUSTER_URL" in block.code:
            cluster = request.getfixturevalue("redis_cluster")
            readme_env["REDIS_CLUSTER_URL"] = cluster.url
            # Several start-up nodes, as the README's cluster example names them.
            urls = [node.url.removesuffix("/0") for node in cluster.nodes]
            readme_env["REDIS_CLUSTER_URLS"] = ",".join(urls)
        if "REDIS_SENTINELS" in block.code:
            group = request.getfixturevalue("redis_sentinel_shared")
            readme_env["REDIS_SENTINELS"] = ",".join(f"{h}:{p}" for h, p in group.addresses)
    elif block.needs:
        pytest.fail(f"{where}: unknown test-needs {block.needs!r}")
    if block.kind == "python":
        script = tmp_path / ("test_readme_block.py" if "def test_" in block.code else "block.py")
        script.write_text(block.code, encoding="utf-8")
        if script.name.startswith("test_"):
            command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
            # The README's tests are anyio's: pytest-asyncio (in the test group) would only
            # warn that its loop scope is unset, an error under -W error.
            command += ["-p", "no:asyncio", "-W", "error", str(script)]
        else:
            command = [sys.executable, "-W", "error", str(script)]
        result = _run(command, readme_env, tmp_path)
        assert result.returncode == 0, f"{where}:\n{result.stdout}\n{result.stderr}"
        return
    commands = console_commands(block.code)
    runnable = [c for c in commands if not _SHELL_SYNTAX.search(c) and "fake-server" not in c]
    if not runnable:
        pytest.skip("no entur-oauth command to run in this block")
    script = Path(sys.executable).with_name("entur-oauth")
    for line in runnable:
        result = _run([str(script), *shlex.split(line)[1:]], readme_env, tmp_path)
        assert result.returncode == 0, f"{where}: $ {line}\n{result.stdout}\n{result.stderr}"


def test_readme_has_a_runnable_python_block() -> None:
    """The README teaches with code that runs: at least one python block is not skipped."""
    assert README.exists()
    blocks = extract_blocks(README.read_text(encoding="utf-8"))
    assert any(b.kind == "python" and not b.skip for b in blocks)


SAMPLE = """\
# Title

```python
print("one")
```

<!-- skip-test -->

```py
raise SystemExit(1)
```

1. In a list:

   ```console
   $ entur-oauth token --header
   Authorization: Bearer ...
   $ export ENTUR_CLIENT_NAME=x
   $ entur-oauth request GET \\
       /geocoder/v1/autocomplete
   $ curl -H "Authorization: Bearer $(entur-oauth token)" https://example
   ```

~~~json
{"not": "run"}
~~~

<!-- test-needs: redis -->
```sh
$ entur-oauth fake-server
```
"""


def test_extract_blocks_reads_kinds_lines_indentation_and_skip_marks() -> None:
    """The runner finds python and console blocks, dedents them and honours skip marks."""
    blocks = extract_blocks(SAMPLE)
    assert [(b.kind, b.line, b.skip, b.needs) for b in blocks] == [
        ("python", 3, False, ""),
        ("python", 9, True, ""),
        ("console", 15, False, ""),
        ("console", 29, False, "redis"),
    ]
    assert blocks[0].code == 'print("one")\n'
    assert console_commands(blocks[2].code) == [
        "entur-oauth token --header",
        "entur-oauth request GET /geocoder/v1/autocomplete",
    ]
    assert console_commands(blocks[3].code) == ["entur-oauth fake-server"]


def test_readme_runs_a_redis_block() -> None:
    """The RedisTokenStore examples (docs/many-workers.md) are run against a real Redis, not
    skipped: the single, Cluster and Sentinel ones."""
    redis_blocks = [
        b for _, b in all_blocks() if "RedisTokenStore(" in b.code and b.kind == "python"
    ]
    assert len(redis_blocks) >= 3
    assert all(b.needs == "redis" and not b.skip for b in redis_blocks)
    assert any("REDIS_CLUSTER_URL" in b.code for b in redis_blocks)
    assert any("REDIS_SENTINELS" in b.code for b in redis_blocks)


def test_docs_pages_blocks_are_run_like_the_readmes() -> None:
    """Blocks of docs/*.md are collected, runnable ones included, so a section moved out of
    the README keeps its test."""
    if os.environ.get("TEST_README"):
        pytest.skip("TEST_README runs one file")
    pages = [path for path in documents() if path.parent.name == "docs"]
    assert pages, "no docs/*.md"
    collected = {path for path, block in all_blocks() if not block.skip}
    assert ROOT / "docs" / "many-workers.md" in collected


def _fake_server_transcript() -> list[str]:
    """The README's ``$ entur-oauth fake-server`` block: the lines it shows printed."""
    for _, block in all_blocks():
        lines = block.code.rstrip("\n").splitlines()
        if block.kind == "console" and lines and lines[0] == "$ entur-oauth fake-server":
            return lines[1:]
    pytest.fail("README.md shows no '$ entur-oauth fake-server' transcript")


@pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM")
@pytest.mark.slow
def test_readme_fake_server_transcript_matches_the_real_output() -> None:
    """``entur-oauth fake-server --port 0`` prints what the README shows, port aside."""
    expected = _fake_server_transcript()
    assert any("8765" in line for line in expected)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ENTUR_", "PYTEST_"))}
    script = Path(sys.executable).with_name("entur-oauth")
    process = subprocess.Popen(
        [str(script), "fake-server", "--port", "0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line.rstrip("\n"))

    threading.Thread(target=read, daemon=True).start()
    printed: list[str] = []
    try:
        while len(printed) < len(expected):
            printed.append(lines.get(timeout=30))
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
    match = re.search(r"listening on http://127\.0\.0\.1:(\d+) ", printed[0])
    assert match, printed[0]
    port = match[1]
    assert printed == [line.replace("8765", port) for line in expected]


# -- the README's word on the fake, checked against the fake ------------------------------

_TOKEN_OK = "`POST /oauth/token` with the right id, secret and audience"
_GRAPHQL = "`POST /journey-planner/v3/graphql` with `samples=True`"


def _fake_table() -> dict[str, str]:
    """The README's 'What the fake answers' table: request -> status column."""
    (text,) = (
        text
        for text in (path.read_text(encoding="utf-8") for path in documents())
        if "What the fake answers" in text
    )
    start = text.index("What the fake answers")
    rows: dict[str, str] = {}
    for line in text[start:].splitlines()[1:]:
        if rows and not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 2 and cells[0] not in {"request", "---"}:
            rows[cells[0]] = cells[1]
    return rows


async def _ask(fake: FakeEntur, row: str) -> list[httpx2.Response]:
    """Send what a README row describes to ``fake``; its answers (several for some rows)."""
    async with httpx2.AsyncClient(transport=fake.transport(), base_url="http://fake") as http:

        async def token(**changes: str) -> httpx2.Response:
            body = {
                "grant_type": "client_credentials",
                "client_id": fake.client_id,
                "client_secret": fake.client_secret,
                "audience": fake.audience,
                **changes,
            }
            return await http.post("/oauth/token", json=body, headers={"ET-Client-Name": "a-b"})

        valid = {
            "ET-Client-Name": "a-b",
            "Authorization": f"Bearer {(await token()).json()['access_token']}",
        }
        fake.reset()
        if row == _TOKEN_OK:
            return [await token()]
        if row == "`POST /oauth/token` with a wrong id or secret":
            return [await token(client_secret="wrong"), await token(client_id="wrong")]
        if row == "`POST /oauth/token` for another audience":
            return [await token(audience="https://elsewhere.test")]
        if row == "an API path without `ET-Client-Name`":
            return [
                await http.get(
                    "/geocoder/v1/autocomplete", headers={"Authorization": valid["Authorization"]}
                )
            ]
        if row == "a partner API path without a token, or with a revoked or expired one":
            answers = [await http.get("/sales/v1/offers", headers={"ET-Client-Name": "a-b"})]
            fake.revoke_all()
            answers.append(await http.get("/sales/v1/offers", headers=valid))
            return answers
        if row == "a partner API path with a valid token":
            return [await http.get("/sales/v1/offers", headers=valid)]
        if row == "`/geocoder/...` or `/journey-planner/...` without a token":
            named = {"ET-Client-Name": "a-b"}
            return [
                await http.get("/geocoder/v1/x", headers=named),
                await http.get("/journey-planner/v3/x", headers=named),
            ]
        if row == "`/forbidden/...` with a valid token":
            return [await http.get("/forbidden/reports", headers=valid)]
        if row == _GRAPHQL:
            graphql = "/journey-planner/v3/graphql"
            named = {"ET-Client-Name": "a-b"}
            return [
                await http.post(
                    graphql, json={"query": "{ serverInfo { version } }"}, headers=named
                ),
                await http.post(
                    graphql,
                    json={"query": "{ trip(from: {}) { tripPatterns { duration } } }"},
                    headers=named,
                ),
            ]
    raise AssertionError(f"README row {row!r} has no check here: add one")


@pytest.mark.anyio
async def test_readme_table_of_the_fakes_answers_matches_the_fake() -> None:
    """Each row of the README's 'What the fake answers' table is sent to a FakeEntur, which
    answers with the status the README gives (and the body it describes)."""
    rows = _fake_table()
    assert len(rows) >= 8
    for row, said in rows.items():
        fake = FakeEntur(samples=row == _GRAPHQL)
        answers = await _ask(fake, row)
        status = int(re.match(r"\d{3}", said)[0])  # type: ignore[index]
        assert [r.status_code for r in answers] == [status] * len(answers), row
        if "access_denied" in said:
            assert all(r.json()["error"] == "access_denied" for r in answers), row
        if row == _TOKEN_OK:
            assert answers[0].json()["access_token"].startswith("eyJ")
        if row == _GRAPHQL:
            assert answers[0].json()["data"] == {
                "serverInfo": {"version": "fake-entur", "otpVersion": "2.x"}
            }
            assert "tripPatterns" in answers[1].json()["data"]["trip"]


@pytest.mark.slow
def test_readme_graphql_command_gets_server_info(
    readme_env: dict[str, str], tmp_path: Path
) -> None:
    """The README's `entur-oauth request POST /journey-planner/v3/graphql` line, run against
    the fake, prints Journey Planner's serverInfo, as its query asks."""
    lines = [
        line
        for _, block in all_blocks()
        if block.kind == "console"
        for line in console_commands(block.code)
        if "serverInfo" in line
    ]
    assert lines, "README.md shows no serverInfo query"
    script = Path(sys.executable).with_name("entur-oauth")
    for line in lines:
        result = _run([str(script), *shlex.split(line)[1:]], readme_env, tmp_path)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["data"]["serverInfo"]["version"]


@pytest.mark.slow
def test_readme_logging_snippet_shows_the_librarys_log_lines(
    readme_env: dict[str, str], tmp_path: Path
) -> None:
    """The README's three-line logging snippet, followed by one call, shows the library's
    log lines on stderr: the ones the README quotes, the token by fingerprint only."""
    text = README.read_text(encoding="utf-8")
    (snippet,) = (
        b.code
        for b in extract_blocks(text)
        if b.kind == "python" and 'getLogger("entur_oauth")' in b.code
    )
    assert len([line for line in snippet.splitlines() if line.strip()]) == 3, snippet
    call = textwrap.dedent(
        """
        import anyio

        from entur_oauth import EnturClient


        async def main() -> None:
            async with EnturClient.from_env() as entur:
                await entur.get("/personalisation/v1/programs/1")


        anyio.run(main)
        """
    )
    script = tmp_path / "logging_snippet.py"
    script.write_text(snippet + call, encoding="utf-8")
    result = _run([sys.executable, "-W", "error", str(script)], readme_env, tmp_path)
    assert result.returncode == 0, result.stderr
    logged = result.stderr.splitlines()
    quoted = re.findall(r"`(DEBUG:entur_oauth:[^`]+)`", text)
    assert len(quoted) >= 2
    for line in quoted:
        # The README's fingerprint is an example: compare up to the last word.
        start = line.rsplit(" ", 1)[0]
        assert any(got.startswith(start) for got in logged), (line, result.stderr)
    assert not re.search(r"eyJ[\w-]*\.[\w-]+\.", result.stderr)


@pytest.mark.slow
def test_readme_synchronous_example_prints_what_its_comments_say(
    readme_env: dict[str, str], tmp_path: Path
) -> None:
    """The README's synchronous example (two asyncio.run calls, a new client in each) prints
    what its comments promise: the first call fetches a token, the second reuses it."""
    (block,) = (
        b
        for b in extract_blocks(README.read_text(encoding="utf-8"))
        if b.kind == "python" and "asyncio.run(fetch(" in b.code
    )
    promised = re.findall(r"# (\(\d+, \d+\)):", block.code)
    assert promised == ["(200, 1)", "(200, 0)"]
    script = tmp_path / "sync_block.py"
    script.write_text(block.code, encoding="utf-8")
    result = _run([sys.executable, "-W", "error", str(script)], readme_env, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == promised


# -- the documents hang together -----------------------------------------------------------

_LINK = re.compile(r"\]\((?P<target>[^)\s]+)\)")
_HEADING = re.compile(r"^(#{1,6}) (?P<title>.+?)\s*$")


def _headings(markdown: str) -> list[tuple[int, str]]:
    """The (level, title) of each heading outside code blocks."""
    headings, inside = [], False
    for line in markdown.splitlines():
        if _FENCE.match(line):
            inside = not inside
            continue
        if inside:
            continue
        match = _HEADING.match(line)
        if match:
            headings.append((len(match[1]), match["title"]))
    return headings


def _anchor(title: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to '-'."""
    return re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")


def test_links_between_the_documents_lead_somewhere() -> None:
    """Every relative link in the README, CONTRIBUTING.md and docs/*.md names a file that
    exists, and an anchor names a heading of that file (moving a section breaks no link)."""
    broken = []
    for path in documents():
        text = path.read_text(encoding="utf-8")
        for match in _LINK.finditer(text):
            target = match["target"]
            if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
                continue
            file, _, anchor = target.partition("#")
            linked = (path.parent / file).resolve() if file else path
            if not linked.exists():
                broken.append(f"{_name(path)}: {target} (no such file)")
            elif anchor and linked.suffix == ".md":
                anchors = {_anchor(t) for _, t in _headings(linked.read_text(encoding="utf-8"))}
                if anchor not in anchors:
                    broken.append(f"{_name(path)}: {target} (no such heading)")
    assert not broken, "\n".join(broken)


def test_readme_contents_lists_every_section_and_every_docs_page() -> None:
    """The README opens with its table of contents: a link to each of its sections, in
    order; and every docs/*.md page is linked from the README."""
    text = README.read_text(encoding="utf-8")
    sections = [t for level, t in _headings(text) if level == 2 and t != "Contents"]
    start = text.index("## Contents")
    contents = text[start : text.index("\n## ", start + 1)]
    listed = re.findall(r"^- \[.+?\]\(#([\w-]+)\)", contents, flags=re.MULTILINE)
    assert listed == [_anchor(t) for t in sections]
    if not os.environ.get("TEST_README"):
        for page in sorted((ROOT / "docs").glob("*.md")):
            assert f"](docs/{page.name})" in text, f"README does not link docs/{page.name}"
