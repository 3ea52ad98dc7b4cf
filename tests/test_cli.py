"""The ``lazyconn`` command line."""

import subprocess
import sys

import numpy as np
import pytest

import lazyconn
from lazyconn import cli
from lazyconn.exceptions import InputNotFoundError


def test_convert_one_file_to_named_store(make_nifti, tmp_path, capsys):
    path, ref = make_nifti("run.nii.gz")
    store = str(tmp_path / "out.zarr")
    assert cli.main(["convert", path, "-o", store, "--chunks", "4,5,6", "--no-progress"]) == 0
    assert f"-> {store}" in capsys.readouterr().out
    img = lazyconn.load(store)
    assert img.chunks == ((4, 3), (5, 3), (6, 3), (20,))
    np.testing.assert_array_equal(img.data.compute(), ref)


def test_convert_many_files_into_directory(make_nifti, tmp_path):
    made = [make_nifti(f"sub-{i}_bold.nii.gz", shape=(7, 8, 9, 5)) for i in range(2)]
    out = tmp_path / "stores"
    assert cli.main(["convert", *[p for p, _ in made], "-o", str(out), "--no-progress"]) == 0
    for i, (_, ref) in enumerate(made):
        np.testing.assert_array_equal(
            lazyconn.load(str(out / f"sub-{i}_bold.zarr")).data.compute(), ref
        )


def test_convert_default_destination_next_to_source(make_nifti, tmp_path):
    path, ref = make_nifti("run.nii")
    assert cli.main(["convert", path, "--no-progress", "--dtype", "float64"]) == 0
    img = lazyconn.load(str(tmp_path / "run.zarr"))
    assert img.dtype == np.float64
    np.testing.assert_array_equal(img.data.compute(), ref)


def test_info_prints_repr(make_nifti, capsys):
    path, _ = make_nifti("run.nii.gz")
    assert cli.main(["info", path]) == 0
    out = capsys.readouterr().out
    assert "<LazyImage shape=(7, 8, 9, 20) dtype=float32" in out and "t_r=2 s" in out


def test_errors_are_reported_with_exit_status_1(tmp_path, make_nifti, capsys):
    missing = str(tmp_path / "missing.nii.gz")
    assert cli.main(["convert", missing, "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("lazyconn convert: error: src=") and "does not exist" in err
    path, _ = make_nifti("run.nii")
    assert cli.main(["convert", path, "--no-progress"]) == 0
    assert cli.main(["convert", path, "--no-progress"]) == 1
    err = capsys.readouterr().err
    # the advice names the flag the user types, not the Python argument
    assert "already exists" in err and "--overwrite" in err and "overwrite=True" not in err
    assert cli.main(["convert", path, "--no-progress", "--overwrite"]) == 0


def test_argument_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["convert", "a.nii", "--chunks", "4,x,4"])
    assert info.value.code == 2
    assert "--chunks='4,x,4' is not valid" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main([])
    with pytest.raises(SystemExit):
        cli.main(["convert", "a.nii", "--storage-option", "novalue"])


def test_storage_options_nest_and_parse_json():
    args = cli.build_parser().parse_args(
        [
            "info",
            "s3://b/x.zarr",
            "--storage-option",
            "anon=true",
            "--storage-option",
            "client_kwargs.endpoint_url=http://127.0.0.1:9000",
        ]
    )
    assert cli._nested(args.storage_option) == {
        "anon": True,
        "client_kwargs": {"endpoint_url": "http://127.0.0.1:9000"},
    }


def test_subcommand_table_is_the_single_registry(monkeypatch, capsys):
    def add_hello(parser):
        parser.add_argument("--name", default="world")

    def run_hello(args):
        """Say hello."""
        print(f"hello {args.name}")
        return 0

    monkeypatch.setitem(cli.COMMANDS, "hello", (add_hello, run_hello))
    assert cli.main(["hello", "--name", "lazyconn"]) == 0
    assert capsys.readouterr().out == "hello lazyconn\n"
    assert "Say hello." in cli.build_parser().format_help()


@pytest.mark.parametrize("module", ["lazyconn", "lazyconn.cli"])
def test_console_script_entry_point(module):
    out = subprocess.run(
        [sys.executable, "-m", module, "--help"], capture_output=True, text=True, check=True
    )
    assert "convert" in out.stdout and "info" in out.stdout and "demo" in out.stdout


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"lazyconn {lazyconn.__version__}"


def test_messages_name_the_flags_of_the_command():
    parser = cli.build_parser()
    convert = parser._subparsers._group_actions[0].choices["convert"]
    text = "dst='a.zarr' exists; pass overwrite=True. chunks=(0,) is bad; n_overwrite=True stays"
    assert cli.in_cli_terms(text, convert) == (
        "dst='a.zarr' exists; pass --overwrite. --chunks=(0,) is bad; n_overwrite=True stays"
    )


def test_progress_is_plain_lines_on_stderr_when_not_a_terminal(make_nifti, tmp_path, capsys):
    path, _ = make_nifti("run.nii.gz")
    assert cli.main(["convert", path, "-o", str(tmp_path / "o.zarr")]) == 0
    captured = capsys.readouterr()  # pytest's capture is not a terminal
    assert "[lazyconn] convert: tasks 100%" in captured.err and "\r" not in captured.err
    assert "convert:" not in captured.out and "-> " in captured.out


def test_mistyped_store_path_lists_every_accepted_kind(tmp_path, capsys):
    assert cli.main(["info", str(tmp_path / "stores" / "sub-01.zar")]) == 1
    err = capsys.readouterr().err
    assert "does not exist; expected a .nii or .nii.gz file, or a lazyconn zarr store" in err
    with pytest.raises(
        InputNotFoundError,
        match=r"src='.*typo.zarr' does not exist; expected "
        r"a .nii or .nii.gz file, or a lazyconn zarr store \(a folder ending",
    ):
        lazyconn.load(str(tmp_path / "typo.zarr"))
