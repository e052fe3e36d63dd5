"""config.runtime.setup_logging's console handler outlives a swapped-and-closed sys.stderr."""
from __future__ import annotations

import contextlib
import io
import logging

from config.runtime import setup_logging


def test_console_follows_stderr_after_the_stream_it_held_is_closed(capsys):
    swapped = io.StringIO()
    with contextlib.redirect_stderr(swapped):      # e.g. a notebook cell that captured output
        setup_logging()
        logging.getLogger("ssd.test").info("first line")
    assert "first line" in swapped.getvalue()
    swapped.close()
    logging.getLogger("ssd.test").info("second line")
    err = capsys.readouterr().err
    assert "Logging error" not in err
    assert "second line" in err


def test_no_console_handler_is_left_over_from_the_test_before():
    # the conftest fixture removed the handler the test above created
    assert not [h for h in logging.getLogger().handlers if getattr(h, "_ssd_console", False)]
