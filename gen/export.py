"""Verilog export: deterministic (same design, same bytes, wherever the checkout lives)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from amaranth.back import verilog
from amaranth.lib import wiring

__all__ = ["to_verilog", "write_verilog", "verilog_digest", "cached_verilog"]


def to_verilog(component: wiring.Component, name: str) -> str:
    """The Verilog text of ``component`` as top module ``name``.

    Source-location attributes are left out so that the text depends only on
    the design, not on where the project is installed.
    """
    if not name.isidentifier():
        raise ValueError(f"Verilog module name must be an identifier, got {name!r}")
    return verilog.convert(component, name=name, emit_src=False)


def verilog_digest(text: str) -> str:
    """A short content hash of Verilog text (the simulator build-cache key)."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def write_verilog(component: wiring.Component, name: str, out_dir: Path) -> Path:
    """Write ``<out_dir>/<name>.v``; returns its path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.v"
    path.write_text(to_verilog(component, name))
    return path


def layout_fields(layout) -> list[tuple[str, int, int, bool]]:
    """``(name, offset, width, signed)`` of each field of an Amaranth struct layout, LSB first.

    This is how benches and host code pack a payload without importing Amaranth.
    """
    from amaranth.hdl import Shape

    fields = []
    for name, fld in layout:
        shape = Shape.cast(fld.shape)
        fields.append((str(name), int(fld.offset), int(shape.width), bool(shape.signed)))
    return sorted(fields, key=lambda f: f[1])


def _hw_source_digest() -> str:
    """Hash of the hardware generator's sources and of the reference modules it reads (formats,
    configs, protocol constants), so that a cached Verilog follows code changes."""
    import metafab.hw as hw_pkg
    import metafab.reference as ref_pkg

    h = hashlib.sha256()
    for pkg in (hw_pkg, ref_pkg):
        for path in sorted(Path(pkg.__file__).parent.glob("*.py")):
            h.update(f"{pkg.__name__}.{path.name}".encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


def cached_verilog(cfg, toplevel: str, make_component, progress=None) -> str:
    """Verilog of ``make_component()`` for ``cfg``, cached under the build folder by config and generator source."""
    import os

    from metafab.reference.config import config_digest
    from metafab.sim.runner import build_root

    path = build_root() / "verilog" / f"{toplevel}-{config_digest(cfg)}-{_hw_source_digest()}.v"
    if path.exists():
        return path.read_text()
    if progress:
        progress(f"generating Verilog for {cfg.name}")
    text = to_verilog(make_component(), toplevel)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")  # unique: parallel workers may write the same file
    tmp.write_text(text)
    tmp.replace(path)
    return text
