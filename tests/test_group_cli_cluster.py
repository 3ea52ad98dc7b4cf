"""GroupConnectome on a real cluster started with dask's command line, and its faults.

``dask scheduler`` and two ``dask worker`` processes on 127.0.0.1 (lazyconn.testing.cluster):
results equal the in-process run, a worker killed mid-run changes nothing, the dashboard is
reported, and a scheduler killed mid-run is an error within seconds whose finished subjects
are kept in the results store for the re-run.
"""

import os
import signal
import threading
import time

import numpy as np
import pytest

from lazyconn.connectome import ConnectivityMeasure
from lazyconn.exceptions import ClusterConnectionError
from lazyconn.group import GroupConnectome
from lazyconn.group._cache import ResultStore
from lazyconn.maskers import NiftiSpheresMasker
from lazyconn.testing.cluster import CliCluster
from lazyconn.testing.group import TINY_SEEDS, tiny_study

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

N_SUBJECTS = 12
MASKER_KW = dict(seeds=TINY_SEEDS, radius=6, detrend=True, standardize="zscore_sample", t_r=2.0)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return tiny_study(
        tmp_path_factory.mktemp("cli-study"), n_subjects=N_SUBJECTS, shape=(10, 11, 12, 120)
    )


def _group(**kw):
    kw.setdefault("progress", False)
    return GroupConnectome(
        NiftiSpheresMasker(**MASKER_KW), ConnectivityMeasure(kind="correlation"), **kw
    )


@pytest.fixture(scope="module")
def in_process(study):
    paths, confounds = study
    return _group().fit(paths, confounds=confounds)


def _assert_same(group, reference):
    # float32 matrices; the group mean's summation order depends on where subjects ran.
    assert group.subjects_ == reference.subjects_ and not group.failed_
    np.testing.assert_allclose(group.subject_matrices_, reference.subject_matrices_, atol=1e-6)
    np.testing.assert_allclose(group.group_matrix_, reference.group_matrix_, atol=1e-6)


class _WhenStored:
    """Runs ``action`` once the results store holds a first subject (from another thread)."""

    def __init__(self, cache, action):
        self.store = ResultStore(cache)
        self.action = action
        self.stored_at_action = None
        self.at = None
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def _watch(self):
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            n = len(self.store.keys())
            if n:
                self.action()
                self.at, self.stored_at_action = time.monotonic(), n
                return
            time.sleep(0.02)


def test_equals_the_in_process_run_and_reports_the_dashboard(cli_cluster, study, in_process):
    import io
    import logging

    paths, confounds = study
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("lazyconn.group")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        group = _group(client=cli_cluster.address).fit(paths, confounds=confounds)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)
    _assert_same(group, in_process)
    expected = f"http://127.0.0.1:{cli_cluster.dashboard_port}/status"
    assert group.dashboard_link_ == expected
    assert f"dask dashboard: {expected}" in stream.getvalue()


def test_dashboard_is_printed_above_the_progress_bar(cli_cluster, study, capsys):
    paths, confounds = study
    _group(client=cli_cluster.address, progress=True).fit(paths[:2], confounds=confounds[:2])
    err = capsys.readouterr().err
    port = cli_cluster.dashboard_port
    assert f"[lazyconn] dask dashboard: http://127.0.0.1:{port}/status\n" in err
    assert "[lazyconn] subjects" in err.rsplit("dashboard", 1)[1]  # progress goes on below it


def test_a_worker_killed_mid_run_changes_nothing(cli_cluster, study, in_process, tmp_path):
    from distributed import Client

    paths, confounds = study
    with Client(cli_cluster.address, set_as_default=False) as client:
        victim = sorted(client.run(os.getpid).values())[0]
    cache = tmp_path / "cache"
    watcher = _WhenStored(cache, lambda: os.kill(victim, signal.SIGKILL))
    group = _group(client=cli_cluster.address, cache_dir=cache).fit(paths, confounds=confounds)
    watcher.thread.join(10)
    assert watcher.stored_at_action is not None and watcher.stored_at_action < N_SUBJECTS
    _assert_same(group, in_process)
    assert group.n_cached_ == 0 and len(ResultStore(cache).keys()) == N_SUBJECTS
    with Client(cli_cluster.address, set_as_default=False) as client:
        client.wait_for_workers(2, timeout=60)  # the nanny restarted the killed worker
        assert victim not in client.run(os.getpid).values()


def test_a_scheduler_killed_mid_run_keeps_finished_subjects(study, in_process, tmp_path):
    paths, confounds = study
    cache = tmp_path / "cache"
    with CliCluster(tmp_path / "cluster") as cluster:
        watcher = _WhenStored(cache, cluster.kill_scheduler)
        with pytest.raises(
            ClusterConnectionError,
            match=r"the dask scheduler at 'tcp://127\.0\.0\.1:\d+' was lost mid-run .*"
            r"subjects had finished .* re-run",
        ):
            _group(client=cluster.address, cache_dir=cache).fit(paths, confounds=confounds)
        failed_after = time.monotonic() - watcher.at
        assert failed_after < 15, f"the failure took {failed_after:.1f} s after the crash"
        kept = len(ResultStore(cache).keys())
        assert 1 <= kept < N_SUBJECTS
        cluster.stop()
        cluster.start()  # a new scheduler (new port) and workers
        group = _group(client=cluster.address, cache_dir=cache).fit(paths, confounds=confounds)
    assert group.n_cached_ == kept
    assert len(group.timings_["subjects"]) == N_SUBJECTS - kept
    _assert_same(group, in_process)


@pytest.mark.s3
def test_a_study_in_a_bucket_converted_and_analysed_on_the_cluster(
    cli_cluster, study, in_process, s3_bucket, tmp_path, capsys
):
    """`lazyconn convert --scheduler` of .nii.gz runs to s3://bucket/stores/ (one task per
    run), then GroupConnectome reading those stores on the workers with storage_options."""
    import nibabel as nib
    import s3fs
    from distributed import Client, get_task_stream

    from lazyconn.cli import main
    from lazyconn.testing.s3 import FAKE_KEY, FAKE_SECRET

    paths, confounds = study
    paths, confounds = paths[:4], confounds[:4]
    raw = []
    for p in paths:  # fMRIPrep's outputs are .nii.gz
        gz = tmp_path / (os.path.basename(p) + ".gz")
        nib.save(nib.load(p), gz)
        raw.append(str(gz))
    bucket, options = s3_bucket
    endpoint = options["client_kwargs"]["endpoint_url"]
    argv = [
        "convert",
        *raw,
        "-o",
        f"{bucket}/stores/",
        "--scheduler",
        cli_cluster.address,
        "--no-progress",
        "--storage-option",
        f"key={FAKE_KEY}",
        "--storage-option",
        f"secret={FAKE_SECRET}",
        "--storage-option",
        f"client_kwargs.endpoint_url={endpoint}",
        "--storage-option",
        "client_kwargs.region_name=eu-west-1",
    ]
    with Client(cli_cluster.address, set_as_default=False) as client:
        with get_task_stream(client) as stream:
            assert main(argv) == 0
        tasks = [t for t in stream.data if t["key"].startswith("_convert_one")]
    assert len(tasks) == len(raw)  # one graph, one task per run: each streamed by one worker
    stores = [f"{bucket}/stores/{os.path.basename(p)[:-4]}.zarr" for p in paths]
    results = f"{bucket}/results"  # the results store in the bucket too
    group = _group(client=cli_cluster.address, storage_options=options, cache_dir=results).fit(
        stores, confounds=confounds
    )
    again = _group(client=cli_cluster.address, storage_options=options, cache_dir=results).fit(
        stores, confounds=confounds
    )
    assert group.n_cached_ == 0 and again.n_cached_ == len(stores)
    np.testing.assert_array_equal(again.subject_matrices_, group.subject_matrices_)
    assert group.subjects_ == in_process.subjects_[:4]
    np.testing.assert_allclose(
        group.subject_matrices_, in_process.subject_matrices_[:4], atol=1e-6
    )
    fs = s3fs.S3FileSystem(**options)
    files = fs.find(bucket[5:])
    assert sum(f.endswith("/zarr.json") and "/stores/" in f for f in files) >= len(stores)
    assert any("/results/" in f for f in files)
    texts = [fs.cat_file(f).decode("latin-1") for f in files]
    texts += [repr(group), str(group.timings_), str(group.failed_), *capsys.readouterr()]
    for text in texts:
        assert FAKE_SECRET not in text and FAKE_KEY not in text


def test_the_run_is_imported_on_the_scheduler_and_every_worker_before_it_starts(cli_cluster):
    """import_on_cluster: the modules the graph needs on the scheduler and every worker, the
    step's too on the workers (stdlib modules nothing else imports stand for lazyconn's,
    which a fresh process takes seconds to import; the dashboard imports colorsys)."""
    import tabnanny
    import wave

    from distributed import Client

    from lazyconn.group._engine import import_on_cluster

    def _imported(names):  # local: pickled by value for the cluster's processes
        import sys

        return {name: name in sys.modules for name in names}

    graph = (tabnanny.check, [1, 2, 3])
    step = wave.Error("a wave.Error instance: its class is in module wave")
    names = ["tabnanny", "wave"]
    with Client(cli_cluster.address, set_as_default=False) as client:
        before = [
            client.run_on_scheduler(_imported, names),
            *client.run(_imported, names).values(),
        ]
        assert before == [{"tabnanny": False, "wave": False}] * 3  # fresh, for these modules
        import_on_cluster(client, step, graph)
        assert client.run_on_scheduler(_imported, names) == {"tabnanny": True, "wave": False}
        workers = client.run(_imported, names)
    assert list(workers.values()) == [{"tabnanny": True, "wave": True}] * 2
