"""Compiling the kernels' C++ sources into one library in the kernel cache.

`SOURCES` (the fused triplet step, `triplet_sgd_cpu.cc`, the exact-negatives search,
`missing_items_cpu.cc`, and the epoch's shuffle, `shuffle_cpu.cc`) are compiled into one library
on first use with the machine's C++ compiler (`$CXX`, else `c++`), against the XLA FFI headers
that jaxlib ships, with `-march=native`. The library's name in the cache is a digest of the
sources and `HEADERS`, this file (the recipe), the flags, the compiler, jaxlib's version and the
CPU's features, so a change to any of them builds a new one.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
import pathlib
import platform
import shlex
import shutil
import signal
import subprocess
import tempfile

from absl import logging
import jax

from tripjax.kernels import cache
from tripjax.kernels import errors

_FOLDER = pathlib.Path(__file__).parent
SOURCES = tuple(_FOLDER / name for name in ("triplet_sgd_cpu.cc", "missing_items_cpu.cc",
                                            "shuffle_cpu.cc"))
HEADERS = (_FOLDER / "common.h",)
# -w: XLA's FFI headers warn under g++ 12 (their code, not ours; the kernel builds clean).
FLAGS = ("-O3", "-march=native", "-fopenmp-simd", "-std=c++17", "-shared", "-fPIC", "-w")
# Where the compiler has a static libstdc++, it is linked in and kept private, so the kernel
# never binds to an older libstdc++ the process may have loaded first (conda's, say).
STATIC_RUNTIME_FLAGS = ("-static-libstdc++", "-static-libgcc", "-Wl,--exclude-libs,ALL")
BUILD_TIMEOUT_S = 300


def _names() -> str:
  return " and ".join(path.name for path in SOURCES)


def _compiler() -> list[str]:
  """The compiler command: `$CXX` split like a shell would (e.g. "ccache g++"), else c++."""
  try:
    command = shlex.split(os.environ.get("CXX", "")) or ["c++"]
  except ValueError as e:
    raise errors.KernelBuildError(f"$CXX={os.environ['CXX']!r} is not a command line: {e}.") from e
  path = shutil.which(command[0])
  if path is None:
    raise errors.KernelBuildError(
        f"tripjax's CPU kernels ({_names()}) need a C++17 compiler, and "
        f"{command[0]!r} ($CXX, default c++) was not found; install g++ or clang++ (or set "
        "CXX), or train without --fused_cpu_step.")
  return [path, *command[1:]]


def _run(command: list[str], timeout: float) -> subprocess.CompletedProcess:
  """Runs `command`; on timeout kills its whole process group (the driver's cc1plus and ld too).

  Raises:
    subprocess.TimeoutExpired: after killing the group.
  """
  with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                        start_new_session=True) as process:
    try:
      stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
      os.killpg(process.pid, signal.SIGKILL)
      process.communicate()
      raise
  return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def _compiler_version(compiler: list[str]) -> str:
  """`compiler --version`'s first line ('' if it prints none)."""
  try:
    result = _run([*compiler, "--version"], timeout=60)
  except (OSError, subprocess.TimeoutExpired):
    return ""
  return (result.stdout.splitlines() or [""])[0]


def _flags(compiler: list[str]) -> tuple[str, ...]:
  """`FLAGS`, plus `STATIC_RUNTIME_FLAGS` where the compiler has a static libstdc++."""
  try:  # prints the bare name when it has no such file
    found = _run([*compiler, "-print-file-name=libstdc++.a"], timeout=60).stdout.strip()
  except (OSError, subprocess.TimeoutExpired):
    found = ""
  return FLAGS + (STATIC_RUNTIME_FLAGS if os.path.isabs(found) and os.path.exists(found)
                  else ())


def _cpu_features() -> str:
  """What -march=native depends on: the machine and its CPU feature list."""
  features = ""
  try:
    with open("/proc/cpuinfo") as f:  # x86: "flags", aarch64: "Features"
      features = next((line for line in f if line.startswith(("flags", "Features"))), "")
  except OSError:
    pass
  return f"{platform.machine()} {platform.processor()} {features}"


def toolchain() -> tuple[list[str], tuple[str, ...]]:
  """The compiler command (`$CXX`, else c++) and the flags it builds the library with.

  Raises:
    KernelBuildError: no compiler found.
  """
  compiler = _compiler()
  return compiler, _flags(compiler)


def library_path(compiler: list[str], flags: tuple[str, ...]) -> pathlib.Path:
  """The cached library's path for these sources, this recipe, compiler, flags, jaxlib and CPU."""
  import jaxlib  # pylint: disable=g-import-not-at-top
  digest = hashlib.sha256()
  recipe = pathlib.Path(__file__)  # how they are built: a changed build is a new library
  for part in (*(path.read_bytes() for path in SOURCES + HEADERS + (recipe,)), " ".join(flags),
               " ".join(compiler), _compiler_version(compiler), jaxlib.__version__,
               _cpu_features()):
    digest.update(part if isinstance(part, bytes) else part.encode())
    digest.update(b"\0")
  return cache.cache_dir() / f"tripjax_cpu-{digest.hexdigest()[:16]}.so"


def build() -> pathlib.Path:
  """Compiles the kernels unless a verified build is cached; returns the library's path.

  A cached library is used when `cache.is_verified` accepts it; otherwise it is rebuilt, each
  source compiled by its own compiler process at once, then linked. Concurrent builds compile
  once: a process holding `cache.build_lock` builds, the others wait and find it cached; each
  build compiles into its own temporary folder and renames the result into place, then records
  the hash.

  Raises:
    UnsafeKernelCache: the cache folder or library may be another account's.
    KernelBuildError: no compiler, no FFI headers, an unwritable cache folder, or the
      compiler failed (its output is in the message). Nothing is left in the cache then.
  """
  compiler, flags = toolchain()
  target = library_path(compiler, flags)
  if cache.is_verified(target):
    return target
  include = pathlib.Path(jax.ffi.include_dir())
  if not (include / "xla" / "ffi" / "api" / "ffi.h").exists():
    raise errors.KernelBuildError(f"jaxlib ships no XLA FFI headers at {include}; the CPU "
                                  "kernels need a jaxlib that does.")
  try:
    with cache.build_lock(target.parent):
      if cache.is_verified(target):  # built while this process waited
        return target
      logging.info("Compiling tripjax's CPU kernels into %s (once per machine and version).",
                   target.parent)
      with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        partial = pathlib.Path(tmp) / target.name
        objects = [pathlib.Path(tmp) / f"{source.stem}.o" for source in SOURCES]
        _run_all([[*compiler, *flags, f"-I{include}", "-c", str(source), "-o", str(obj)]
                  for source, obj in zip(SOURCES, objects)])
        _run_all([[*compiler, *flags, *map(str, objects), "-o", str(partial)]])
        cache.install(partial, target)
  except OSError as e:
    raise errors.KernelBuildError(f"cannot write the compiled kernel to {target.parent} ({e}); "
                                  "set $TRIPJAX_CACHE_DIR to a writable folder.") from e
  return target


def build_each(sources: dict[str, pathlib.Path], folder: pathlib.Path) -> dict[str, pathlib.Path]:
  """Compiles each source straight into a library of its own, `folder/<name>.so`, with the
  kernels' compiler and flags, all at once; nothing is cached or verified. What
  `benchmarks.kernel_ab` times beside the library's own (a kernel at an earlier revision).

  Raises:
    KernelBuildError: no compiler, or one failed or timed out (its command and output in the
      message).
  """
  compiler, flags = toolchain()
  include = jax.ffi.include_dir()
  libraries = {name: folder / f"{name}.so" for name in sources}
  _run_all([[*compiler, *flags, f"-I{include}", str(source), "-o", str(libraries[name])]
            for name, source in sources.items()],
           " and ".join(str(source) for source in sources.values()))
  return libraries


def _run_all(commands: list[list[str]], what: str | None = None) -> None:
  """Runs the compiler commands at once, each with `BUILD_TIMEOUT_S`.

  Args:
    commands: compiler command lines.
    what: what they compile, for the messages (default: the library's sources).

  Raises:
    KernelBuildError: one failed or timed out (its command and output in the message).
  """
  what = what or _names()
  with concurrent.futures.ThreadPoolExecutor(len(commands)) as pool:
    runs = [pool.submit(_run, command, BUILD_TIMEOUT_S) for command in commands]
  for command, run in zip(commands, runs):
    try:
      result = run.result()
    except subprocess.TimeoutExpired as e:
      raise errors.KernelBuildError(f"compiling {what} took over {BUILD_TIMEOUT_S} s "
                                    f"({' '.join(command)}).") from e
    if result.returncode != 0:
      raise errors.KernelBuildError(f"compiling {what} failed ({' '.join(command)}):\n"
                                    f"{result.stderr[-4000:]}")
