"""The one way ai-how reaches libvirt: a lazy import of libvirt-python and a connection with clear errors."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from ai_how.errors import AiHowError

if TYPE_CHECKING:
    import libvirt

DEFAULT_URI = "qemu:///system"


def default_uri() -> str:
    """``$AI_HOW_LIBVIRT_URI``, else libvirt's own ``$LIBVIRT_DEFAULT_URI``, else the system daemon."""
    return os.environ.get("AI_HOW_LIBVIRT_URI") or os.environ.get("LIBVIRT_DEFAULT_URI") or DEFAULT_URI


def module() -> Any:
    """libvirt-python, imported on first use (it is an optional extra)."""
    try:
        import libvirt
    except ModuleNotFoundError:
        raise AiHowError(
            "libvirt-python is not installed", fix="pip install 'ai-how[infra]' (needs libvirt-dev to build)"
        ) from None
    # libvirt prints every error to stderr by default; ai-how reports them itself.
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    return libvirt


def is_test_uri(uri: str) -> bool:
    return uri.startswith("test://")


def is_local_uri(uri: str) -> bool:
    """A QEMU daemon on this machine (host checks read this machine's /proc and /sys)."""
    return uri.startswith(("qemu:///", "qemu+unix:///"))


@contextlib.contextmanager
def connect(uri: str) -> Iterator[libvirt.virConnect]:
    """An open connection to ``uri``; an unreachable daemon is one line with the fix."""
    lv = module()
    try:
        conn = lv.open(uri)
    except lv.libvirtError as exc:
        fix = (
            "start the daemon (`systemctl start libvirtd`, or `libvirtd -d` as root) and check you may use it"
            if uri.startswith("qemu")
            else "check the URI (--uri or AI_HOW_LIBVIRT_URI)"
        )
        raise AiHowError(f"cannot reach libvirt at {uri}: {exc.get_error_message()}", fix=fix) from None
    try:
        yield conn
    finally:
        with contextlib.suppress(lv.libvirtError):
            conn.close()


def not_found(exc: Exception) -> bool:
    """Whether a libvirtError says the object does not exist (domain, network, pool, volume)."""
    lv = module()
    codes = {
        lv.VIR_ERR_NO_DOMAIN,
        lv.VIR_ERR_NO_NETWORK,
        lv.VIR_ERR_NO_STORAGE_POOL,
        lv.VIR_ERR_NO_STORAGE_VOL,
        lv.VIR_ERR_NO_NODE_DEVICE,
    }
    return isinstance(exc, lv.libvirtError) and exc.get_error_code() in codes


def lookup(getter: Callable[[str], Any], name: str) -> Any | None:
    """``getter(name)`` (e.g. ``conn.lookupByName``), or None when libvirt says no such object."""
    try:
        return getter(name)
    except Exception as exc:
        if not_found(exc):
            return None
        raise


def is_running(conn: Any, domain_name: str) -> bool:
    domain = lookup(conn.lookupByName, domain_name)
    return domain is not None and bool(domain.isActive())
