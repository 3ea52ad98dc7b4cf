"""Every public function and estimator documents every parameter (numpydoc Parameters).

The public API is the ``__all__`` of lazyconn and of its public packages; a new public package
joins the list below when it lands.
"""

import importlib
import inspect

import pytest

import lazyconn.maskers
from lazyconn._docs import docdict, fill_doc

PUBLIC = (
    "lazyconn",
    "lazyconn.maskers",
    "lazyconn.image",
    "lazyconn.masking",
    "lazyconn.signal",
    "lazyconn.connectome",
    "lazyconn.regions",
    "lazyconn.stats",
    "lazyconn.datasets",
    "lazyconn.group",
    "lazyconn.decomposition",
)

# A method is checked where the class defines or inherits it.
_METHODS = ("fit", "transform", "fit_transform", "inverse_transform")


def _public_objects():
    for module in map(importlib.import_module, PUBLIC):
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.isclass(obj):
                yield f"{module.__name__}.{name}", obj, obj.__init__
                for method in _METHODS:
                    if hasattr(obj, method):
                        func = getattr(obj, method)
                        yield f"{module.__name__}.{name}.{method}", func, func
            elif callable(obj):
                yield f"{module.__name__}.{name}", obj, obj


def _documented(doc):
    """Names in the numpydoc Parameters section of ``doc`` (dedented)."""
    lines = [*inspect.cleandoc(doc or "").splitlines(), ""]

    def is_title(i):
        return bool(lines[i].strip()) and set(lines[i + 1].strip()) == {"-"}

    names = set()
    for i in range(len(lines) - 1):
        if lines[i].strip() == "Parameters" and is_title(i):
            for j in range(i + 2, len(lines) - 1):
                if is_title(j):
                    break  # the next section
                if lines[j] and not lines[j].startswith(" "):
                    entry = lines[j].split(" : ")[0]
                    names.update(n.strip().lstrip("*") for n in entry.split(","))
    return names


def _signature_params(func):
    params = inspect.signature(func).parameters.values()
    skip = {"self", "y"}  # y: scikit-learn's unused target, as nilearn leaves it undocumented
    return [
        p.name
        for p in params
        if p.name not in skip
        and not p.name.startswith("_")
        and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]


CASES = list(_public_objects())


@pytest.mark.parametrize("name, obj, func", CASES, ids=[c[0] for c in CASES])
def test_every_parameter_is_documented(name, obj, func):
    documented = _documented(obj.__doc__)
    missing = [p for p in _signature_params(func) if p not in documented]
    assert not missing, f"{name}: no Parameters entry for {missing}"


def test_help_lists_every_sphere_masker_parameter():
    text = pydoc_text(lazyconn.maskers.NiftiSpheresMasker)
    for param in _signature_params(lazyconn.maskers.NiftiSpheresMasker.__init__):
        assert f"\n |  {param} : " in text, param  # pydoc's class layout


def pydoc_text(obj):
    import pydoc

    return pydoc.render_doc(obj, renderer=pydoc.plaintext)


def test_fill_doc_indents_entries_and_rejects_unknown_names():
    def f(t_r=None):
        """Do it.

        Parameters
        ----------
        %(t_r)s

        Notes
        -----
        100% lazy: a percent sign needs no escaping.
        """

    fill_doc(f)
    first, *rest = docdict["t_r"].splitlines()
    assert f"\n        {first}\n" in f.__doc__
    assert all(f"\n        {line}" in f.__doc__ for line in rest)
    assert "100% lazy" in f.__doc__
    assert _documented(f.__doc__) == {"t_r"}

    def g():
        """Parameters
        ----------
        %(no_such_entry)s
        """

    with pytest.raises(KeyError, match=r"%\(no_such_entry\)s is not an entry"):
        fill_doc(g)
