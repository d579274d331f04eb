"""Fail loudly on any connection to a non-loopback address, in every process a test starts.

Tests must stay offline. `install()` guards the calling process:
- Python sockets: `connect`, `connect_ex`, `sendto`/`sendmsg` to an address that is not
  loopback, and name resolution (`getaddrinfo`, `gethostbyname`, ...) of a name that is
  not localhost, raise `NetworkAccessError`. Loopback and AF_UNIX are allowed.
- curl_cffi (what yfinance uses in production) connects from C, past the socket guard,
  so its `Curl.perform` and `AsyncCurl.add_handle` check the handle's target first: the
  URL's host, unless a loopback proxy or a RESOLVE entry to a loopback address takes the
  connection. Without a proxy of the caller's own, the handle is routed through a dead
  loopback proxy (`DEAD_PROXY`) with only loopback (and loopback-resolved) names exempt, so
  a redirect curl would follow by itself cannot leave either; the address curl finally
  connected to is checked afterwards as well. Patched when curl_cffi is imported.
- Child processes: `install(state_dir)` (conftest) exports `ENV_STATE` and puts `SITE_DIR`
  on PYTHONPATH, whose `sitecustomize.py` runs `install()` in every Python process started
  from here (Prefect test servers, uvicorn, Dask workers, CLI subprocesses), and in theirs.
  A child given an environment of its own (`subprocess.Popen(env=...)`) gets both entries
  added back. Forked children inherit the guard.

Every refusal, in any process, is appended to `<state_dir>/violations.log` (pid, program,
what), so one swallowed by library code (a background thread, a broad `except`, a server
that turns it into a 500) still fails the test that caused it: conftest's autouse fixture
reads the new lines with `take_violations()`. Every guarded process appends its pid to
`<state_dir>/guarded.pids`; `unguarded_children()` lists live Python descendants missing
from it (started with `-I`/`-E`, or by something that scrubbed the environment).
"""

from __future__ import annotations

import ipaddress
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import urlsplit

ENV_STATE = "TICKERCAST_NETGUARD_DIR"
SITE_DIR = Path(__file__).resolve().with_name("netguard_site")
VIOLATIONS_FILE = "violations.log"
PIDS_FILE = "guarded.pids"
# Nothing listens on the discard port of loopback: connecting is refused at once.
DEAD_PROXY = "http://127.0.0.1:9"
LOOPBACK_NAMES = "localhost,127.0.0.1,::1"

# Refusals in this process (the log file has every process's).
VIOLATIONS: list[str] = []
_LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback", ""}
_installed = False
_log_offset = 0
_lock = threading.Lock()


class NetworkAccessError(ConnectionError):
    """A test tried to reach the network.

    An OSError, as what an offline machine raises there is: libraries then take their
    usual path for a network failure (retry, fall back, report) instead of crashing on an
    unexpected type. The log, not the exception, is what fails the test.
    """


def _is_local_host(host: object) -> bool:
    if host is None:
        return True
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    host = str(host).strip("[]").split("%")[0]
    if host.lower() in _LOCAL_NAMES:
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback or address.is_unspecified


def _is_ip(host: object) -> bool:
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    try:
        ipaddress.ip_address(str(host).strip("[]").split("%")[0])
    except ValueError:
        return False
    return True


def _state_dir() -> Path | None:
    value = os.environ.get(ENV_STATE)
    return Path(value) if value else None


def _append(name: str, line: str) -> None:
    """One write with O_APPEND: lines from concurrent processes never interleave."""
    state = _state_dir()
    if state is None:
        return
    try:
        fd = os.open(state / name, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    except OSError:
        return
    try:
        os.write(fd, line.encode("utf-8", "replace"))
    finally:
        os.close(fd)


def _refuse(what: str) -> None:
    message = f"network access blocked in tests: {what}"
    VIOLATIONS.append(message)
    program = " ".join(sys.argv[:2])[:120].replace("\n", " ") or sys.executable
    _append(VIOLATIONS_FILE, f"pid {os.getpid()} ({program}): {message}\n".replace("\r", " "))
    raise NetworkAccessError(message)


def _register_process() -> None:
    _append(PIDS_FILE, f"{os.getpid()}\n")


def take_violations() -> list[str]:
    """Refusals logged by any guarded process since the previous call (this process's too)."""
    global _log_offset
    state = _state_dir()
    if state is None or not (state / VIOLATIONS_FILE).exists():
        return []
    with _lock, open(state / VIOLATIONS_FILE, "rb") as handle:
        handle.seek(_log_offset)
        data = handle.read()
        complete = data.rfind(b"\n") + 1  # a line still being written waits for next time
        _log_offset += complete
    return data[:complete].decode("utf-8", "replace").splitlines()


def guarded_pids() -> set[int]:
    state = _state_dir()
    if state is None or not (state / PIDS_FILE).exists():
        return set()
    text = (state / PIDS_FILE).read_text(encoding="utf-8", errors="replace")
    return {int(line) for line in text.split() if line.isdigit()}


def unguarded_children() -> list[str]:
    """Live Python processes descended from this one that never installed the guard."""
    import psutil

    me = psutil.Process()
    pythons = []
    for child in me.children(recursive=True):
        try:
            exe = os.path.basename(child.exe())
            cmdline = child.cmdline()
            if child.status() == psutil.STATUS_ZOMBIE:
                continue
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        if exe.startswith("python"):
            pythons.append((child.pid, " ".join(cmdline)[:160]))
    known = guarded_pids()
    return [f"pid {pid}: {cmd}" for pid, cmd in pythons if pid not in known]


def child_env(env):  # type: ignore[no-untyped-def]
    """`env` (a Popen environment, or None to inherit) with the guard's entries in it."""
    state = os.environ.get(ENV_STATE)
    if env is None or state is None:
        return env
    env = dict(env)
    as_bytes = any(isinstance(key, bytes) for key in env)
    key_state, key_path = (
        (ENV_STATE.encode(), b"PYTHONPATH") if as_bytes else (ENV_STATE, "PYTHONPATH")
    )
    site = os.fsencode(SITE_DIR) if as_bytes else str(SITE_DIR)
    sep = os.pathsep.encode() if as_bytes else os.pathsep
    env.setdefault(key_state, os.fsencode(state) if as_bytes else state)
    path = env.get(key_path) or (b"" if as_bytes else "")
    if site not in path.split(sep):
        env[key_path] = sep.join([site, path]) if path else site
    return env


def install(state_dir: str | Path | None = None) -> None:
    """Guard this process; with `state_dir`, also every process it starts (see module doc)."""
    global _installed
    if state_dir is not None:
        Path(state_dir).mkdir(parents=True, exist_ok=True)
        os.environ[ENV_STATE] = str(state_dir)
        path = os.environ.get("PYTHONPATH", "")
        if str(SITE_DIR) not in path.split(os.pathsep):
            os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(SITE_DIR), path) if p)
    if _installed or getattr(socket, "_tickercast_netguard", False):
        return  # a second copy of this module (sitecustomize's and `tests.netguard`)
    _installed = True
    socket._tickercast_netguard = True  # type: ignore[attr-defined]
    _guard_sockets()
    _guard_subprocess_env()
    _guard_curl_cffi()
    _register_process()
    os.register_at_fork(after_in_child=_register_process)


def _guard_sockets() -> None:
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex
    real_sendto, real_sendmsg = socket.socket.sendto, socket.socket.sendmsg
    real_getaddrinfo = socket.getaddrinfo
    real_gethostbyname, real_gethostbyname_ex = socket.gethostbyname, socket.gethostbyname_ex
    real_gethostbyaddr = socket.gethostbyaddr

    def check(sock: socket.socket, address: object, verb: str) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6) and isinstance(address, tuple):
            if not _is_local_host(address[0]):
                _refuse(f"{verb} {address[0]}:{address[1]}")

    def connect(self, address):  # type: ignore[no-untyped-def]
        check(self, address, "connect to")
        return real_connect(self, address)

    def connect_ex(self, address):  # type: ignore[no-untyped-def]
        check(self, address, "connect to")
        return real_connect_ex(self, address)

    def sendto(self, data, *args):  # type: ignore[no-untyped-def]
        check(self, args[-1] if args else None, "send to")
        return real_sendto(self, data, *args)

    def sendmsg(self, buffers, ancdata=(), flags=0, address=None):  # type: ignore[no-untyped-def]
        check(self, address, "send to")
        if address is None:
            return real_sendmsg(self, buffers, ancdata, flags)
        return real_sendmsg(self, buffers, ancdata, flags, address)

    def lookup(real, verb, literals_pass=True):  # type: ignore[no-untyped-def]
        def guarded(host, *args, **kwargs):  # type: ignore[no-untyped-def]
            # An IP literal needs no DNS query: connect() decides about the address.
            if not _is_local_host(host) and not (literals_pass and _is_ip(host)):
                _refuse(f"{verb} {host!r}")
            return real(host, *args, **kwargs)

        guarded.__name__ = real.__name__
        guarded.__doc__ = real.__doc__
        return guarded

    socket.socket.connect = connect  # type: ignore[method-assign]
    socket.socket.connect_ex = connect_ex  # type: ignore[method-assign]
    socket.socket.sendto = sendto  # type: ignore[method-assign]
    socket.socket.sendmsg = sendmsg  # type: ignore[method-assign]
    socket.getaddrinfo = lookup(real_getaddrinfo, "name lookup of")
    socket.gethostbyname = lookup(real_gethostbyname, "name lookup of")
    socket.gethostbyname_ex = lookup(real_gethostbyname_ex, "name lookup of")
    socket.gethostbyaddr = lookup(real_gethostbyaddr, "reverse lookup of", literals_pass=False)


def _guard_subprocess_env() -> None:
    """A child started with an environment of its own still gets the guard's entries.

    Without `env` a child inherits os.environ, which has them already.
    """
    real_init = subprocess.Popen.__init__
    env_position = 10  # Popen(args, bufsize, executable, stdin, stdout, stderr,
    #                          preexec_fn, close_fds, shell, cwd, env, ...)

    def __init__(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        if "env" in kwargs:
            kwargs["env"] = child_env(kwargs["env"])
        elif len(args) > env_position:
            args = (*args[:env_position], child_env(args[env_position]), *args[env_position + 1 :])
        real_init(self, *args, **kwargs)

    subprocess.Popen.__init__ = __init__  # type: ignore[method-assign]


# --- curl_cffi -------------------------------------------------------------------------


def _guard_curl_cffi() -> None:
    """Patch curl_cffi now if it is loaded, else as soon as it is imported."""
    if "curl_cffi.curl" in sys.modules:
        _patch_curl(sys.modules["curl_cffi.curl"])
    if "curl_cffi.aio" in sys.modules:
        _patch_aio(sys.modules["curl_cffi.aio"])
    sys.meta_path.insert(0, _PatchOnImport())


class _PatchOnImport:
    """Meta-path finder: patches curl_cffi's modules right after they execute."""

    _patchers = {"curl_cffi.curl": "_patch_curl", "curl_cffi.aio": "_patch_aio"}

    def find_spec(self, fullname, path, target=None):  # type: ignore[no-untyped-def]
        if fullname not in self._patchers:
            return None
        from importlib.machinery import PathFinder

        spec = PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        real_exec = spec.loader.exec_module
        patch = globals()[self._patchers[fullname]]

        def exec_module(module):  # type: ignore[no-untyped-def]
            real_exec(module)
            patch(module)

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def _curl_host_port(url: str) -> tuple[str, int | None]:
    if "://" not in url:
        url = "http://" + url  # curl guesses the scheme; the host is what matters
    parts = urlsplit(url)
    default = {"https": 443, "http": 80, "wss": 443, "ws": 80}.get(parts.scheme.lower())
    try:
        port = parts.port or default
    except ValueError:
        port = default
    return parts.hostname or "", port


def _resolved_locally(opts: dict, host: str, port: int | None) -> bool:
    """True when a RESOLVE entry sends host:port to loopback addresses only."""
    for entry in opts.get("resolve", []):
        text = entry.decode(errors="replace") if isinstance(entry, bytes) else str(entry)
        if text.startswith("-"):
            continue
        name, _, rest = text.lstrip("+").partition(":")
        entry_port, _, addresses = rest.partition(":")
        if name.lower() != host.lower() or (entry_port != "*" and entry_port != str(port)):
            continue
        hosts = [a.strip().strip("[]") for a in addresses.split(",") if a.strip()]
        if hosts and all(_is_local_host(a) for a in hosts):
            return True
    return False


def _check_curl_target(opts: dict) -> str | None:
    """Refuse a handle whose connection would leave loopback.

    Returns the no-proxy list to use with `DEAD_PROXY`, or None when a proxy of the
    caller's own (on loopback, checked) carries the request.
    """
    url = opts.get("url") or ""
    host, port = _curl_host_port(url)
    proxies = [opts[key] for key in ("pre_proxy", "proxy") if opts.get(key)]
    for proxy in proxies:
        if not _is_local_host(_curl_host_port(proxy)[0]):
            _refuse(f"curl_cffi request to {url} through proxy {proxy}")
    direct_is_local = _is_local_host(host) or _resolved_locally(opts, host, port)
    if proxies:
        if not direct_is_local:
            for name in str(opts.get("noproxy") or "").split(","):
                name = name.strip().lstrip(".").lower()
                exempt = name and (host.lower() == name or host.lower().endswith("." + name))
                if name == "*" or exempt:
                    _refuse(f"curl_cffi request to {url} (exempt from its proxy by noproxy)")
        return None
    if not direct_is_local:
        _refuse(f"curl_cffi request to {url}")
    return LOOPBACK_NAMES if _is_local_host(host) else f"{LOOPBACK_NAMES},{host}"


def _patch_curl(module) -> None:  # type: ignore[no-untyped-def]
    Curl, CurlOpt, CurlInfo = module.Curl, module.CurlOpt, module.CurlInfo
    if getattr(Curl, "_netguard", False):
        return
    Curl._netguard = True
    tracked = {
        int(CurlOpt.URL): "url",
        int(CurlOpt.PROXY): "proxy",
        int(CurlOpt.PRE_PROXY): "pre_proxy",
        int(CurlOpt.NOPROXY): "noproxy",
        int(CurlOpt.UNIX_SOCKET_PATH): "unix_socket",
        int(CurlOpt.ABSTRACT_UNIX_SOCKET): "unix_socket",
    }
    resolve, connect_to = int(CurlOpt.RESOLVE), int(CurlOpt.CONNECT_TO)
    real_setopt, real_reset = Curl.setopt, Curl.reset
    real_perform, real_duphandle = Curl.perform, Curl.duphandle

    def options(curl) -> dict:  # type: ignore[no-untyped-def]
        return curl.__dict__.setdefault("_netguard_opts", {})

    def setopt(self, option, value):  # type: ignore[no-untyped-def]
        opts = options(self)
        key = int(option)
        if key in tracked:
            text = value.decode(errors="replace") if isinstance(value, bytes) else value
            opts[tracked[key]] = text
        elif key == resolve:
            opts.setdefault("resolve", []).extend(value or [])
        elif key == connect_to:
            # Any connect-to mapping makes the URL's host say nothing about the target.
            opts["connect_to"] = list(value or [])
        return real_setopt(self, option, value)

    def reset(self):  # type: ignore[no-untyped-def]
        self.__dict__["_netguard_opts"] = {}
        return real_reset(self)

    def duphandle(self):  # type: ignore[no-untyped-def]
        copy = real_duphandle(self)
        copy.__dict__["_netguard_opts"] = dict(options(self))
        return copy

    def before(self) -> None:  # type: ignore[no-untyped-def]
        opts = options(self)
        if opts.get("connect_to"):
            _refuse(f"curl_cffi CONNECT_TO {opts['connect_to']} (not supported by the guard)")
        if opts.get("unix_socket"):
            return  # a local socket file: no network, whatever the URL says
        noproxy = _check_curl_target(opts)
        if noproxy is not None:
            # Through a dead loopback proxy, with only loopback names exempt: a redirect
            # that curl follows by itself, or an environment proxy, cannot leave either.
            real_setopt(self, CurlOpt.PROXY, DEAD_PROXY)
            real_setopt(self, CurlOpt.NOPROXY, noproxy)

    def after(self) -> None:  # type: ignore[no-untyped-def]
        """Where curl went on its own (redirects): logged if it left loopback or tried to."""
        opts = options(self)
        try:
            ip, last = self.getinfo(CurlInfo.PRIMARY_IP), self.getinfo(CurlInfo.EFFECTIVE_URL)
        except Exception:  # noqa: BLE001 - a closed handle has nothing to report
            return
        ip = ip.decode(errors="replace") if isinstance(ip, bytes) else str(ip or "")
        last = last.decode(errors="replace") if isinstance(last, bytes) else str(last or "")
        if ip and not _is_local_host(ip):
            _refuse(f"curl_cffi connected to {ip} for {last or opts.get('url')}")
        host, port = _curl_host_port(last) if last else ("", None)
        proxied = opts.get("proxy") or opts.get("pre_proxy")
        if host and not proxied and not _is_local_host(host):
            if not _resolved_locally(opts, host, port):
                _refuse(f"curl_cffi followed a redirect to {last} (stopped at the dead proxy)")

    def perform(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        before(self)
        try:
            return real_perform(self, *args, **kwargs)
        finally:
            after(self)
            if kwargs.get("clear_resolve", args[1] if len(args) > 1 else True):
                options(self).pop("resolve", None)  # curl_cffi drops its list too

    Curl.setopt = setopt
    Curl.reset = reset
    Curl.duphandle = duphandle
    Curl.perform = perform
    Curl._netguard_before = before
    Curl._netguard_after = after


def _patch_aio(module) -> None:  # type: ignore[no-untyped-def]
    AsyncCurl = module.AsyncCurl
    if getattr(AsyncCurl, "_netguard", False):
        return
    AsyncCurl._netguard = True
    real_add = AsyncCurl.add_handle

    def add_handle(self, curl):  # type: ignore[no-untyped-def]
        before = getattr(type(curl), "_netguard_before", None)
        if before is None:
            _refuse("curl_cffi async request on an unguarded handle")
        before(curl)
        future = real_add(self, curl)
        future.add_done_callback(lambda _: _after_quietly(curl))
        return future

    AsyncCurl.add_handle = add_handle


def _after_quietly(curl) -> None:  # type: ignore[no-untyped-def]
    try:
        type(curl)._netguard_after(curl)
    except NetworkAccessError:
        pass  # logged already; the test fails through the log
