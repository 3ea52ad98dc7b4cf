"""GroupConnectome checks every subject's inputs on the client before starting anything;
a script that would start a LocalCluster from its unguarded top level fails at once."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from lazyconn.connectome import ConnectivityMeasure
from lazyconn.exceptions import InputNotFoundError, ParameterError, TRWarning
from lazyconn.group import GroupConnectome
from lazyconn.maskers import NiftiSpheresMasker
from lazyconn.testing.group import TINY_SEEDS, tiny_study


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    directory = tmp_path_factory.mktemp("inputs")
    paths, confounds = tiny_study(directory, n_subjects=3, shape=(10, 11, 12, 30))
    tables = []
    for i, conf in enumerate(confounds):
        path = directory / f"sub-{i:02d}_confounds.tsv"
        np.savetxt(path, conf, delimiter="\t", header="a\tb", comments="")
        tables.append(str(path))
    return paths, tables, confounds


def _group(t_r=2.0, **kw):
    masker = NiftiSpheresMasker(seeds=TINY_SEEDS, radius=6, t_r=t_r, detrend=True)
    kw.setdefault("progress", False)
    # an address nothing listens on: reaching the cluster stage would fail differently
    kw.setdefault("client", "tcp://127.0.0.1:9")
    return GroupConnectome(masker, ConnectivityMeasure(kind="correlation"), **kw)


def test_every_bad_subject_is_named_before_any_cluster(study, tmp_path):
    paths, tables, _ = study
    short = tmp_path / "short.tsv"
    np.savetxt(short, np.zeros((29, 2)), delimiter="\t")
    imgs = [paths[0], str(tmp_path / "sub-09_bold.nii"), paths[2]]
    confounds = [str(tmp_path / "missing.tsv"), tables[1], str(short)]
    with pytest.raises(InputNotFoundError) as info:
        _group().fit(imgs, confounds=confounds)
    text = str(info.value)
    assert text.startswith("3 of 3 subjects have bad inputs (checked before any computation")
    assert "subject 'sub-00': confounds file '" in text and "missing.tsv' does not exist" in text
    assert "subject 'sub-09': src='" in text and "sub-09_bold.nii' does not exist" in text
    assert "subject 'sub-02': confounds has 29 rows but the run has 30 volumes" in text
    with pytest.raises(ParameterError, match=r"1 of 2 subjects .*\n  - subject 'sub-01': "):
        _group().fit(paths[:2], confounds=[tables[0], str(short)])


def test_with_skip_bad_subjects_are_listed_and_the_others_run(study, tmp_path):
    paths, tables, confounds = study
    group = _group(on_error="skip", client=None).fit(
        paths, confounds=[tables[0], str(tmp_path / "gone.tsv"), confounds[2]]
    )
    assert group.subjects_ == ["sub-00", "sub-02"]
    assert (
        list(group.failed_) == ["sub-01"] and "gone.tsv' does not exist" in group.failed_["sub-01"]
    )
    reference = _group(client=None).fit([paths[0], paths[2]], confounds=[tables[0], confounds[2]])
    np.testing.assert_array_equal(group.subject_matrices_, reference.subject_matrices_)


def test_t_r_contradicting_the_header_warns_with_both_values(study):
    paths, _, confounds = study
    with pytest.warns(
        TRWarning,
        match=r"t_r=0.72 \(the masker's\) differs from the repetition time in the header of "
        r"subject 'sub-00' and 1 other run\(s\) \(2 s; 2 of 2 runs\)",
    ):
        _group(t_r=0.72, client=None).fit(paths[:2], confounds=confounds[:2])


def _run_script(tmp_path, body):
    script = tmp_path / "analysis.py"
    script.write_text(textwrap.dedent(body))
    return subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )


def test_unguarded_script_fails_at_once_with_one_short_message(tmp_path):
    out = _run_script(
        tmp_path,
        """
        from lazyconn.group._cluster import client_context

        with client_context("local", n_workers=1) as client:
            print("started")
        """,
    )
    assert out.returncode == 1 and "started" not in out.stdout
    errors = [line for line in out.stderr.splitlines() if "UnguardedMainError:" in line]
    assert len(errors) == 1 and "freeze_support" not in out.stderr
    assert len(out.stderr.splitlines()) < 20
    assert (
        "client='local' is started from line 4 of '" in out.stderr
        and 'not under `if __name__ == "__main__":`' in out.stderr
    )


def test_guarded_script_passes_the_check(tmp_path):
    out = _run_script(
        tmp_path,
        """
        from lazyconn.group._cluster import check_main_guard


        def main():
            check_main_guard()  # what client="local" runs before starting workers
            print("checked")


        if __name__ == "__main__":
            main()
        """,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "checked"


def test_a_local_cluster_that_does_not_start_is_a_clear_error(monkeypatch):
    import distributed

    from lazyconn.exceptions import ClusterConnectionError
    from lazyconn.group._cluster import client_context

    def too_slow(**kwargs):
        raise TimeoutError("Nanny failed to start in 60 s")

    monkeypatch.setattr(distributed, "LocalCluster", too_slow)
    with (
        pytest.raises(
            ClusterConnectionError,
            match=r"client='local': the LocalCluster of 2 worker processes did not start "
            r"\(TimeoutError: Nanny failed to start in 60 s\)\. .* or use client=None",
        ),
        client_context("local", n_workers=2),
    ):
        pass
