"""The layering rules of DEVELOPERS' guide, checked on the source: runtime code never imports
training, benchmarks or the corpus builder; codecs stand on the front end and errors alone;
the split path is written once, in splitasr/pipeline.py."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "splitasr"
RUNTIME = tuple(
    p
    for p in (
        "model",
        "codecs",
        "pipeline",
        "decoding",
        "audio",
        "transcribe",
        "transport",
        "planner",
        "netem",
        "serving",
    )
    if (PACKAGE / p).is_dir() or (PACKAGE / f"{p}.py").is_file()
)
OFFLINE = ("splitasr.training", "splitasr.bench", "splitasr.corpus")


def _modules(part: str) -> list[Path]:
    path = PACKAGE / part
    return sorted(path.rglob("*.py")) if path.is_dir() else [path.with_suffix(".py")]


def _imports(path: Path) -> set[str]:
    """Every ``splitasr...`` module a file imports, at any depth (lazy imports included)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("splitasr")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("splitasr"):
            out |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return out


@pytest.mark.parametrize("part", RUNTIME)
def test_runtime_code_never_imports_training_bench_or_corpus(part):
    bad = {
        f"{p.relative_to(PACKAGE)}: {m}"
        for p in _modules(part)
        if p.is_file()
        for m in _imports(p)
        if m.startswith(OFFLINE)
    }
    assert not bad


def test_codecs_stand_on_the_front_end_and_errors_alone():
    allowed = ("splitasr.codecs", "splitasr.audio", "splitasr.errors")
    bad = {f"{p.name}: {m}" for p in _modules("codecs") for m in _imports(p) if not m.startswith(allowed)}
    assert not bad


def test_the_model_package_never_imports_the_corpus_or_the_manifest_reader():
    bad = {
        f"{p.name}: {m}"
        for p in _modules("model")
        for m in _imports(p)
        if m.startswith(("splitasr.corpus", "splitasr.manifest"))
    }
    assert not bad


def test_only_the_pipeline_strings_codec_and_tail_together():
    """A module (package or scripts) that calls a codec (``.compress(``/``.decompress(``) and
    ``.tail(`` is a copy of the split path; only pipeline.py may (learned-codec training
    runs the tail with gradients, and no codec)."""
    copies = []
    for p in [*PACKAGE.rglob("*.py"), *(PACKAGE.parent / "scripts").rglob("*.py")]:
        text = p.read_text()
        if p.name != "pipeline.py" and (".compress(" in text or ".decompress(" in text) and ".tail(" in text:
            copies.append(str(p.relative_to(PACKAGE.parent)))
    assert copies == []


def test_the_edge_runs_on_runtime_modules_alone():
    """Importing and using the edge side loads no training, benchmark, corpus or manifest code."""
    import subprocess
    import sys

    code = (
        "import sys, torch\n"
        "from splitasr.model.registry import load_model\n"
        "from splitasr.pipeline import Cloud, Edge\n"
        "m = load_model('ds2')\n"
        "sent = Edge(m).encode(torch.zeros(8000), 'proj', 'q8+ans')\n"
        "Cloud(m, decoder=m.make_decoder()).transcribe(sent.payload, 'proj', 'q8+ans')\n"
        "print(sorted(k for k in sys.modules if k.startswith(('splitasr.training', 'splitasr.bench',"
        " 'splitasr.corpus', 'splitasr.manifest'))))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
