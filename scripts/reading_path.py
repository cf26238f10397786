"""How much code a reader walks to follow one training script: two counts, from the source alone (no import).

    python scripts/reading_path.py training/train_usit.py training/train_dc_ae.py
    python scripts/reading_path.py --root /path/to/an/old/checkout training/train_usit.py   # the same count there

- **The flags' walk**: start at the script's `main(args)` and follow the parsed command line (the `argparse`
  Namespace) wherever it goes: into every function or class it is passed to, under whatever parameter name, and
  through an attribute it is stored in (`self.args = args`: every method that reads `self.args` is walked). The
  lines of every function walked (its whole `def`) and the files they are in. This is what a reader who wants to
  know what one flag does must read.
- **Everything reached**: every function and class of the repository that `main` refers to, and what those refer
  to, transitively (a class counts whole; a name is followed wherever it is used, not only where it is called).
  Method calls on objects (`run.steps(...)`) are covered by counting the classes whole.

Only the repository's own code is walked (`dc_ae_hf`, `training`, `examples`); torch, diffusers and accelerate are
not. Names are resolved through `import` statements and module attributes, as written; a name bound at run time
(a lazy re-export, `getattr`) is not followed.
"""

from __future__ import annotations

import argparse
import ast
from dataclasses import dataclass, field
from pathlib import Path

PACKAGES = ("dc_ae_hf", "training", "examples")


@dataclass
class Module:
    name: str
    path: Path
    tree: ast.Module
    defs: dict[str, ast.FunctionDef | ast.ClassDef] = field(default_factory=dict)
    imports: dict[str, tuple[str, str | None]] = field(default_factory=dict)  # local name -> (module, name or None)


def _module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def load_modules(root: Path) -> dict[str, Module]:
    modules = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            name = _module_name(root, path)
            tree = ast.parse(path.read_text(), filename=str(path))
            module = Module(name, path, tree)
            for node in tree.body:
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    module.defs[node.name] = node
            for node in ast.walk(tree):  # function-local imports too
                if isinstance(node, ast.ImportFrom):
                    base = node.module or ""
                    if node.level:  # relative: from the package of this module
                        package = name.split(".")
                        package = package if path.name == "__init__.py" else package[:-1]
                        package = package[: len(package) - node.level + 1]
                        base = ".".join([*package, base] if base else package)
                    for alias in node.names:
                        module.imports[alias.asname or alias.name] = (base, alias.name)
                elif isinstance(node, ast.Import):
                    for alias in node.names:
                        module.imports[alias.asname or alias.name.split(".")[0]] = (alias.name, None)
            modules[name] = module
    return modules


def resolve(modules: dict[str, Module], module: Module, expr: ast.expr) -> tuple[Module, ast.AST] | None:
    """The repository definition `expr` (a name or `module.name`) refers to in `module`, or None."""
    if isinstance(expr, ast.Name):
        if expr.id in module.defs:
            return module, module.defs[expr.id]
        if expr.id in module.imports:
            base, name = module.imports[expr.id]
            if name is None:
                return None
            if base in modules and name in modules[base].defs:
                return modules[base], modules[base].defs[name]
            if base in modules and name in modules[base].imports:  # a name the module imported itself
                return resolve(modules, modules[base], ast.Name(name))
    if isinstance(expr, ast.Attribute) and isinstance(expr.value, ast.Name):
        target = module.imports.get(expr.value.id)
        if target is not None:
            qualified = target[0] if target[1] is None else f"{target[0]}.{target[1]}"
            if qualified in modules and expr.attr in modules[qualified].defs:
                return modules[qualified], modules[qualified].defs[expr.attr]
    return None


def _lines(node: ast.AST) -> int:
    return node.end_lineno - node.lineno + 1


def _methods(cls: ast.ClassDef) -> dict[str, ast.FunctionDef]:
    return {n.name: n for n in cls.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}


def _is_self_attribute(node: ast.AST) -> bool:
    return isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self"


def _assigned_pairs(node: ast.Assign) -> list[tuple[ast.expr, ast.expr]]:
    """(target, value) pairs of an assignment, tuples unpacked element by element (`a, b = x, y`)."""
    pairs = []
    for target in node.targets:
        if isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple):
            pairs += list(zip(target.elts, node.value.elts))
        else:
            pairs.append((target, node.value))
    return pairs


def _parameter_names(function: ast.FunctionDef) -> list[str]:
    return [a.arg for a in (*function.args.posonlyargs, *function.args.args)]


class FlagWalk:
    """The functions the parsed command line reaches (see the module docstring)."""

    def __init__(self, modules: dict[str, Module]) -> None:
        self.modules = modules
        self.walked: dict[tuple[str, str], int] = {}  # (module, qualified name) -> lines
        self.seen: set[tuple[str, str, str]] = set()

    def walk(self, module: Module, function: ast.FunctionDef, parameter: str, owner: ast.ClassDef | None) -> None:
        """Walk `function`, whose `parameter` holds the namespace (`self.<attribute>` for "self.<attribute>")."""
        name = function.name if owner is None else f"{owner.name}.{function.name}"
        if (module.name, name, parameter) in self.seen:
            return
        self.seen.add((module.name, name, parameter))
        self.walked[(module.name, name)] = _lines(function)
        tracked, attributes = set(), set()
        if parameter.startswith("self."):
            attributes.add(parameter.removeprefix("self."))
        else:
            tracked.add(parameter)
        for _ in range(2):  # aliases of aliases: `a = args` then `b = a`, in any order
            for node in (n for n in ast.walk(function) if isinstance(n, ast.Assign)):
                for target, value in _assigned_pairs(node):
                    if not self._holds_namespace(value, tracked, attributes):
                        continue
                    if isinstance(target, ast.Name):
                        tracked.add(target.id)
                    elif _is_self_attribute(target) and owner is not None and target.attr not in attributes:
                        attributes.add(target.attr)
                        self._walk_readers(module, owner, target.attr)
        self._follow_calls(module, function, owner, tracked, attributes)

    def _walk_readers(self, module: Module, owner: ast.ClassDef, attribute: str) -> None:
        """Every method of `owner` that reads `self.<attribute>` (where the namespace was stored)."""
        for method in _methods(owner).values():
            if any(_is_self_attribute(n) and n.attr == attribute for n in ast.walk(method)):
                self.walk(module, method, f"self.{attribute}", owner)

    @staticmethod
    def _holds_namespace(expr: ast.expr, tracked: set[str], attributes: set[str]) -> bool:
        if isinstance(expr, ast.Name):
            return expr.id in tracked
        return _is_self_attribute(expr) and expr.attr in attributes

    def _follow_calls(self, module, function, owner, tracked: set[str], attributes: set[str]) -> None:
        for call in (n for n in ast.walk(function) if isinstance(n, ast.Call)):
            passed = [(i, a) for i, a in enumerate(call.args) if self._holds_namespace(a, tracked, attributes)]
            passed += [(k.arg, k.value) for k in call.keywords if self._holds_namespace(k.value, tracked, attributes)]
            if not passed:
                continue
            target = self._callee(module, owner, call.func)
            if target is None:
                continue
            callee_module, callee, callee_owner, skip_self = target
            names = _parameter_names(callee)[1 if skip_self else 0 :]
            for where, _ in passed:
                if isinstance(where, int) and where < len(names):
                    self.walk(callee_module, callee, names[where], callee_owner)
                elif isinstance(where, str) and where in names:
                    self.walk(callee_module, callee, where, callee_owner)

    def _callee(self, module, owner, func: ast.expr):
        """(module, function, owning class, whether `self` comes first) of a call's target in the repository."""
        if (
            isinstance(func, ast.Attribute)
            and isinstance(func.value, ast.Name)
            and func.value.id in ("self", "cls")
            and owner is not None
        ):
            method = _methods(owner).get(func.attr)
            return None if method is None else (module, method, owner, True)
        found = resolve(self.modules, module, func)
        if found is None:
            return None
        callee_module, node = found
        if isinstance(node, ast.ClassDef):  # a constructor: its __init__ (a dataclass has none to walk)
            init = _methods(node).get("__init__")
            return None if init is None else (callee_module, init, node, True)
        return callee_module, node, None, False


def everything_reached(modules: dict[str, Module], module: Module, start: ast.AST) -> dict[tuple[str, str], int]:
    """Every repository definition `start` refers to, transitively: (module, name) -> lines."""
    reached: dict[tuple[str, str], int] = {}
    pending = [(module, start)]
    while pending:
        current, node = pending.pop()
        key = (current.name, node.name)
        if key in reached:
            continue
        reached[key] = _lines(node)
        for child in ast.walk(node):
            if isinstance(child, (ast.Name, ast.Attribute)):
                found = resolve(modules, current, child)
                if found is not None:
                    pending.append(found)
    return reached


def _summary(counts: dict[tuple[str, str], int]) -> tuple[int, int]:
    return sum(counts.values()), len({module for module, _ in counts})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "scripts", nargs="+", help="training scripts, relative to --root (e.g. training/train_usit.py)"
    )
    parser.add_argument("--root", default=str(Path(__file__).resolve().parents[1]), help="the checkout to read")
    parser.add_argument("--entry", default="main", help="the script's function that receives the parsed flags")
    parser.add_argument("--list", action="store_true", help="also list every function walked, with its lines")
    args = parser.parse_args(argv)
    root = Path(args.root).resolve()
    modules = load_modules(root)
    for script in args.scripts:
        name = _module_name(root, (root / script).resolve())
        if name not in modules or args.entry not in modules[name].defs:
            parser.error(f"{script}: no function {args.entry!r} in {root / script}")
        module = modules[name]
        main_function = module.defs[args.entry]
        walk = FlagWalk(modules)
        walk.walk(module, main_function, _parameter_names(main_function)[0], None)
        flag_lines, flag_files = _summary(walk.walked)
        reached = everything_reached(modules, module, main_function)
        reached_lines, reached_files = _summary(reached)
        script_lines = len((root / script).read_text().splitlines())
        print(f"{script} ({script_lines} lines):")
        print(f"  the flags' walk: {flag_lines} lines in {len(walk.walked)} functions, {flag_files} files")
        print(f"  everything reached: {reached_lines} lines in {len(reached)} definitions, {reached_files} files")
        if args.list:
            for (where, what), lines in sorted(walk.walked.items()):
                print(f"    flags  {lines:5d}  {where}.{what}")
            for (where, what), lines in sorted(reached.items()):
                print(f"    reach  {lines:5d}  {where}.{what}")


if __name__ == "__main__":
    main()
