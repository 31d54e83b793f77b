"""Progress bars that stay readable after the kernel is gone.

In Jupyter, ``tqdm.auto`` draws an ipywidgets bar. A saved notebook keeps only a reference to
the widget's model, which lives in the kernel, so a reopened notebook (or nbconvert's HTML, or
GitHub) shows "Error displaying widget: model not found" where the bar was. This ``tqdm`` is
``tqdm.auto.tqdm`` with one change: in a notebook it shows the bar through a display handle and,
when the bar closes, replaces that output with the bar's final line as plain text
(``rollouts: 100%|██████████| 64/64 [00:03<00:00, 20.1problem/s]``), or with nothing when it
was created with ``leave=False``. The live bar is the usual widget; what gets saved is text.
Outside a notebook it is ``tqdm.auto.tqdm`` itself (text on stderr).

transformers draws its own bars (loading and writing checkpoint shards) with ``tqdm.auto``;
:func:`hook_transformers` (called when :mod:`lib.model` is imported) routes them here through
transformers' ``set_tqdm_hook``.
"""
from __future__ import annotations

from tqdm.auto import tqdm as _auto_tqdm

__all__ = ["tqdm", "in_notebook", "hook_transformers"]


def in_notebook() -> bool:
    """True when ``tqdm.auto`` picked the Jupyter widget bar (an IPython kernel with ipywidgets)."""
    try:
        from tqdm.notebook import tqdm as notebook_tqdm
    except ImportError:  # pragma: no cover - tqdm always ships it
        return False
    return issubclass(_auto_tqdm, notebook_tqdm)


if in_notebook():

    class tqdm(_auto_tqdm):  # type: ignore[no-redef]
        """``tqdm.auto.tqdm`` whose widget becomes its final text line when it closes."""

        def __init__(self, *args, **kwargs):
            show = kwargs.pop("display", True)
            self._handle = None
            super().__init__(*args, display=False, **kwargs)
            if show and not self.disable and self.delay <= 0:
                self._show()

        def _show(self) -> None:
            from IPython.display import display

            self._handle = display(self.container, display_id=True)
            self.displayed = True

        def display(self, *args, check_delay: bool = True, **kwargs):
            # tqdm shows a bar created with delay > 0 on its first refresh after the delay.
            if check_delay and self.delay > 0 and not self.displayed:
                self._show()
            return super().display(*args, check_delay=False, **kwargs)

        def close(self):
            if self.disable:
                return
            keep = self.leave or bool(self.total and self.n < self.total)  # an interrupted bar stays
            super().close()
            if self._handle is None:
                return
            text = self.format_meter(**self.format_dict) if keep else ""
            self._handle.update({"text/plain": text}, raw=True)
            self._handle = None
            try:
                self.container.close()  # the widget is no longer shown: free its model in the kernel
            except Exception:  # noqa: BLE001 - a closed comm is fine
                pass

else:
    tqdm = _auto_tqdm


def hook_transformers() -> None:
    """In a notebook, make transformers' own tqdm bars these bars (via its ``set_tqdm_hook``)."""
    if not in_notebook():
        return
    from transformers.utils import logging as hf_logging

    if not hasattr(hf_logging, "set_tqdm_hook"):
        return

    def hook(factory, args, kwargs):
        return tqdm(*args, **kwargs) if factory is _auto_tqdm else factory(*args, **kwargs)

    hf_logging.set_tqdm_hook(hook)
