"""Where things live. Paths are absolute so notebooks work from JupyterLab (cwd = notebooks/)
as well as from the runner (cwd = repo root)."""
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS_DIR = ROOT / "notebooks"
LIB_DIR = ROOT / "lib"
PARAMS_DIR = ROOT / "params"


def resolve(path: str | Path) -> Path:
    """A path from params: absolute as given, otherwise relative to the repo root."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else ROOT / p
