"""`mrm` ends bad input and bad settings with one line ``mrm: error: ...`` and exit status 2.

The command runs as a real process, so the exit status and stderr are the real ones. One run
is ``python -m mrm_lightning`` itself; the other cases fork from one process that has already
imported the package (the same interpreter, code and entry point, minus ~6 s of imports each),
and all of them run at once.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mrm_lightning.cli import main
from mrm_lightning.cli.errors import one_line, user_error_line
from mrm_lightning.data.records import RecordError
from tests.conftest import REPO
from tests.tiny_encoder import build_tiny_bert

TINY = str(REPO / "configs/tiny.yaml")
TEXT = str(REPO / "tests/fixtures/use/text.yaml")

# Forks one child per case after the slow imports; each child runs `python -m mrm_lightning`'s
# code with its own argv, environment, stdout and stderr, and the parent records its status.
# A child ends as the interpreter would (a SystemExit's code; an exception's traceback and 1)
# but skips the interpreter's ~1 s of clean-up with os._exit.
DRIVER = textwrap.dedent(
    """
    import json, os, runpy, sys
    import mrm_lightning.training.lightning_cli  # the slow imports, once
    folder, cases = sys.argv[1], json.loads(sys.argv[2])
    children = {}
    for name, (argv, env) in cases.items():
        pid = os.fork()
        if pid == 0:
            for fd, suffix in ((1, "out"), (2, "err")):
                os.dup2(os.open(f"{folder}/{name}.{suffix}", os.O_WRONLY | os.O_CREAT), fd)
            os.environ.update(env)
            sys.argv = ["mrm", *argv]
            try:
                runpy.run_module("mrm_lightning", run_name="__main__")
                code = 0
            except SystemExit as stop:
                code = stop.code if isinstance(stop.code, int) else stop.code is not None
                if stop.code is not None and not isinstance(stop.code, int):
                    print(stop.code, file=sys.stderr)
            except BaseException:
                sys.excepthook(*sys.exc_info())
                code = 1
            sys.stdout.flush(), sys.stderr.flush()
            os._exit(int(code))
        children[pid] = name
    codes = {children[pid]: os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children}
    print(json.dumps(codes))
    """
)


def text_args(folder: Path, paths: list[Path]) -> list[str]:
    return [
        "fit",
        "--config",
        TEXT,
        "--data.source.init_args.paths",
        json.dumps([str(p) for p in paths]),
        "--data.source.init_args.encoder.init_args.model",
        str(folder / "bert"),
        "--data.source.init_args.cache_dir",
        str(folder / "cache"),
        "--trainer.logger",
        "false",
    ]


def tiny_args(*extra: str) -> list[str]:
    return ["fit", "--config", TINY, "--trainer.logger", "false", *extra]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """name -> (exit status, stdout + stderr, stderr) of every case, run concurrently."""
    folder = tmp_path_factory.mktemp("errors")
    build_tiny_bert(folder / "bert")
    bad = folder / "pairs.csv"  # line 3 has no rejected text
    bad.write_text("user_id,prompt,chosen,rejected\nu1,p,a,b\nu1,q,c\nu2,r,e,f\n")
    missing = folder / "no_such_pairs.jsonl"
    no_debug = {"MRM_DEBUG": ""}
    cases = {
        "missing_file": (text_args(folder, [missing]), no_debug),
        "unknown_setting": (tiny_args("--model.no_such_thing", "1"), no_debug),
        "bad_value": (tiny_args("--model.inner_steps", "-1"), no_debug),
        "bad_type": (tiny_args("--model.inner_steps", "many"), no_debug),
        "missing_config": (["fit", "--config", str(folder / "nope.yaml")], no_debug),
        "embed_synthetic": (["embed", "--config", TINY, "--trainer.logger", "false"], no_debug),
        "bad_value_env_debug": (tiny_args("--model.inner_steps", "-1"), {"MRM_DEBUG": "1"}),
        "unknown_setting_debug": (tiny_args("--debug", "--model.no_such_thing", "1"), no_debug),
        "malformed_debug": (["--debug", *text_args(folder, [bad])], no_debug),
    }
    env = {**os.environ, "MRM_DEBUG": ""}
    real = subprocess.Popen(  # python -m mrm_lightning itself, alongside the driver
        [sys.executable, "-m", "mrm_lightning", *text_args(folder, [bad])],
        cwd=folder,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    driver = subprocess.run(
        [sys.executable, "-c", DRIVER, str(folder), json.dumps(cases)],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert driver.returncode == 0, driver.stderr
    codes = json.loads(driver.stdout.splitlines()[-1])
    results = {}
    for name in cases:
        out, err = ((folder / f"{name}.{s}").read_text() for s in ("out", "err"))
        results[name] = (codes[name], out + err, err)
    out, err = real.communicate(timeout=120)
    results["malformed"] = (real.returncode, out + err, err)
    results["paths"] = (bad, missing)
    return results


def last_line(text: str) -> str:
    return [line for line in text.splitlines() if line.strip()][-1]


def assert_one_line_error(run, *named: str) -> str:
    status, output, err = run
    assert status == 2, output
    line = last_line(err)
    assert line.startswith("mrm: error: "), output
    assert all(name in line for name in named), line
    assert "Traceback" not in output
    return line


def test_malformed_record_names_file_line_and_field(runs):
    bad, _ = runs["paths"]
    line = assert_one_line_error(runs["malformed"])
    assert line == f"mrm: error: {bad}:3: field 'rejected': missing"


def test_missing_file(runs):
    _, missing = runs["paths"]
    assert assert_one_line_error(runs["missing_file"]) == f"mrm: error: {missing}: no such file"


def test_unknown_setting_is_one_line_naming_it(runs):
    line = assert_one_line_error(runs["unknown_setting"], "--model.no_such_thing")
    assert "usage:" not in runs["unknown_setting"][1]  # not jsonargparse's 90-line usage block
    assert line.endswith("(see mrm fit --help)")


def test_bad_value_names_the_setting(runs):
    line = assert_one_line_error(runs["bad_value"])
    assert line == "mrm: error: model.inner_steps must be >= 0, got -1"


def test_badly_typed_value_names_the_setting(runs):
    assert_one_line_error(runs["bad_type"], "'model.inner_steps'", "many")


def test_missing_config_file(runs):
    assert_one_line_error(runs["missing_config"], "'config'", "nope.yaml")


def test_embed_of_a_source_without_text(runs):
    assert_one_line_error(runs["embed_synthetic"], "data.source is SyntheticPopulation")


def test_debug_flag_shows_the_traceback(runs):
    status, output, err = runs["malformed_debug"]
    assert status not in (0, 2) and "Traceback" in err
    assert last_line(err).startswith("mrm_lightning.data.records.RecordError: ")
    assert "field 'rejected': missing" in last_line(err)


def test_debug_environment_variable_shows_the_traceback(runs):
    status, output, err = runs["bad_value_env_debug"]
    assert status not in (0, 2) and "Traceback" in err
    assert last_line(err) == "ValueError: model.inner_steps must be >= 0, got -1"


def test_debug_flag_shows_the_full_usage_of_a_usage_error(runs):
    status, output, err = runs["unknown_setting_debug"]
    assert status == 2 and "usage:" in err and "mrm: error:" not in err
    assert last_line(err) == "error: unrecognized arguments: --model.no_such_thing 1"


# --- in the same process ------------------------------------------------------------------------


def test_main_called_from_python_exits_2_with_the_message(capsys, monkeypatch):
    monkeypatch.setenv("MRM_DEBUG", "")  # restored after the test
    with pytest.raises(SystemExit, match="inner_steps") as stop:
        main(tiny_args("--model.inner_steps", "-1"))
    assert stop.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].startswith("mrm: error: model.inner_steps")


def test_debug_is_stripped_from_sys_argv_and_passed_on_in_the_environment(monkeypatch):
    # DDP re-runs sys.argv in the other processes: they must see the same command
    monkeypatch.setenv("MRM_DEBUG", "")  # restored after the test
    monkeypatch.setattr(sys, "argv", ["mrm", "--debug", *tiny_args("--model.inner_steps", "-1")])
    with pytest.raises(ValueError, match="inner_steps"):  # the exception itself, not one line
        main()
    assert "--debug" not in sys.argv and os.environ["MRM_DEBUG"] == "1"


def raise_chain(outer: type[BaseException], inner: BaseException) -> BaseException:
    try:
        try:
            raise inner
        except BaseException as error:
            raise outer("wrapped") from error
    except BaseException as error:
        return error


def test_errors_wrapped_by_other_code_are_found():
    record = RecordError("data.csv", 12, "score", "missing")
    assert user_error_line(raise_chain(RuntimeError, record)) == (
        "data.csv:12: field 'score': missing"
    )
    missing = FileNotFoundError(2, "No such file or directory", "gone.jsonl")
    assert user_error_line(raise_chain(RuntimeError, missing)) == "gone.jsonl: no such file"


def test_other_exceptions_are_bugs_and_keep_their_traceback():
    import torch

    try:
        torch.zeros(2).view(3)
    except RuntimeError as error:
        assert user_error_line(error) is None
    try:
        int("x")  # a ValueError, but raised outside the package: no message written for users
    except ValueError as error:
        assert user_error_line(error) is None
    assert user_error_line(raise_chain(KeyError, TypeError("t"))) is None


def test_one_line_joins_jsonargparse_messages():
    message = 'Parser key "data.source":\n  Problem:\n    Parser key "num_users":\n      bad'
    assert one_line(message) == "setting 'data.source': Problem: setting 'num_users': bad"
