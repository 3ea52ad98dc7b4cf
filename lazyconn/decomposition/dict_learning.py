"""Dictionary learning (nilearn's ``DictLearning``) over lazily computed per-subject reductions."""

from __future__ import annotations

import functools
import numbers
import warnings

import numpy as np

from lazyconn._utils import warn
from lazyconn.decomposition._base import CoreThreads, _BaseDecomposition, _check_positive_int
from lazyconn.decomposition._stack import StackColumns, TrainingRows
from lazyconn.decomposition.canica import CanICA
from lazyconn.exceptions import ParameterError

RIDGE_ALPHA = 1e-8


def _compute_loadings(components, data):
    """nilearn's ``_compute_loadings``: ridge (alpha=1e-8, no intercept) of the data on
    the components, then every column (sample) scaled to unit norm.

    The ridge is solved by its normal equations (C Cᵀ + a I) W = C Dᵀ, as scikit-learn's
    ``Ridge(fit_intercept=False)`` solves them ('cholesky', the solver it picks for dense
    data): in memory the same products in the same layouts and dtype, so the same numbers,
    without ``Ridge.fit``'s copy of the whole stack (it copies y); out of core (a
    :class:`~lazyconn.decomposition._stack.ScratchStack`) C Dᵀ is summed over the stack's
    column blocks, in float64. scikit-learn's ``Ridge``
    itself takes over when the dtypes differ or the system is singular (its fallback).
    """
    from scipy import linalg

    in_memory = isinstance(data, np.ndarray)
    if in_memory and components.dtype == data.dtype:
        # scikit-learn: X = Cᵀ (an F-ordered copy), A = XᵀX, Xy = Xᵀy with y = Dᵀ.
        c = np.array(components.T, order="K").T
        a, rhs = c @ c.T, c @ data.T
        a.flat[:: len(c) + 1] += np.asarray(RIDGE_ALPHA, dtype=a.dtype)
        try:
            loadings = linalg.solve(a, rhs, assume_a="pos", overwrite_a=True)
        except linalg.LinAlgError:
            loadings = None
    elif not in_memory:  # a ScratchStack, read in column blocks
        c = np.asarray(components, dtype=np.float64)
        # each block's product in the stack's dtype (no float64 copy of the block), summed
        # in float64
        c_block = np.asarray(components, dtype=data.dtype)
        rhs = np.zeros((len(c), data.shape[0]))
        for c0, c1, block in data.blocks():
            rhs += c_block[:, c0:c1] @ block.T
        a = c @ c.T
        a.flat[:: len(c) + 1] += RIDGE_ALPHA
        loadings = linalg.solve(a, rhs, assume_a="pos", overwrite_a=True)
        loadings = loadings.astype(np.result_type(components.dtype, data.dtype))
    if in_memory and (components.dtype != data.dtype or loadings is None):
        from sklearn.linear_model import Ridge

        ridge = Ridge(fit_intercept=False, alpha=RIDGE_ALPHA)
        ridge.fit(components.T, np.asarray(data.T))
        loadings = ridge.coef_.T
    norms = np.sqrt(np.sum(loadings**2, axis=0))
    norms[norms == 0] = 1
    loadings /= norms[np.newaxis, :]
    return loadings


#: scikit-learn (major, minor) versions whose private
#: ``_cd_fast.enet_coordinate_descent_gram(w, alpha, beta, Q, q, y, max_iter, tol, rng,
#: random, positive, do_screening)`` :func:`_lasso_cd_code` was checked against (bit-equal
#: mini-batch dictionaries, tests/test_decomposition.py). Other versions take scikit-learn's
#: public path.
CD_FAST_VERSIONS = {(1, 9)}


#: scikit-learn (major, minor) versions whose ``MiniBatchDictionaryLearning.fit`` with a
#: ``dict_init`` draws nothing before it shuffles a copy of X's rows with its random state
#: (``X_train = X.copy(); random_state.shuffle(X_train)``), checked for
#: :func:`_dict_learning_online`'s in-place shuffle (bit-equal dictionaries,
#: tests/test_decomposition.py). Other versions shuffle their copy.
SHUFFLE_IN_PLACE_VERSIONS = {(1, 9)}


#: scikit-learn (major, minor) versions whose ``MiniBatchDictionaryLearning._minibatch_step``
#: (``_sparse_encode`` of the batch, then ``_update_inner_stats`` and ``_update_dict``)
#: :func:`_minibatch_class` replays with :func:`_lasso_cd_code` as the encoder, checked for
#: bit-equal dictionaries (tests/test_decomposition.py). Other versions run their own step.
MINIBATCH_STEP_VERSIONS = {(1, 9)}


def _sklearn_version():
    import sklearn

    try:
        return tuple(int(p) for p in sklearn.__version__.split(".")[:2])
    except ValueError:
        return None


def _cd_fast_solver():
    """The private Cython solver when this scikit-learn is a checked version, else None."""
    try:
        from sklearn.linear_model import _cd_fast

        solver = _cd_fast.enet_coordinate_descent_gram
    except (ImportError, AttributeError):
        return None
    return solver if _sklearn_version() in CD_FAST_VERSIONS else None


@functools.cache
def _minibatch_class():
    """scikit-learn's ``MiniBatchDictionaryLearning``, or for the checked versions
    (:data:`MINIBATCH_STEP_VERSIONS`) a subclass whose mini-batch step codes the batch's
    samples with :func:`_lasso_cd_code`: the same Cython solver on the same inputs as
    scikit-learn's ``Lasso`` (the same numbers), without its per-sample Python overhead."""
    from sklearn.decomposition import MiniBatchDictionaryLearning

    if _sklearn_version() not in MINIBATCH_STEP_VERSIONS:
        return MiniBatchDictionaryLearning
    from sklearn.decomposition._dict_learning import _update_dict

    class _MiniBatchDictionaryLearning(MiniBatchDictionaryLearning):
        def fit(self, X, y=None):
            # threads for every step's samples, made once (a batch takes milliseconds)
            with CoreThreads() as threads:
                self._lasso_threads = threads
                try:
                    return super().fit(X, y)
                finally:
                    del self._lasso_threads

        def _minibatch_step(self, X, dictionary, random_state, step):
            code = None
            if self._fit_algorithm == "lasso_cd" and not self.positive_code:
                threads = getattr(self, "_lasso_threads", None)
                code = _lasso_cd_code(X, dictionary, self.alpha, self.transform_max_iter, threads)
            if code is None:
                return super()._minibatch_step(X, dictionary, random_state, step)
            # the rest of scikit-learn 1.9's step, as it is
            batch_size = X.shape[0]
            batch_cost = (
                0.5 * ((X - code @ dictionary) ** 2).sum() + self.alpha * np.sum(np.abs(code))
            ) / batch_size
            self._update_inner_stats(X, code, batch_size, step)
            _update_dict(
                dictionary,
                X,
                code,
                self._A,
                self._B,
                verbose=self.verbose,
                random_state=random_state,
                positive=self.positive_dict,
            )
            return batch_cost

        def fit_rows(self, rows):
            """``fit(X)`` with ``shuffle=False`` (scikit-learn 1.9's loop, replayed), X
            being a :class:`~lazyconn.decomposition._stack.TrainingRows` in training
            order: each mini-batch ``X[batch]`` is read from it, the same rows (C order,
            X's dtype) in the same order, so the dictionary is ``fit(X)``'s bit for bit.
            Needs a ``dict_init`` (scikit-learn's own initialisation reads X)."""
            import itertools

            from sklearn import config_context
            from sklearn.utils import check_random_state, gen_batches

            if self.dict_init is None:
                raise ValueError("fit_rows needs a dict_init")
            self._validate_params()
            # what _check_params and _initialize_dict read of X: its shape and dtype
            x = np.lib.stride_tricks.as_strided(np.zeros(1, rows.dtype), rows.shape, (0, 0))
            n_samples, n_features = rows.shape
            self.n_features_in_ = n_features
            with config_context(skip_parameter_validation=True), CoreThreads() as threads:
                self._lasso_threads = threads
                try:
                    self._check_params(x)
                    self._random_state = check_random_state(self.random_state)
                    dictionary = self._initialize_dict(x, self._random_state)
                    old_dict = dictionary.copy()
                    if self.verbose:
                        print("[dict_learning]")
                    k = self._n_components
                    self._A = np.zeros((k, k), dtype=rows.dtype)
                    self._B = np.zeros((n_features, k), dtype=rows.dtype)
                    self._ewa_cost = None
                    self._ewa_cost_min = None
                    self._no_improvement = 0
                    batches = itertools.cycle(gen_batches(n_samples, self._batch_size))
                    n_steps_per_iter = int(np.ceil(n_samples / self._batch_size))
                    n_steps = self.max_iter * n_steps_per_iter
                    i = -1  # to allow max_iter = 0
                    for i, batch in zip(range(n_steps), batches, strict=False):
                        x_batch = rows.rows(batch.start, batch.stop)
                        batch_cost = self._minibatch_step(
                            x_batch, dictionary, self._random_state, i
                        )
                        if self._check_convergence(
                            x_batch, batch_cost, dictionary, old_dict, n_samples, i, n_steps
                        ):
                            break
                        if self.callback is not None:
                            self.callback(locals())
                        old_dict[:] = dictionary
                finally:
                    del self._lasso_threads
            self.n_steps_ = i + 1
            self.n_iter_ = np.ceil(self.n_steps_ / n_steps_per_iter)
            self.components_ = dictionary
            return self

    return _MiniBatchDictionaryLearning


def _streams_online() -> bool:
    """Whether this scikit-learn's mini-batch fit is replayed from a file
    (:meth:`_minibatch_class`'s ``fit_rows``): its loop, its draws before it and its step
    are the checked ones (:data:`SHUFFLE_IN_PLACE_VERSIONS`,
    :data:`MINIBATCH_STEP_VERSIONS`)."""
    version = _sklearn_version()
    return version in MINIBATCH_STEP_VERSIONS and version in SHUFFLE_IN_PLACE_VERSIONS


def _permute_rows(x, perm, inverse=False, columns=64):
    """``x[:] = x[perm]`` (or its inverse, ``x[perm] = x``) in place, ``columns`` columns at
    a time: a temporary of that many columns instead of a copy of ``x``."""
    for start in range(0, x.shape[1], columns):
        cols = slice(start, start + columns)
        if inverse:
            x[perm, cols] = np.ascontiguousarray(x[:, cols])
        else:
            x[:, cols] = x[perm, cols]


#: Solvers :func:`_lasso_cd_code` has called once with its arguments (afterwards every
#: sample of a batch goes to the threads at once).
_CHECKED_SOLVERS: list = []


class _ShuffledRows:
    """The rows of an in-memory ``x`` in the order ``order``, for ``fit_rows``: ``rows(a,
    b)`` is ``x[order[a:b]]`` (a C-ordered copy, as a slice of the shuffled ``x``'s)."""

    def __init__(self, x: np.ndarray, order: np.ndarray):
        self.x, self.order = x, order
        self.shape, self.dtype = x.shape, x.dtype

    def rows(self, start: int, stop: int) -> np.ndarray:
        return self.x[self.order[start:stop]]


def _lasso_cd_code(X, dictionary, alpha, max_iter, threads=None):
    """scikit-learn's ``sparse_encode(X, dictionary, algorithm="lasso_cd", alpha=alpha,
    max_iter=max_iter)`` (``n_jobs=1``, no ``init``), the same numbers, without its
    per-sample overhead; None when the private solver is not available in the checked
    form (:data:`CD_FAST_VERSIONS`, or a ``TypeError`` on the first call): the caller then
    uses scikit-learn's public path.

    scikit-learn fits one ``Lasso`` with a target per sample, which loops in Python over
    ``enet_path`` (about 0.3 ms of checks and copies per sample, for an 8-coefficient
    problem: most of the online learning's time on the seeds' study). This calls the same
    Cython solver (``enet_coordinate_descent_gram``) with the same Gram matrix, ``Xᵀy``
    product (same call, same memory layouts), regularisation, tolerance and zero start,
    sample by sample, split between the :class:`~lazyconn.decomposition._base.CoreThreads`
    ``threads`` if given (the solver runs without the GIL).
    """
    from sklearn.utils import check_random_state

    solver = _cd_fast_solver()
    if solver is None:
        return None

    # what check_array(order="C", dtype=[np.float64, np.float32]) makes of the fit's float
    # arrays, without its checks (a tenth of the online learning's time)
    dictionary, X = np.asarray(dictionary, order="C"), np.asarray(X, order="C")
    if not {dictionary.dtype, X.dtype} <= {np.dtype(np.float32), np.dtype(np.float64)}:
        return None
    n_samples, n_features = X.shape
    n_components = dictionary.shape[0]
    gram = np.dot(dictionary, dictionary.T).astype(X.dtype, copy=False)
    # Lasso(alpha=alpha / n_features, fit_intercept=False, precompute=gram, tol=1e-8)
    # .fit(dictionary.T, X.T): its n_samples is our n_features.
    lasso_alpha = float(alpha) / n_features
    l1_reg = lasso_alpha * 1.0 * n_features
    l2_reg = lasso_alpha * (1.0 - 1.0) * n_features
    design = np.array(dictionary.T, dtype=X.dtype, order="K")
    # scikit-learn copies X.T here (np.array, order "K"); a view has the same layout and
    # values (the solver reads y only), without the copy.
    targets = X.T
    xy = np.empty((n_components, n_samples), dtype=X.dtype, order="F")
    np.dot(targets.T, design, out=xy.T)
    # Unused (cyclic coordinate selection), but the solver draws a seed from it, as in
    # scikit-learn's Lasso: numpy's global generator, which a fit with random_state=None uses.
    rng = check_random_state(None)
    code = np.empty((n_samples, n_components), dtype=X.dtype)

    def solve(samples):
        for k in samples:
            w = np.zeros(n_components, dtype=X.dtype)
            code[k] = solver(
                w, l1_reg, l2_reg, gram, xy[:, k], targets[:, k], max_iter, 1e-8, rng, 0, 0, 1
            )[0]

    first = 0
    if solver not in _CHECKED_SOLVERS:
        try:
            solve([0])  # a changed signature fails here, before any thread starts
        except TypeError:
            return None
        _CHECKED_SOLVERS.append(solver)
        first = 1
    if threads is None:
        solve(range(first, n_samples))
    else:
        threads.map(solve, np.arange(first, n_samples))
    if not np.isfinite(code).all():
        raise ValueError(
            "Coordinate descent iterations resulted in non-finite parameter values. The "
            "input data may contain large values and need to be preprocessed."
        )
    return code


#: Voxels coded together by :func:`_lasso_code`: its float64 working set is about five
#: (n_components, LASSO_BLOCK) arrays, whatever the number of voxels.
LASSO_BLOCK = 16384


def _lasso_code(X, dictionary, alpha, max_iter):
    """The exact lasso code of every row of ``X`` on ``dictionary``: for each row x, the w
    minimising ``0.5 * ||x - w @ dictionary||² + alpha * ||w||₁`` (the problem of
    scikit-learn's ``sparse_encode(algorithm="lasso_cd")``, whose ``Lasso(alpha=alpha /
    n_features)`` divides both terms by n_features), returned in X's dtype.

    Coordinate descent runs on all the voxels of a block at once, in float64, from zero, on
    the Gram matrix D Dᵀ and the products D x (as scikit-learn's solver does, one voxel at a
    time). From the 8th sweep, at every power of two and at ``max_iter``, each voxel's
    current support and signs are tried: the lasso restricted to them has the closed form
    ``w_S = (D_S D_Sᵀ)⁻¹ (D_S x - alpha sign(w_S))``, and where that w satisfies the lasso's
    optimality conditions (the signs kept; ``|D_j (x - w D)| <= alpha`` off the support, to
    a relative 1e-9) it is the solution, to float64 rounding, and the voxel is done. Voxels
    sharing a support share one solve. A voxel not done after ``max_iter`` sweeps keeps its
    coordinate descent iterate, with one ``ConvergenceWarning`` naming how many there are.

    scikit-learn's solver runs in X's dtype and stops on the duality gap (1e-8 of ||x||²).
    In float32 that gap is below the rounding of its own computation, so most voxels run
    all ``max_iter`` sweeps and end on an iterate that is still moving (on the seeds' study
    up to 0.4 % of a voxel's largest coefficient from the solution). Here the result is the
    solution itself, in a few dozen sweeps of vectorised arithmetic.
    """
    from sklearn.exceptions import ConvergenceWarning

    d = np.asarray(dictionary, dtype=np.float64)
    gram = d @ d.T
    n_components = len(gram)
    diag = np.diag(gram).copy()
    live = np.flatnonzero(diag > 0)  # a zero atom keeps a zero coefficient, as scikit-learn
    inv_diag = np.zeros_like(diag)
    inv_diag[live] = 1 / diag[live]
    alpha = float(alpha)
    code = np.empty((len(X), n_components), dtype=X.dtype)
    rows = max(1, 2**17 // (8 * X.shape[1]))
    n_left = 0
    for start in range(0, len(X), LASSO_BLOCK):
        stop = min(start + LASSO_BLOCK, len(X))
        xd = np.empty((n_components, stop - start))  # products with the atoms, in float64
        for lo in range(start, stop, rows):  # a float64 copy of 128 KiB at a time
            hi = min(lo + rows, stop)
            # C order: X's rows whether X is in memory or a scratch stack's transpose
            # (StackColumns, whose slices are Fortran-ordered views): the same product
            rows_64 = np.asarray(X[lo:hi], dtype=np.float64, order="C")
            xd[:, lo - start : hi - start] = d @ rows_64.T
        n_left += _lasso_block(xd, gram, live, inv_diag, alpha, max_iter, code[start:stop])
    if not np.isfinite(code).all():
        raise ValueError(
            "Coordinate descent iterations resulted in non-finite parameter values. The "
            "input data may contain large values and need to be preprocessed."
        )
    if n_left:
        warn(
            f"The lasso coding of {n_left} of {len(X)} voxels did not reach its optimality "
            f"conditions in max_iter={max_iter} sweeps of coordinate descent; their last "
            "iterate is kept.",
            ConvergenceWarning,
        )
    return code


def _lasso_block(xd, gram, live, inv_diag, alpha, max_iter, out):
    """:func:`_lasso_code` of the voxels whose products with the atoms are the columns of
    ``xd``, into the rows of ``out``; returns how many are not certified optimal."""
    todo = np.arange(xd.shape[1])  # voxels not done: the columns of w, grad and xd
    w = np.zeros_like(xd)
    grad = xd.copy()  # D (x - w D) = D x - gram w
    for sweep in range(1, max_iter + 1):
        for j in live:
            old = w[j].copy()
            t = grad[j] + gram[j, j] * old
            # soft threshold: t - clip(t) is sign(t) * max(|t| - alpha, 0)
            w[j] = t - np.clip(t, -alpha, alpha)
            w[j] *= inv_diag[j]
            grad -= gram[:, j, None] * (w[j] - old)
        if (sweep >= 8 and sweep & (sweep - 1) == 0) or sweep == max_iter:
            exact, done = _solve_on_support(xd, w, gram, alpha)
            out[todo[done]] = exact[:, done].T
            del exact
            keep = ~done  # one array at a time, to keep the working set down
            todo = todo[keep]
            w = w[:, keep]
            grad = grad[:, keep]
            xd = xd[:, keep]
            if not len(todo):
                return 0
    out[todo] = w.T
    return len(todo)


def _solve_on_support(xd, w, gram, alpha):
    """For each column of ``w``: the lasso solution on its support with its signs, and
    whether that solution is optimal (see :func:`_lasso_code`)."""
    on, positive = w != 0, w > 0
    exact = np.zeros_like(w)
    # one solve per support: the voxels sorted by their supports, packed in bytes
    labels = np.packbits(on, axis=0)
    order = np.lexsort(labels)
    new_group = np.zeros(len(order), dtype=bool)
    for label in labels:
        new_group[1:] |= label[order][1:] != label[order][:-1]
    for cols in np.split(order, np.flatnonzero(new_group)):
        support = np.flatnonzero(on[:, cols[0]])
        if not len(support):
            continue
        sub = np.ix_(support, cols)
        rhs = xd[sub] - alpha * np.where(positive[sub], 1.0, -1.0)
        try:
            exact[sub] = np.linalg.solve(gram[np.ix_(support, support)], rhs)
        except np.linalg.LinAlgError:  # singular on this support: not certified here
            exact[:, cols] = np.nan
    residual = gram @ exact  # then |D (x - exact D)|, in place
    np.subtract(xd, residual, out=residual)
    np.abs(residual, out=residual)
    with np.errstate(invalid="ignore"):
        signs_kept = np.where(positive, exact > 0, exact < 0)
        optimal = np.where(on, signs_kept, residual <= alpha * (1 + 1e-9)).all(axis=0)
    return exact, optimal


def _dict_learning_online(
    X, n_components, *, alpha, batch_size, method, dict_init, verbose, random_state, max_iter
):
    """scikit-learn's ``dict_learning_online(..., return_code=True, shuffle=True,
    n_jobs=1)`` as nilearn calls it, returning the code.

    ``dict_learning_online`` is ``MiniBatchDictionaryLearning(...).fit(X)`` followed by
    ``transform(X)``. The mini-batch fit is scikit-learn's, as nilearn's. With
    ``method="cd"`` the transform (one lasso per voxel) is :func:`_lasso_code`: the exact
    solution of the same problems, where scikit-learn's float32 solver stops short of it
    (about 20 times faster on the seeds' study); with "lars" it is scikit-learn's.

    scikit-learn's fit shuffles a copy of X (the whole stack). For the checked versions
    (:data:`SHUFFLE_IN_PLACE_VERSIONS`), with a ``dict_init`` and a writable C-ordered X,
    X's rows are shuffled in place instead, with the same draws of the same generator,
    and the fit is told not to shuffle; they are put back in order before the coding.
    Where the fit's loop is replayed (:func:`_streams_online`), X is not even shuffled:
    each mini-batch's rows are gathered in the shuffled order (``fit_rows``; the seeds'
    fit uses 114 of its 1459 mini-batches, where the shuffle and its undoing moved all
    of X's 18 MiB twice).
    """
    if isinstance(X, StackColumns):
        if dict_init is not None and _streams_online():
            return _dict_learning_online_streamed(
                X,
                n_components,
                alpha=alpha,
                batch_size=batch_size,
                method=method,
                dict_init=dict_init,
                verbose=verbose,
                random_state=random_state,
                max_iter=max_iter,
            )
        X = X.stack.read().T  # a scikit-learn whose loop is not checked: hold the stack
    in_place = (
        dict_init is not None
        and _sklearn_version() in SHUFFLE_IN_PLACE_VERSIONS
        and isinstance(X, np.ndarray)
        and X.flags.c_contiguous
        and X.flags.writeable
        and X.dtype in (np.float32, np.float64)
    )
    perm = None
    if in_place:
        random_state, perm = _shuffle_order(random_state, len(X))
    est = _online_estimator(
        n_components,
        alpha=alpha,
        batch_size=batch_size,
        method=method,
        dict_init=dict_init,
        verbose=verbose,
        random_state=random_state,
        max_iter=max_iter,
        shuffle=not in_place,
    )
    if perm is None:
        est.fit(X)
    elif _streams_online():  # each mini-batch's rows gathered in the shuffled order
        est.fit_rows(_ShuffledRows(X, perm))
    else:
        _permute_rows(X, perm)
        try:
            est.fit(X)
        finally:
            _permute_rows(X, perm, inverse=True)
    return _final_code(est, X, alpha, method)


def _shuffle_order(random_state, n_rows: int):
    """``(generator, perm)``: the generator of ``random_state`` and, drawn from it, the
    order scikit-learn's ``random_state.shuffle(X_train)`` gives ``n_rows`` rows."""
    from sklearn.utils import check_random_state

    random_state = check_random_state(random_state)
    perm = np.arange(n_rows)
    random_state.shuffle(perm)  # the draws of random_state.shuffle(X_train)
    return random_state, perm


def _online_estimator(
    n_components,
    *,
    alpha,
    batch_size,
    method,
    dict_init,
    verbose,
    random_state,
    max_iter,
    shuffle,
):
    """The mini-batch estimator ``dict_learning_online`` makes (``n_jobs=1``, lasso
    coding with the same ``alpha`` and 1000 iterations), shuffling X itself or not."""
    return _minibatch_class()(
        n_components=n_components,
        alpha=alpha,
        max_iter=max_iter,
        n_jobs=1,
        fit_algorithm=method,
        batch_size=batch_size,
        shuffle=shuffle,
        dict_init=dict_init,
        random_state=random_state,
        transform_algorithm="lasso_" + method,
        transform_alpha=alpha,
        transform_max_iter=1000,
        verbose=verbose,
    )


def _final_code(est, X, alpha, method) -> np.ndarray:
    """The code of every row of X given the learned dictionary: :func:`_lasso_code` for
    "cd" (an array or a scratch stack's transpose alike), else the estimator's transform
    (a scratch stack's transpose block by block)."""
    if method == "cd":
        return _lasso_code(X, est.components_, alpha, 1000)
    if not isinstance(X, StackColumns):
        return est.transform(X)
    code = np.empty((len(X), est.n_components), dtype=X.dtype)
    for c0, c1, block in X.stack.blocks():
        code[c0:c1] = est.transform(block.T)
    return code


def _dict_learning_online_streamed(
    X, n_components, *, alpha, batch_size, method, dict_init, verbose, random_state, max_iter
):
    """:func:`_dict_learning_online` of ``X``, the transpose (voxels, N) of a
    :class:`~lazyconn.decomposition._stack.ScratchStack`, never held.

    The same draws (``perm``, the shuffle of X's rows) as in memory. The mini-batch fit
    reads each batch of X's rows in that order from a
    :class:`~lazyconn.decomposition._stack.TrainingRows` (``fit_rows``: the same rows in
    the same order, so the same dictionary as in memory, bit for bit): gathered from the
    stack's column blocks chunk by chunk, or, for long fits, from a voxel-major file next
    to the stack, deleted before returning. The final coding reads X's rows from the
    stack's column blocks in order.
    """
    import os

    random_state, perm = _shuffle_order(random_state, len(X))
    est = _online_estimator(
        n_components,
        alpha=alpha,
        batch_size=batch_size,
        method=method,
        dict_init=dict_init,
        verbose=verbose,
        random_state=random_state,
        max_iter=max_iter,
        shuffle=False,
    )
    stack = X.stack
    path = os.path.join(os.path.dirname(stack.path), "training-rows")
    with TrainingRows(stack, perm, batch_size, path) as rows:
        est.fit_rows(rows)
    return _final_code(est, X, alpha, method)


class DictLearning(_BaseDecomposition):
    """Sparse dictionary learning of brain maps (nilearn's ``DictLearning``), out of core.

    The per-subject pass (read -> smooth -> mask -> clean -> leading singular vectors) runs
    lazily, one task per subject on dask's scheduler (see :class:`CanICA` for how); the group
    step runs scikit-learn's functions on the stacked reductions as nilearn 0.14.1 does: a
    CanICA initialisation (one FastICA run, no threshold), ridge loadings, then
    ``dict_learning_online`` with lasso coding, unit-norm components and sign flips.

    Parameters
    ----------
    n_components : int, default=20
        Number of components to extract.
    n_epochs : float, default=1
        Number of epochs over the voxels of the online dictionary learning.
    alpha : float, default=10
        Sparsity of the maps (lasso penalty).
    reduction_ratio : 'auto' or float in [0, 1], default='auto'
        Stored and not used, as in nilearn 0.14.1 (every run is reduced to
        ``n_components``).
    dict_init : 4-D image, optional
        Initial maps (masked and cleaned like the data, as nilearn); default: CanICA.
    random_state : int, RandomState or None, default=None
        Seed of the per-subject and group SVDs, the ICA and ``dict_learning_online``.
    batch_size : int, default=20
        Voxels per mini-batch.
    method : {'cd', 'lars'}, default='cd'
        Lasso solver of scikit-learn's dictionary learning.
    mask : 3-D image, NiftiMasker or MultiNiftiMasker, optional
        Mask (or masker); computed from the runs with ``mask_strategy`` if None.
        A masker's own parameters are used, with nilearn's "Overriding provided-default
        estimator parameters" UserWarning listing those that differ from the estimator's.
        A plain ``NiftiMasker`` is accepted too (nilearn 0.14.1 requires a MultiNiftiMasker).
    smoothing_fwhm : float, optional, default=4
        Gaussian smoothing of the runs, in mm.
    standardize : {'zscore_sample', 'psc', True, False, None}, default=True
        Temporal standardisation of each voxel (True is 'zscore_sample').
    standardize_confounds : bool, default=True
        z-score the confounds before regressing them out.
    detrend : bool, default=True
        Remove linear trends.
    low_pass, high_pass : float, optional
        Butterworth cut-off frequencies in Hz (need ``t_r``).
    t_r : float, optional
        Repetition time in seconds.
    dtype : dtype, 'auto' or None, optional
        Data type of ``transform``'s output (float dtypes also apply to the fit).
    target_affine, target_shape : optional
        Resample the mask (and the runs) to this grid.
    mask_strategy : str, default='epi'
        'background', 'epi', 'whole-brain-template', 'gm-template' or 'wm-template'.
    mask_args : dict, optional
        Extra arguments of the mask-computing function.
    n_jobs : int, default=1
        Accepted for compatibility; subjects run in parallel on dask's scheduler.
    verbose : int, default=0
        > 0: nilearn's ``[Class.fit]`` step lines and a progress bar of subjects, on stderr
        (nilearn prints its lines on stdout); the embedded masker gets ``verbose - 1``.
    memory : str or path, optional
        lazyconn: where the scratch files of the group step are written (the stacked
        reductions, while the subjects run, and the online learning's voxel-major training
        file; nothing is cached with joblib; see :class:`CanICA`).
    memory_level : int, default=0
        Accepted for compatibility; no effect.
    client, n_workers, memory_budget, cache_dir : keyword-only
        lazyconn only; as in :class:`CanICA`.

    Attributes
    ----------
    components_ : numpy.ndarray (n_components, n_voxels)
        Unit-norm maps, signed so that most voxels are positive.
    components_img_ : nibabel.Nifti1Image
        ``components_`` as a 4-D image.
    components_init_ : numpy.ndarray
        Initial maps (CanICA or ``dict_init``).
    loadings_init_ : numpy.ndarray
        Initial loadings (the dictionary's initial atoms).
    masker_, mask_img_, maps_masker_, n_elements_, n_cached_, timings_
        As in :class:`CanICA`.

    Notes
    -----
    The per-subject reduction gives nilearn's numbers (its randomized SVD, replayed through
    each run's Gram matrix): see :class:`CanICA`, which also says where the maps match
    nilearn's (on studies where nilearn's ``dict_learning_online`` is unstable to float32
    rounding, they match only in part).

    Deliberate difference: with ``method="cd"`` the final sparse coding of every voxel on
    the learned dictionary (the maps) is the exact solution of nilearn's lasso problems
    (the optimality conditions checked voxel by voxel, in float64), where scikit-learn's
    coordinate descent, in the stack's float32, never meets its stopping rule: it runs its
    1000 iterations per voxel and stops still short of the solution (on the seeds' study by
    up to 0.4 % of a voxel's largest coefficient). Solving exactly is what makes the coding
    fast (about 20 times faster there); the maps are a voxel-wise lasso given the
    dictionary, a convex problem, so this changes them by that shortfall only (the
    dictionary itself is scikit-learn's, as nilearn's).

    Above ``memory_budget`` the stack (n_subjects x n_components, V) is never held: the
    CanICA initialisation's group PCA (see :class:`CanICA`) and the ridge loadings read it
    in column blocks; the online learning replays scikit-learn's
    ``MiniBatchDictionaryLearning.fit`` loop with every mini-batch of voxels (rows of the
    stack's transpose, in the order of scikit-learn's shuffle: the same draws) read from
    the stack: gathered a few MiB of voxels at a time by a pass over its blocks, or, once
    a fit has taken 8 such passes, from a voxel-major copy written once (the seeds'
    100-subject fit stops after 114 of its 1459 mini-batches: 2 passes). The same
    batches in the same order, so the same dictionary as in memory, bit for bit, given
    the same stack and initial dictionary; the final coding reads the voxels block by
    block. The group step then holds a few V-sized arrays and two blocks, whatever the
    number of subjects (seeds, 100 x 168 at 4 mm: peak RSS 313-315 -> 257-268 MiB,
    against 249-258 at 20 subjects; the group step 1.3-1.5 s against 1.1-1.3 s); it reads
    the stack ~12 times. Only for the scikit-learn versions whose loop was checked
    (``MINIBATCH_STEP_VERSIONS``, ``SHUFFLE_IN_PLACE_VERSIONS``); with others the stack is
    read back whole for the online learning (their ``fit`` may draw or shuffle
    differently). The maps agree with the in-memory path's as far as the online learning
    is stable to the float rounding of the initialisation: on the tests' planted study
    |r| > 0.9999; on the seeds' 20-subject study, where nilearn's own
    online learning is unstable (see :class:`CanICA`), the initial maps match with |r| >
    0.9999 and the learned ones with matched |r| 0.51-0.98 (20 subjects, memory_budget=0).
    """

    def __init__(
        self,
        n_components=20,
        n_epochs=1,
        alpha=10,
        reduction_ratio="auto",
        dict_init=None,
        random_state=None,
        batch_size=20,
        method="cd",
        mask=None,
        smoothing_fwhm=4,
        standardize=True,
        standardize_confounds=True,
        detrend=True,
        low_pass=None,
        high_pass=None,
        t_r=None,
        dtype=None,
        target_affine=None,
        target_shape=None,
        mask_strategy="epi",
        mask_args=None,
        n_jobs=1,
        verbose=0,
        memory=None,
        memory_level=0,
        *,
        client=None,
        n_workers=None,
        memory_budget=None,
        cache_dir=None,
    ):
        self.n_components = n_components
        self.n_epochs = n_epochs
        self.alpha = alpha
        self.reduction_ratio = reduction_ratio
        self.dict_init = dict_init
        self.random_state = random_state
        self.batch_size = batch_size
        self.method = method
        self.mask = mask
        self.smoothing_fwhm = smoothing_fwhm
        self.standardize = standardize
        self.standardize_confounds = standardize_confounds
        self.detrend = detrend
        self.low_pass = low_pass
        self.high_pass = high_pass
        self.t_r = t_r
        self.dtype = dtype
        self.target_affine = target_affine
        self.target_shape = target_shape
        self.mask_strategy = mask_strategy
        self.mask_args = mask_args
        self.n_jobs = n_jobs
        self.verbose = verbose
        self.memory = memory
        self.memory_level = memory_level
        self.client = client
        self.n_workers = n_workers
        self.memory_budget = memory_budget
        self.cache_dir = cache_dir

    def _check_params(self):
        _check_positive_int("batch_size", self.batch_size)
        for name in ("alpha", "n_epochs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or value <= 0:
                raise ParameterError(f"{name}={value!r} is not valid; expected a number > 0.")
        if self.method not in ("cd", "lars"):
            raise ParameterError(f"method={self.method!r} is not valid; expected 'cd' or 'lars'.")
        ratio = self.reduction_ratio
        if not (isinstance(ratio, str) and ratio == "auto") and not (
            isinstance(ratio, numbers.Real) and not isinstance(ratio, bool) and 0 <= ratio <= 1
        ):
            raise ParameterError(
                f"reduction_ratio={ratio!r} is not valid; expected 'auto' or a number in "
                "[0, 1] (it is not used, as in nilearn 0.14.1)."
            )

    def _init_dict(self, data):
        if self.dict_init is not None:
            components = np.asarray(self.masker_.transform(self.dict_init))
        else:
            canica = CanICA(
                n_components=self.n_components,
                do_cca=True,
                threshold=float(self.n_components),
                n_init=1,
                random_state=self.random_state,
            )
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                canica._raw_fit(data)
            components = canica.components_
        norms = (components**2).sum(axis=1)
        norms[norms == 0] = 1
        components /= norms[:, np.newaxis]
        self.components_init_ = components

    def _raw_fit(self, data):
        """CanICA init, ridge loadings, ``dict_learning_online`` on ``data`` (N, V)."""
        self._log("Learning initial components")
        self._init_dict(data)
        n_features = data.shape[1]
        self._log("Computing initial loadings")
        self.loadings_init_ = _compute_loadings(self.components_init_, data)
        max_iter = ((n_features - 1) // self.batch_size + 1) * self.n_epochs
        self._log(" Learning dictionary")  # nilearn's leading space
        code = _dict_learning_online(
            data.T,
            self.n_components,
            alpha=self.alpha,
            batch_size=self.batch_size,
            method=self.method,
            dict_init=self.loadings_init_,
            verbose=max(0, int(self.verbose) - 1),
            random_state=self.random_state,
            max_iter=max_iter,
        )
        components = code.T
        norms = np.sqrt(np.sum(components**2, axis=1))
        norms[norms == 0] = 1
        components /= norms[:, np.newaxis]
        # Most voxels positive (counts, not L1), as nilearn.
        for component in components:
            if np.sum(component > 0) < np.sum(component < 0):
                component *= -1
        self.components_ = components
        return self
