import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "lianxin_alembic_env", Path(__file__).resolve().parent.parent / "_env.py"
)
assert _spec and _spec.loader
_env = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_env)
_env.run()
