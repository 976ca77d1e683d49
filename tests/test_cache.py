"""Cached results are keyed by the code that computes them, not only by their settings."""

import types

import pytest

from wsolkit.evaluation import cached_result, code_fingerprint


def _module(source: str, tmp_path, name: str) -> types.ModuleType:
    import importlib.util

    path = tmp_path / f"{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_an_edited_protocol_is_recomputed_and_the_unedited_one_is_served(tmp_path):
    old = _module("def score(x):\n    return x + 1\n", tmp_path, "protocol_v1")
    calls = []

    def compute(fn):
        calls.append(fn)
        return {"value": fn(1)}

    first = cached_result(tmp_path, "r", ["data"], lambda: compute(old.score), code=[old.score])
    again = cached_result(tmp_path, "r", ["data"], lambda: compute(old.score), code=[old.score])
    assert first == again == {"value": 2} and len(calls) == 1
    new = _module("def score(x):\n    return x + 2\n", tmp_path, "protocol_v2")
    edited = cached_result(tmp_path, "r", ["data"], lambda: compute(new.score), code=[new.score])
    assert edited == {"value": 3} and len(calls) == 2


def test_the_default_key_covers_the_whole_package_and_unreadable_code_is_named():
    assert code_fingerprint() == code_fingerprint(None) and len(code_fingerprint()) == 10
    with pytest.raises(TypeError, match="source"):
        code_fingerprint([len])
