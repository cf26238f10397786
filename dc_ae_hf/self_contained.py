"""Self-contained folders: pipelines and models that load with plain diffusers, without dc_ae_hf installed.

``save_pretrained(folder, self_contained=True)`` (``DCAE15Pipeline``, ``AutoencoderDC15``, ``USiTTransformer2DModel``)
writes the usual folder plus the code that diffusers loads as remote code with ``trust_remote_code=True``
(diffusers 0.42, ``diffusers/utils/dynamic_modules_utils.py``):

- a pipeline folder: ``model_index.json`` names the pipeline ``["pipeline_dcae15", "DCAE15Pipeline"]``, read from
  ``<folder>/pipeline_dcae15.py`` (``pipelines/pipeline_loading_utils.py``, ``_resolve_custom_pipeline_and_cls``),
  and each of this package's components ``[<module>, <class>]``, read from ``<folder>/<component>/<module>.py``
  (``get_class_obj_and_candidates``): ``DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)``;
- a model folder, and each component folder of such a pipeline: ``config.json`` gets ``"auto_map": {"AutoModel":
  "<module>.<class>"}`` and ``<module>.py`` lies next to it (``models/auto_model.py``):
  ``AutoModel.from_pretrained(folder, trust_remote_code=True)``. (``AutoModel.from_pretrained(pipeline_folder,
  subfolder="vae", ...)`` does not work: diffusers then reads the pipeline's ``model_index.json``, which has no
  ``auto_map``; pass the component folder itself.)

The code is generated at save time from this package's own modules; no second copy is kept. Each written file is
one module: the class and, inlined, every definition it uses from other dc_ae_hf modules, found by following its
names through the modules' imports (``_Bundle``); what no class uses is left out. A single file per folder because
from the Hub diffusers fetches only ``<component>/<module>.py`` of a component, not files next to it. The files
import nothing beyond torch and diffusers' own requirements, record the dc_ae_hf version they come from, and never
import dc_ae_hf. Such a folder still loads with ``DCAE15Pipeline.from_pretrained`` where dc_ae_hf is installed
(``SelfContainedPipelineMixin.load_config`` reads the generated names as this package's classes).

Inside the generated pipeline module the component classes (``AutoencoderDC15``, ``USiTTransformer2DModel``) are
stand-ins that recognise an instance by its class name: diffusers loads each component's file as a module of its
own (and executes it again on every load), so the pipeline's module cannot import the very class its components
have.
"""

from __future__ import annotations

import ast
import builtins
import importlib
import importlib.util
import inspect
import json
import os
import pkgutil
import symtable
import sys
import textwrap
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

__all__ = [
    "MODEL_MODULES",
    "PIPELINE_MODULES",
    "SelfContainedModelMixin",
    "SelfContainedPipelineMixin",
    "bundle_code",
    "code_version",
    "component_code",
    "is_self_contained",
    "make_self_contained",
    "model_code",
    "package_index",
    "pipeline_code",
]

# The models (with `save_pretrained(..., self_contained=True)`) and the pipeline, and the package module each one's
# code is generated from; another component class of dc_ae_hf is found by its module. A file is named after the
# module's last part, which is also what diffusers' `register_for_auto_class` would write into `auto_map`.
MODEL_MODULES: dict[str, str] = {
    "AutoencoderDC15": "dc_ae_hf.models.autoencoder_dc15",
    "USiTTransformer2DModel": "dc_ae_hf.models.transformer_usit",
}
PIPELINE_MODULES: dict[str, str] = {"DCAE15Pipeline": "dc_ae_hf.pipelines.pipeline_dcae15"}
# Libraries whose classes diffusers loads by itself: their components need no code in the folder.
_LIBRARIES = ("diffusers", "transformers")
_HUB_KWARGS = ("repo_id", "commit_message", "private", "create_pr", "token")


def _file_stem(module: str) -> str:
    return module.rsplit(".", 1)[-1]


# ---------------------------------------------------------------------------------------------------------------
# Generating one module from the package's modules
# ---------------------------------------------------------------------------------------------------------------


class CodeGenerationError(RuntimeError):
    """The package's source uses something the generator cannot carry into a stand-alone module (a bug of dc_ae_hf,
    caught by its tests)."""


@dataclass(frozen=True)
class _ImportSpec:
    """One imported name: ``import module [as alias]`` (``name`` None) or ``from module import name [as alias]``."""

    module: str
    name: str | None
    alias: str

    def statement(self) -> str:
        if self.name is None:
            local = self.module.split(".")[0]
            return f"import {self.module}" + (f" as {self.alias}" if self.alias != local else "")
        return f"from {self.module} import {self.name}" + (f" as {self.alias}" if self.alias != self.name else "")

    def value(self):
        module = importlib.import_module(self.module)
        if self.name is None:
            return module if self.alias != self.module.split(".")[0] else importlib.import_module(self.alias)
        return getattr(module, self.name)


@dataclass
class _Module:
    """A parsed package module: its top-level definitions and imports by local name."""

    name: str
    lines: list[str]
    tree: ast.Module
    table: symtable.SymbolTable
    definitions: dict[str, ast.stmt] = field(default_factory=dict)
    imports: dict[str, _ImportSpec] = field(default_factory=dict)

    @classmethod
    def parse(cls, name: str) -> _Module:
        source = inspect.getsource(importlib.import_module(name))
        module = cls(
            name, source.splitlines(keepends=True), ast.parse(source), symtable.symtable(source, name, "exec")
        )
        package = name if hasattr(importlib.import_module(name), "__path__") else name.rpartition(".")[0]
        for node in module.tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                module.definitions[node.name] = node
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    for leaf in ast.walk(target):
                        if isinstance(leaf, ast.Name):
                            module.definitions[leaf.id] = node
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    local = alias.asname or alias.name.split(".")[0]
                    module.imports[local] = _ImportSpec(alias.name, None, local)
            elif isinstance(node, ast.ImportFrom) and node.module != "__future__":
                source_module = importlib.util.resolve_name("." * node.level + (node.module or ""), package)
                for alias in node.names:
                    module.imports[alias.asname or alias.name] = _ImportSpec(
                        source_module, alias.name, alias.asname or alias.name
                    )
        return module

    def docstring(self) -> str | None:
        return ast.get_docstring(self.tree, clean=False)

    def segment(self, node: ast.stmt) -> str:
        """The source lines of a top-level statement, with its decorators and the comment lines right above it."""
        first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
        while first > 1 and self.lines[first - 2].lstrip().startswith("#"):
            first -= 1
        return "".join(self.lines[first - 1 : node.end_lineno])

    def global_names(self, node: ast.stmt) -> set[str]:
        """The module-level names a top-level statement uses (its body by scope analysis; decorators, bases,
        defaults and annotations, which run in or name the module scope, from the syntax tree)."""
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names = set()
            for table in self.table.get_children():
                if table.get_name() == node.name and table.get_lineno() == node.lineno:
                    names |= _referenced_globals(table)
            outer: list[ast.AST] = list(node.decorator_list)
            if isinstance(node, ast.ClassDef):
                outer += node.bases + [k.value for k in node.keywords]
            else:
                outer += node.args.defaults + [d for d in node.args.kw_defaults if d is not None]
            for child in ast.walk(node):  # annotations: not evaluated (postponed), but get_type_hints resolves them
                if isinstance(child, ast.arg) and child.annotation is not None:
                    outer.append(child.annotation)
                elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) and child.returns is not None:
                    outer.append(child.returns)
                elif isinstance(child, ast.AnnAssign):
                    outer.append(child.annotation)
            return names | {name for expression in outer for name in _expression_names(expression)}
        return _expression_names(node)


def _referenced_globals(table: symtable.SymbolTable) -> set[str]:
    names = {s.get_name() for s in table.get_symbols() if s.is_global() and s.is_referenced()}
    for child in table.get_children():
        names |= _referenced_globals(child)
    return names


def _expression_names(node: ast.AST) -> set[str]:
    """Names read by an expression or simple statement, less those its comprehensions and lambdas bind."""
    loaded, bound = set(), set()
    for child in ast.walk(node):
        if isinstance(child, ast.Name):
            (loaded if isinstance(child.ctx, ast.Load) else bound).add(child.id)
        elif isinstance(child, ast.arg):
            bound.add(child.arg)
    if isinstance(node, (ast.Assign, ast.AnnAssign)):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        bound -= {leaf.id for target in targets for leaf in ast.walk(target) if isinstance(leaf, ast.Name)}
    return loaded - bound


class _Bundle:
    """Collects root definitions ((module, name) pairs of the package) and what they need, across the package, into
    one module.

    ``stand_ins`` maps (module, class name) of classes the output must not carry (the components of a pipeline,
    which diffusers loads from their own folders) to a line saying where they live. Names of
    ``dc_ae_hf.self_contained`` (the save-time mixins) are dropped from class bases and may appear nowhere else.
    """

    PACKAGE_ONLY = __name__

    def __init__(self, roots: list[tuple[str, str]], stand_ins: dict[tuple[str, str], str] | None = None) -> None:
        self.roots = list(dict.fromkeys(module for module, _ in roots))
        self.main = self.roots[0]
        self.stand_ins = stand_ins or {}
        self.modules: dict[str, _Module] = {}
        self.included: dict[str, list[ast.stmt]] = {}  # module -> its statements in the output
        self.imports: dict[str, _ImportSpec] = {}
        self.used_stand_ins: dict[str, str] = {}
        self.module_deps: dict[str, set[str]] = {}
        self.names: dict[str, tuple[str, int]] = {}  # output name -> (module, statement id), to catch collisions
        for module, root in roots:
            self._need(module, root, context=f"{module}.{root}")

    def _module(self, name: str) -> _Module:
        if name not in self.modules:
            self.modules[name] = _Module.parse(name)
        return self.modules[name]

    def _need(self, module_name: str, name: str, context: str) -> None:
        module = self._module(module_name)
        if name in module.definitions:
            self._include(module, module.definitions[name], name)
        elif name in module.imports:
            spec = module.imports[name]
            if spec.module == self.PACKAGE_ONLY:
                raise CodeGenerationError(
                    f"{context} uses {name} of {self.PACKAGE_ONLY}, which exists only in the installed package "
                    "(allowed only as a base class, where it is dropped)"
                )
            if spec.module == "dc_ae_hf" or spec.module.startswith("dc_ae_hf."):
                if spec.name is None or spec.alias != spec.name:
                    raise CodeGenerationError(
                        f"{context}: `{spec.statement()}` cannot be inlined (write `from m import x`)"
                    )
                if (spec.module, spec.name) in self.stand_ins or self._is_stand_in(spec.module, spec.name):
                    self.used_stand_ins[name] = self._stand_in_note(spec.module, spec.name)
                    return
                self.module_deps.setdefault(module_name, set()).add(spec.module)
                self._need(spec.module, spec.name, context=f"{context} -> {spec.module}.{spec.name}")
            else:
                self._add_import(spec, context)
        elif not hasattr(builtins, name) and name not in ("__name__", "__file__", "__doc__"):
            raise CodeGenerationError(f"{context}: the name {name!r} is neither defined nor imported in {module_name}")

    def _is_stand_in(self, module: str, name: str) -> bool:
        # a re-export (e.g. `from dc_ae_hf.models import AutoencoderDC15`) of a stand-in class
        target = self._module(module)
        spec = target.imports.get(name)
        return spec is not None and spec.module.startswith("dc_ae_hf") and (spec.module, spec.name) in self.stand_ins

    def _stand_in_note(self, module: str, name: str) -> str:
        while (module, name) not in self.stand_ins:
            spec = self._module(module).imports[name]
            module, name = spec.module, spec.name
        return self.stand_ins[(module, name)]

    def _add_import(self, spec: _ImportSpec, context: str) -> None:
        known = self.imports.get(spec.alias)
        if known is None:
            self.imports[spec.alias] = spec
        elif known != spec and known.value() is not spec.value():
            raise CodeGenerationError(f"{context}: {spec.alias} is imported as two different things")

    def _include(self, module: _Module, node: ast.stmt, name: str) -> None:
        statements = self.included.setdefault(module.name, [])
        if any(node is s for s in statements):
            return
        if (module.name, name) in self.stand_ins:
            raise CodeGenerationError(f"{module.name}.{name} is a component class; it cannot be part of this module")
        known = self.names.get(name)
        if known is not None and known != (module.name, id(node)):
            raise CodeGenerationError(f"two definitions named {name!r} ({known[0]} and {module.name}) would collide")
        self.names[name] = (module.name, id(node))
        statements.append(node)
        dropped = self._package_only_bases(module, node)
        for used in sorted(module.global_names(node) - dropped):
            self._need(module.name, used, context=f"{module.name}.{name}")

    def _package_only_bases(self, module: _Module, node: ast.stmt) -> set[str]:
        if not isinstance(node, ast.ClassDef):
            return set()
        return {
            base.id
            for base in node.bases
            if isinstance(base, ast.Name)
            and base.id in module.imports
            and module.imports[base.id].module == self.PACKAGE_ONLY
        }

    def _statement_source(self, module: _Module, node: ast.stmt) -> str:
        text = module.segment(node)
        dropped = self._package_only_bases(module, node)
        if not dropped:
            return text
        # rewrite the class line without the save-time mixins (their methods exist only in the installed package)
        bases = [ast.unparse(b) for b in node.bases if not (isinstance(b, ast.Name) and b.id in dropped)]
        bases += [ast.unparse(k) for k in node.keywords]
        header = f"class {node.name}({', '.join(bases)}):\n" if bases else f"class {node.name}:\n"
        start = min([node.lineno] + [d.lineno for d in node.decorator_list])
        lines = module.lines[start - 1 : node.end_lineno]
        prefix = text[: len(text) - len("".join(lines))]
        decorators = lines[: node.lineno - start]
        body = lines[node.body[0].lineno - start :]
        return prefix + "".join(decorators) + header + "".join(body)

    def _module_order(self) -> list[str]:
        order: list[str] = []

        def visit(name: str, path: tuple[str, ...]) -> None:
            if name in order or name in path:
                return
            for dependency in sorted(self.module_deps.get(name, ())):
                visit(dependency, path + (name,))
            order.append(name)

        for root in self.roots:
            visit(root, ())
        return [name for name in order if name in self.included]

    def source(self, header: str, docstring: str | None = None) -> str:
        """The module: `header` (comment lines), the docstring (default: the first root module's), the imports, the
        stand-ins, then the definitions, each module's in source order after the modules it uses."""
        stdlib = [s for s in self.imports.values() if s.module.split(".")[0] in sys.stdlib_module_names]
        others = [s for s in self.imports.values() if s not in stdlib]
        groups = []
        for group in (stdlib, others):
            plain = sorted((s for s in group if s.name is None), key=lambda s: s.module)
            froms: dict[str, list[_ImportSpec]] = {}
            for spec in group:
                if spec.name is not None:
                    froms.setdefault(spec.module, []).append(spec)
            lines = [s.statement() for s in plain]
            for module in sorted(froms):
                names = sorted(froms[module], key=lambda s: s.name)
                parts = [s.name + (f" as {s.alias}" if s.alias != s.name else "") for s in names]
                lines.append(f"from {module} import {', '.join(parts)}")
            if lines:
                groups.append("\n".join(lines))
        docstring = docstring if docstring is not None else self._module(self.main).docstring()
        head = header.rstrip("\n") + ('\n"""' + docstring + '"""' if docstring else "")
        code = [_stand_in_source(self.used_stand_ins)] if self.used_stand_ins else []
        for module_name in self._module_order():
            module = self._module(module_name)
            statements = sorted(self.included[module_name], key=lambda s: s.lineno)
            code += [self._statement_source(module, s).rstrip("\n") for s in statements]
        top = "\n\n".join([head, "from __future__ import annotations", *groups])
        return top + "\n\n\n" + "\n\n\n".join(code) + "\n"


def _stand_in_source(stand_ins: dict[str, str]) -> str:
    classes = [
        f"class {name}(metaclass=_ComponentClass):\n"
        f'    """Stands for `{name}` ({note}) in annotations\n    and isinstance checks."""'
        for name, note in sorted(stand_ins.items())
    ]
    meta = (
        "class _ComponentClass(type):\n"
        '    """isinstance by class name. diffusers loads each component\'s class from the file in its own folder, as a\n'
        "    module of its own, executed again on every load: this module cannot import that class, so an instance\n"
        '    counts as one of these when its class or one of its base classes has the name."""\n\n'
        "    def __instancecheck__(cls, instance) -> bool:\n"
        "        return any(base.__name__ == cls.__name__ for base in type(instance).__mro__)"
    )
    return "\n\n\n".join([meta, *classes])


_FOLDER_NOTE = (
    "when this folder was saved with save_pretrained(..., self_contained=True): diffusers loads it with "
    "trust_remote_code=True, without dc_ae_hf. Do not edit: save the folder again to regenerate it."
)


def _header(modules: list[str], note: str) -> str:
    import dc_ae_hf

    main, others = modules[-1], modules[:-1]
    text = (
        f"Generated by dc_ae_hf {dc_ae_hf.__version__} from {main}"
        + (f", with what it uses of {', '.join(others)}," if others else "")
        + f" {note}"
    )
    return "\n".join("# " + line for line in textwrap.wrap(text, width=117))


def bundle_code(
    roots: list[tuple[str, str]], note: str = _FOLDER_NOTE, docstring: str | None = None, *, _stand_ins=None
) -> str:
    """One stand-alone module holding the definitions `roots` ((module, name) pairs of dc_ae_hf) and, inlined, every
    definition of dc_ae_hf they use, with the imports they need and the dc_ae_hf version (`DC_AE_HF_VERSION`); it
    never imports dc_ae_hf. Its first comment says where it comes from and ends with `note` (how it was made and
    what to do instead of editing it); `docstring` defaults to the first root module's. The code of the
    self-contained folders is made this way; so are the demo Space's picture helpers (`scripts/make_space.py`)."""
    import dc_ae_hf

    bundle = _Bundle(roots, _stand_ins)
    order = bundle._module_order()
    modules = [m for m in order if m != bundle.main] + [bundle.main]
    text = bundle.source(_header(modules, note), docstring)
    version = f'DC_AE_HF_VERSION = "{dc_ae_hf.__version__}"  # the dc_ae_hf release this file was generated from'
    text = text.rstrip("\n") + "\n\n\n" + version + "\n"
    for node in ast.walk(ast.parse(text)):  # an import inside a function is copied as it is: none may need dc_ae_hf
        if isinstance(node, ast.ImportFrom) and node.level:
            names = ["." * node.level + (node.module or "")]
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
        else:
            continue
        if any(name.startswith(".") or name.split(".")[0] == "dc_ae_hf" for name in names):
            raise CodeGenerationError(
                f"the code generated from {bundle.main} would import {names[0]} (line {node.lineno}: "
                f"{ast.unparse(node)}); import it at the top of its module instead, where it is inlined"
            )
    return text


@cache
def component_code(module: str, class_name: str) -> tuple[str, str]:
    """``(file name, source)`` of the stand-alone module of the class `class_name` of the dc_ae_hf module `module` (a
    model such as `AutoencoderDC15`, or any other component class of this package); the file is named after the
    module."""
    if not (module == "dc_ae_hf" or module.startswith("dc_ae_hf.")):
        raise ValueError(f"module={module!r} is not a module of dc_ae_hf: its code cannot be generated here")
    return f"{_file_stem(module)}.py", bundle_code([(module, class_name)])


def model_code(class_name: str) -> tuple[str, str]:
    """``(file name, source)`` of the stand-alone module of a model class (a key of ``MODEL_MODULES``)."""
    if class_name not in MODEL_MODULES:
        raise ValueError(
            f"class_name={class_name!r} has no generated code; self-contained folders carry {sorted(MODEL_MODULES)}"
        )
    return component_code(MODEL_MODULES[class_name], class_name)


@cache
def pipeline_code(class_name: str = "DCAE15Pipeline") -> tuple[str, str]:
    """``(file name, source)`` of the stand-alone module of the pipeline class; its component classes are stand-ins
    (the components' code lies in their folders)."""
    if class_name not in PIPELINE_MODULES:
        raise ValueError(
            f"class_name={class_name!r} is not a pipeline of dc_ae_hf; choose one of {sorted(PIPELINE_MODULES)}"
        )
    module = PIPELINE_MODULES[class_name]
    stand_ins = {
        (model_module, name): f"`{_file_stem(model_module)}.py` in the component's folder"
        for name, model_module in MODEL_MODULES.items()
    }
    return f"{_file_stem(module)}.py", bundle_code([(module, class_name)], _stand_ins=stand_ins)


# ---------------------------------------------------------------------------------------------------------------
# Folders
# ---------------------------------------------------------------------------------------------------------------


def _read_json(path: Path) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _write_json(path: Path, data: dict) -> None:
    # the layout diffusers' ConfigMixin writes (to_json_string)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _package_module(library: str, class_name: str) -> str | None:
    """The dc_ae_hf module of a `model_index.json` component entry [library, class]: `library` itself as
    `save_pretrained` writes it (the class's module path), or the file stem a self-contained folder names instead;
    None for a class of another library."""
    if library == "dc_ae_hf" or library.startswith("dc_ae_hf."):
        return library
    module = MODEL_MODULES.get(class_name)
    if module is not None and library == _file_stem(module):
        return module
    # another dc_ae_hf component class (e.g. a callback): the package's module of that file stem defining it, found
    # from the package's module list, not from what this process happened to import already
    package = importlib.import_module("dc_ae_hf")
    for info in pkgutil.walk_packages(package.__path__, "dc_ae_hf."):
        if _file_stem(info.name) != library:
            continue
        found = getattr(importlib.import_module(info.name), class_name, None)
        if isinstance(found, type) and found.__module__ == info.name:
            return info.name
    return None


def _component_module(entry) -> str | None:
    """The dc_ae_hf module whose code a component entry [library, class] needs in its folder; None for one that
    diffusers loads by itself (diffusers' and transformers' classes, an absent optional component); ValueError for a
    class of any other library."""
    if not isinstance(entry, (list, tuple)) or len(entry) != 2 or entry[0] is None:
        return None
    library, class_name = entry
    if library.split(".")[0] in _LIBRARIES:
        return None
    module = _package_module(library, class_name)
    if module is None:
        raise ValueError(
            "a self-contained folder needs the code of every component; dc_ae_hf writes that of its own classes "
            f"(diffusers' and transformers' need none), so {library}.{class_name} cannot be carried"
        )
    return module


def _pipeline_class(index: dict) -> str:
    name = index.get("_class_name")
    name = name[1] if isinstance(name, (list, tuple)) and len(name) == 2 else name
    if name not in PIPELINE_MODULES:
        raise ValueError(
            f"model_index.json names the pipeline {index.get('_class_name')!r}; self-contained folders carry the code "
            f"of {sorted(PIPELINE_MODULES)} only"
        )
    return name


def check_pipeline_index(index: dict) -> None:
    """Raise ValueError, before anything is written, when a pipeline with this `model_index.json` content (or
    `pipe.config`) cannot be made self-contained: another pipeline class, or a component class whose code dc_ae_hf
    cannot write."""
    _pipeline_class(index)
    for name, entry in index.items():
        if not name.startswith("_"):
            _component_module(entry)


def check_model_class(model_class: type) -> str:
    """The class name of a model whose folder can be made self-contained (exactly one of `MODEL_MODULES`, not a
    subclass defined elsewhere); ValueError otherwise."""
    name = model_class.__name__
    if MODEL_MODULES.get(name) != model_class.__module__:
        raise ValueError(
            f"self_contained=True writes the code of {sorted(MODEL_MODULES)} only; "
            f"{model_class.__module__}.{name} is not one of them"
        )
    return name


def write_model_code(folder: str | os.PathLike, class_name: str | None = None, module: str | None = None) -> Path:
    """Make the model folder `folder` (written by `save_pretrained`) self-contained in place: write the class's
    generated module next to `config.json` and point `auto_map["AutoModel"]` at it. The weights are not touched.
    `class_name` defaults to the config's `_class_name`, `module` to its entry in `MODEL_MODULES`. Returns the
    module's path."""
    folder = Path(folder)
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{str(folder)!r} is not a model folder: it has no config.json")
    config = _read_json(config_path)
    class_name = class_name or config.get("_class_name")
    file_name, source = component_code(module, class_name) if module else model_code(class_name)
    (folder / file_name).write_text(source, encoding="utf-8")
    config["auto_map"] = {"AutoModel": f"{Path(file_name).stem}.{class_name}"}
    _write_json(config_path, config)
    return folder / file_name


def _write_component_code(folder: Path, module: str, class_name: str) -> Path:
    """A component's module in its folder: with `auto_map` for a model (`write_model_code`), alone otherwise."""
    from diffusers import ModelMixin

    if issubclass(getattr(importlib.import_module(module), class_name), ModelMixin):
        return write_model_code(folder, class_name, module)
    file_name, source = component_code(module, class_name)
    (folder / file_name).write_text(source, encoding="utf-8")
    return folder / file_name


def write_pipeline_code(folder: str | os.PathLike) -> Path:
    """Make the pipeline folder `folder` (written by `save_pretrained`) self-contained in place: the pipeline's
    module at the top, each dc_ae_hf component's module in its folder (`write_model_code`), and `model_index.json`
    naming them as diffusers' remote-code loader expects. The weights are not touched. Returns the pipeline module's
    path."""
    folder = Path(folder)
    index_path = folder / "model_index.json"
    if not index_path.is_file():
        raise FileNotFoundError(f"{str(folder)!r} is not a pipeline folder: it has no model_index.json")
    index = _read_json(index_path)
    check_pipeline_index(index)
    for name, entry in index.items():
        module = None if name.startswith("_") else _component_module(entry)
        if module is not None:
            index[name] = [_write_component_code(folder / name, module, entry[1]).stem, entry[1]]
    pipeline_class = _pipeline_class(index)
    file_name, source = pipeline_code(pipeline_class)
    (folder / file_name).write_text(source, encoding="utf-8")
    index["_class_name"] = [Path(file_name).stem, pipeline_class]
    _write_json(index_path, index)
    return folder / file_name


def make_self_contained(folder: str | os.PathLike) -> Path:
    """Make a pipeline or model folder written by `save_pretrained` self-contained in place (its weights are not
    rewritten): afterwards it loads with plain diffusers, `DiffusionPipeline.from_pretrained(folder,
    trust_remote_code=True)` or `AutoModel.from_pretrained(folder, trust_remote_code=True)`, and still with
    dc_ae_hf. Running it again regenerates the code with the installed dc_ae_hf. Returns `folder`."""
    folder = Path(folder)
    if (folder / "model_index.json").is_file():
        write_pipeline_code(folder)
    elif (folder / "config.json").is_file():
        write_model_code(folder)
    else:
        raise FileNotFoundError(f"{str(folder)!r} has neither model_index.json nor config.json: not a saved folder")
    return folder


def _code_file(folder: Path) -> Path | None:
    """The generated module a saved folder names (pipeline: `_class_name`, model: `auto_map`), if it is there."""
    if (folder / "model_index.json").is_file():
        name = _read_json(folder / "model_index.json").get("_class_name")
        stem = name[0] if isinstance(name, list) and len(name) == 2 else None
    elif (folder / "config.json").is_file():
        reference = _read_json(folder / "config.json").get("auto_map", {}).get("AutoModel")
        stem = reference.split(".")[0] if isinstance(reference, str) else None
    else:
        return None
    return folder / f"{stem}.py" if stem and (folder / f"{stem}.py").is_file() else None


def is_self_contained(folder: str | os.PathLike) -> bool:
    """Whether a saved pipeline or model folder carries its code (loads with plain diffusers)."""
    return _code_file(Path(folder)) is not None


def code_version(folder: str | os.PathLike) -> str | None:
    """The dc_ae_hf version whose code a self-contained folder carries (its module's `DC_AE_HF_VERSION`); None for a
    folder without code."""
    code = _code_file(Path(folder))
    if code is None:
        return None
    for node in ast.parse(code.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["DC_AE_HF_VERSION"]:
            return ast.literal_eval(node.value)
    return None


def package_index(index: dict) -> dict:
    """A self-contained `model_index.json` content as this installed package loads it: the generated module names
    of the pipeline and of its components replaced by this package's modules (in place; returned)."""
    name = index.get("_class_name")
    if isinstance(name, (list, tuple)) and len(name) == 2 and name[1] in PIPELINE_MODULES:
        index["_class_name"] = name[1]
    for key, entry in index.items():
        if key.startswith("_") or not isinstance(entry, (list, tuple)) or len(entry) != 2 or entry[0] is None:
            continue
        module = _package_module(*entry)
        if module is not None:
            index[key] = [module, entry[1]]
    return index


# ---------------------------------------------------------------------------------------------------------------
# save_pretrained(..., self_contained=True) and push_to_hub(..., self_contained=True)
# ---------------------------------------------------------------------------------------------------------------


def _hub_options(kwargs: dict) -> dict:
    """Take the upload options diffusers' `save_pretrained(push_to_hub=True)` reads out of `kwargs`."""
    return {key: kwargs.pop(key) for key in _HUB_KWARGS if key in kwargs}


class _PushSelfContained:
    """`push_to_hub(..., self_contained=True)`: diffusers' own upload (repo, model card, pull request), of the folder
    that `save_pretrained(..., self_contained=True)` writes. diffusers' `push_to_hub` saves into a temporary folder
    through `self.save_pretrained(tmp, safe_serialization=..., variant=...)`, without our argument; the flag carries
    it there for the duration of the call."""

    _saving_self_contained = False

    def push_to_hub(self, repo_id: str, *args, self_contained: bool = False, **kwargs) -> str:
        """diffusers' `push_to_hub`; `self_contained=True` uploads a folder that loads with plain diffusers
        (`trust_remote_code=True`, see `save_pretrained`)."""
        if not self_contained:
            return super().push_to_hub(repo_id, *args, **kwargs)
        self._saving_self_contained = True
        try:
            return super().push_to_hub(repo_id, *args, **kwargs)
        finally:
            del self._saving_self_contained

    def _push_saved(self, save_directory, hub: dict, safe_serialization: bool, variant: str | None) -> None:
        # save_pretrained(..., push_to_hub=True, self_contained=True): the folder is complete; diffusers' push_to_hub
        # saves it once more into a temporary folder and uploads that, with its model card
        repo_id = hub.pop("repo_id", str(save_directory).split(os.path.sep)[-1])  # diffusers' default repo name
        self.push_to_hub(repo_id, self_contained=True, safe_serialization=safe_serialization, variant=variant, **hub)


class SelfContainedModelMixin(_PushSelfContained):
    """`save_pretrained(..., self_contained=True)` and `push_to_hub(..., self_contained=True)` for this package's
    models (`AutoencoderDC15`, `USiTTransformer2DModel`): the folder also holds the model's generated code and
    `auto_map`, so `diffusers.AutoModel.from_pretrained(folder, trust_remote_code=True)` loads it without dc_ae_hf.
    Exists only in the installed package (dropped from the generated code)."""

    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        is_main_process: bool = True,
        save_function=None,
        safe_serialization: bool = True,
        variant: str | None = None,
        max_shard_size: int | str = "10GB",
        push_to_hub: bool = False,
        use_flashpack: bool = False,
        *,
        self_contained: bool = False,
        **kwargs,
    ):
        """diffusers' `ModelMixin.save_pretrained` (same arguments); `self_contained=True` also writes the model's
        code next to its config (generated from dc_ae_hf, which the folder then no longer needs) and
        `auto_map`: `AutoModel.from_pretrained(save_directory, trust_remote_code=True)` loads it with plain diffusers,
        and `<ThisClass>.from_pretrained` as before. With `push_to_hub=True` the upload goes through
        `push_to_hub(..., self_contained=True)`."""
        options = dict(
            is_main_process=is_main_process,
            save_function=save_function,
            safe_serialization=safe_serialization,
            variant=variant,
            max_shard_size=max_shard_size,
        )
        if use_flashpack:  # passed on only when asked for (diffusers < 0.42 has no such argument)
            options["use_flashpack"] = use_flashpack
        self_contained = self_contained or self._saving_self_contained
        if not self_contained:
            return super().save_pretrained(save_directory, push_to_hub=push_to_hub, **options, **kwargs)
        class_name = check_model_class(type(self))
        hub = _hub_options(kwargs)
        super().save_pretrained(save_directory, push_to_hub=False, **options, **kwargs)
        if is_main_process:
            write_model_code(save_directory, class_name)
        if push_to_hub:
            self._push_saved(save_directory, hub, safe_serialization, variant)


class SelfContainedPipelineMixin(_PushSelfContained):
    """`save_pretrained(..., self_contained=True)` and `push_to_hub(..., self_contained=True)` for `DCAE15Pipeline`,
    and the loading of such a folder by this package (`load_config`). Exists only in the installed package (dropped
    from the generated code)."""

    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        safe_serialization: bool = True,
        variant: str | None = None,
        max_shard_size: int | str | None = None,
        push_to_hub: bool = False,
        *,
        self_contained: bool = False,
        **kwargs,
    ):
        """diffusers' `DiffusionPipeline.save_pretrained` (same arguments); `self_contained=True` also writes the code
        of the pipeline and of its dc_ae_hf components (generated from dc_ae_hf, which the folder then no longer
        needs): `DiffusionPipeline.from_pretrained(save_directory, trust_remote_code=True)` loads it with plain
        diffusers, `AutoModel.from_pretrained(f"{save_directory}/vae", trust_remote_code=True)` each component, and
        `DCAE15Pipeline.from_pretrained` as before. With `push_to_hub=True` the upload goes through
        `push_to_hub(..., self_contained=True)`."""
        options = dict(safe_serialization=safe_serialization, variant=variant, max_shard_size=max_shard_size)
        self_contained = self_contained or self._saving_self_contained
        if not self_contained:
            return super().save_pretrained(save_directory, push_to_hub=push_to_hub, **options, **kwargs)
        if PIPELINE_MODULES.get(type(self).__name__) != type(self).__module__:  # checked before anything is written
            raise ValueError(
                f"self_contained=True writes the code of {sorted(PIPELINE_MODULES)} only; "
                f"{type(self).__module__}.{type(self).__name__} is not one of them"
            )
        check_pipeline_index({**self.config, "_class_name": type(self).__name__})
        hub = _hub_options(kwargs)
        super().save_pretrained(save_directory, push_to_hub=False, **options, **kwargs)
        write_pipeline_code(save_directory)
        if push_to_hub:
            self._push_saved(save_directory, hub, safe_serialization, variant)

    @classmethod
    def load_config(cls, *args, **kwargs):
        """`ConfigMixin.load_config`; the generated module names of a self-contained `model_index.json` are read as
        this package's classes, so `from_pretrained` uses the installed dc_ae_hf instead of the folder's code (which
        would need `trust_remote_code=True`)."""
        loaded = super().load_config(*args, **kwargs)
        package_index(loaded[0] if isinstance(loaded, tuple) else loaded)
        return loaded
