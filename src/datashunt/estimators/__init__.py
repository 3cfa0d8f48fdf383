"""The estimators: a shunt, a cascade, a generator shunt."""

from ..exceptions import LargeModelError


def require_answers(ok, flags: list, model: str) -> None:
    """Refuse to calibrate on a model none of whose answers came back (``ok`` per validation item, and
    ``flags`` saying why not): every call failing says the model cannot be reached as configured."""
    if len(flags) and not any(ok):
        first = str(flags[0]) if len(str(flags[0])) <= 200 else str(flags[0])[:199] + "…"
        raise LargeModelError(f"all {len(flags)} calls to {model} on the validation data failed (the first: "
                              f"{first}); δ cannot be calibrated without its answers: check where its calls go "
                              "(endpoint, model name, key) and fit again")
