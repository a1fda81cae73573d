"""minialbert: distil BERT-class teachers into recursive MiniALBERT students.

`import minialbert` is cheap (no torch, no transformers), so the command line and the
workflow's DAG build answer at once. The model classes load on first use, and the MiniALBERT
classes are registered with the transformers Auto classes as soon as transformers' auto
module is imported (or now, if it already is), so that after `import minialbert`,
`AutoModelForSequenceClassification.from_pretrained(dir)` works on a minialbert dir.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

__version__ = "0.1.0"

# public name -> the module that defines it (imported on first access)
_EXPORTS = {
    "MiniAlbertConfig": "minialbert.modeling",
    "MiniAlbertModel": "minialbert.modeling",
    "MiniAlbertPreTrainedModel": "minialbert.modeling",
    "MiniAlbertForMaskedLM": "minialbert.modeling",
    "MiniAlbertForSequenceClassification": "minialbert.modeling",
    "MiniAlbertForTokenClassification": "minialbert.modeling",
    "count_parameters": "minialbert.adapters",
    "prepare_for_adapter_tuning": "minialbert.adapters",
    "init_embeddings_from": "minialbert.student",
    "import_authors_checkpoint": "minialbert.convert",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'minialbert' has no attribute {name!r}")


def register_auto_classes() -> None:
    """Register model_type "minialbert" with AutoConfig, and each model class with the Auto class
    that `minialbert.modeling.AUTO_CLASSES` names for it (idempotent)."""
    import transformers

    from minialbert import modeling

    config = modeling.MiniAlbertConfig
    transformers.AutoConfig.register("minialbert", config, exist_ok=True)
    for auto_class, model_class in modeling.AUTO_CLASSES.items():
        getattr(transformers, auto_class).register(config, model_class, exist_ok=True)


# Registration needs transformers' Auto classes and PreTrainedModel and minialbert.modeling
# fully imported. Any of these modules can be the one whose import pulls in the others (e.g.
# `from transformers import PreTrainedModel` imports configuration_auto half-way through
# modeling_utils), so registration is attempted after each of them finishes executing and
# done at the first moment none of them is still half-imported.
_AUTO_MODULES = ("transformers.models.auto.configuration_auto", "transformers.models.auto.modeling_auto")
_WATCHED = (*_AUTO_MODULES, "transformers.modeling_utils", "minialbert.modeling")


def _initializing(name: str) -> bool:
    module = sys.modules.get(name)
    return module is not None and bool(getattr(getattr(module, "__spec__", None), "_initializing", False))


def _register_if_ready(just_executed: str = "") -> bool:
    if any(_initializing(name) for name in _WATCHED if name != just_executed):
        return False
    register_auto_classes()
    for finder in [f for f in sys.meta_path if isinstance(f, _RegisterAfterImport)]:
        sys.meta_path.remove(finder)
    return True


class _RegisterAfterImport(importlib.abc.MetaPathFinder):
    """Finds the watched modules with the normal machinery and wraps their loaders so that
    registration is attempted right after each one executes."""

    def find_spec(self, fullname, path, target=None):
        if fullname not in _WATCHED:
            return None
        for finder in sys.meta_path:  # the real finders locate the module
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is not None:
            spec.loader = _RegisteringLoader(spec.loader, fullname)
        return spec


class _RegisteringLoader(importlib.abc.Loader):
    def __init__(self, loader, fullname):
        self._loader, self._fullname = loader, fullname

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        _register_if_ready(just_executed=self._fullname)

    def __getattr__(self, name):  # get_source, get_code, ... of the real loader
        return getattr(self._loader, name)


if not (any(name in sys.modules for name in _AUTO_MODULES) and _register_if_ready()):
    if not any(isinstance(f, _RegisterAfterImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _RegisterAfterImport())
