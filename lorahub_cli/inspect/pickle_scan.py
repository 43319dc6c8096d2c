"""A bounded look at a PyTorch pickle's opcodes before torch reads it: bombs are refused from the bytes alone.

torch's weights-only loader never runs code, but it does what the file asks within its allow-list, and a
2 KB file can ask a lot: a list that holds one nested list a hundred times, nested again (the memo lets a
pickle name an object twice at no cost; walking the result is exponential), storages that declare terabytes,
a tensor that views one element a billion times (stride 0), a DEFLATEd zip entry that inflates a thousand-fold.
``scan_pickle`` disassembles the pickle streams with ``pickletools`` (nothing is built or run), keeping a
small model of the stack: for every value, how many objects it expands to when walked, and for the values
torch.save writes (storage ids, tensor sizes), their numbers. It refuses with ``pickle-bomb`` when
* the zip's declared member sizes exceed the file's size plus ``EXPANSION_BOUND``;
* a value would expand to more objects than the stream has bytes (plus ``OBJECT_BOUND``);
* the storages, or the tensors viewing them, hold more bytes than the file's size plus ``EXPANSION_BOUND``.
So peak memory stays at most the file's size plus a fixed bound, refused files included. The globals the
pickle imports are collected on the way, for refusal messages.
"""

from __future__ import annotations

import io
import math
import pickletools
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Iterator, Optional

from lorahub_cli.errors import PickleBomb
from lorahub_cli.inspect.regular import open_regular

EXPANSION_BOUND = 64 << 20    # bytes a reader may hold beyond the file's own size
OBJECT_BOUND = 1_000_000      # objects a walk may meet beyond one per byte of pickle
MAX_PICKLES = 5               # the legacy torch format stores 5 pickles in a row (magic, protocol, info, data, keys)
_ELEMENT_BYTES = {"Double": 8, "Float": 4, "Half": 2, "BFloat16": 2, "Long": 8, "Int": 4, "Short": 2, "Char": 1,
                  "Byte": 1, "Bool": 1, "ComplexFloat": 8, "ComplexDouble": 16, "Untyped": 1}
_TENSOR_REBUILDERS = ("torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_tensor")
_WRAPPERS = ("torch._tensor._rebuild_from_type_v2",)   # (rebuilder, type, its args, state)
_KEEP_ITEMS = 64   # tuples up to this long keep their values: persistent ids, tensor sizes (torch allows 64 dims)


@dataclass
class PickleScan:
    globals: list[str] = field(default_factory=list)   # in first-use order, without repeats
    storage_bytes: int = 0       # bytes the distinct storages declare
    tensor_bytes: int = 0        # bytes of every tensor view, counted once per view
    complete: bool = True        # False: the disassembly stopped early (bad bytes: torch will say what)
    seen: set[str] = field(default_factory=set, repr=False)


class _Value:
    """One stack value: how many objects walking it meets (saturating), and a plain value when small."""

    __slots__ = ("weight", "value")

    def __init__(self, weight: int = 1, value: Any = None):
        self.weight = weight
        self.value = value


_MARK = object()


def scan_pickle(path: Path, size: int) -> PickleScan:
    """Refuse (PickleBomb) a torch.save file that would expand far beyond ``size`` bytes; else what it imports."""
    scan = PickleScan()
    with open_regular(path) as f:
        if f.read(4) == b"PK\x03\x04":
            _scan_zip(Path(path), size, scan)
        else:
            f.seek(0)
            _scan_stream(f, size, scan, storage_limit=size)
    limit = size + EXPANSION_BOUND
    if scan.tensor_bytes > limit:
        raise PickleBomb(f"the tensors would take {scan.tensor_bytes:,} bytes in memory, but the file is "
                         f"{size:,} bytes: tensors viewing the same stored values many times (a pickle bomb)")
    return scan


def _scan_zip(path: Path, size: int, scan: PickleScan) -> None:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        scan.complete = False
        return   # torch says what is wrong (truncated, damaged)
    with archive:
        infos = archive.infolist()
        declared = sum(i.file_size for i in infos)
        if declared > size + EXPANSION_BOUND:
            raise PickleBomb(f"the zip's members would inflate to {declared:,} bytes, but the file is {size:,} "
                             "bytes (a decompression bomb; torch.save stores members uncompressed)")
        records = {i.filename.rsplit("/data/", 1)[-1]: i.file_size for i in infos if "/data/" in i.filename}
        for info in infos:
            if info.filename.endswith(".pkl"):
                try:   # its size was checked above, and zipfile never inflates past the declared size
                    stream = io.BytesIO(archive.read(info))   # genops reads byte by byte: not through the zip
                except (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError, NotImplementedError):
                    scan.complete = False   # a bad CRC, an unknown compression: torch says what is wrong
                    continue
                _scan_stream(stream, info.file_size, scan, storage_limit=size + EXPANSION_BOUND, records=records)


def _scan_stream(f: BinaryIO, stream_size: int, scan: PickleScan, *, storage_limit: int,
                 records: Optional[dict[str, int]] = None) -> None:
    object_limit = OBJECT_BOUND + stream_size
    storages: dict[Any, int] = {}
    for _ in range(MAX_PICKLES):
        try:
            _scan_one(f, object_limit, scan, storages, storage_limit, records)
        except PickleBomb:
            raise
        except Exception:  # noqa: BLE001 - bad bytes or data after the last pickle: torch reports them
            scan.complete = False
            return
        if f.read(1)[:1] not in (b"\x80",):   # another pickle follows only in the legacy format
            return
        f.seek(-1, io.SEEK_CUR)


def _scan_one(f: BinaryIO, object_limit: int, scan: PickleScan, storages: dict[Any, int], storage_limit: int,
              records: Optional[dict[str, int]]) -> None:
    stack: list[Any] = []
    memo: dict[Any, Any] = {}

    def pop() -> Any:
        return stack.pop() if stack else _Value()

    def pop_mark() -> list[Any]:
        items = []
        while stack and stack[-1] is not _MARK:
            items.append(stack.pop())
        if stack:
            stack.pop()
        items.reverse()
        return items

    def grow(container: Any, items: list[Any]) -> None:
        if isinstance(container, _Value):
            container.weight = _bounded(container.weight + sum(_weight(i) for i in items), object_limit)

    for op, arg, _pos in _ops(f):
        name = op.name
        if name == "STOP":
            return
        if name in ("PROTO", "FRAME", "PUT", "BINPUT", "LONG_BINPUT"):
            if name.endswith("PUT"):
                memo[arg] = stack[-1] if stack else _Value()
            continue
        if name == "MEMOIZE":
            memo[len(memo)] = stack[-1] if stack else _Value()
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            stack.append(memo.get(arg, _Value()))
        elif name == "DUP":
            stack.append(stack[-1] if stack else _Value())
        elif name == "MARK":
            stack.append(_MARK)
        elif name in ("APPENDS", "SETITEMS", "ADDITEMS"):
            items = pop_mark()
            grow(stack[-1] if stack else None, items)
        elif name in ("APPEND", "SETITEM"):
            items = [pop() for _ in range(1 if name == "APPEND" else 2)]
            grow(stack[-1] if stack else None, items)
        elif name in ("TUPLE", "LIST", "DICT", "FROZENSET"):
            items = pop_mark()
            stack.append(_node(items, object_limit, keep=name == "TUPLE"))
        elif name in ("TUPLE1", "TUPLE2", "TUPLE3", "EMPTY_TUPLE"):
            count = {"TUPLE1": 1, "TUPLE2": 2, "TUPLE3": 3}.get(name, 0)
            items = [pop() for _ in range(count)][::-1]
            stack.append(_node(items, object_limit, keep=True))
        elif name in ("GLOBAL", "INST"):
            if name == "INST":
                pop_mark()
            stack.append(_Value(value=_global(scan, ".".join(str(arg).split(" ", 1)))))
        elif name == "STACK_GLOBAL":
            attr, module = pop(), pop()
            stack.append(_Value(value=_global(scan, f"{_plain(module)}.{_plain(attr)}")))
        elif name == "BINPERSID":
            stack.append(_storage(pop(), storages, scan, storage_limit, records))
        elif name == "REDUCE":
            args, func = pop(), pop()
            stack.append(_reduce(func, args, storages, scan, object_limit))
        elif name == "BUILD":
            state = pop()
            grow(stack[-1] if stack else None, [state])
        elif isinstance(arg, (str, bytes, int, float, bool)) or arg is None and op.stack_after and not op.stack_before:
            stack.append(_Value(value=arg))
        else:
            _generic(op, stack, pop, pop_mark)
        if len(stack) > object_limit:
            raise PickleBomb("the pickle's stack grows past its size (a pickle bomb)")


def _ops(f: BinaryIO) -> Iterator[tuple[Any, Any, Any]]:
    return pickletools.genops(f)


def _generic(op: Any, stack: list, pop, pop_mark) -> None:
    before = [getattr(x, "name", x) for x in op.stack_before]
    if "mark" in before:
        pop_mark()
        before = before[:before.index("mark")]
    items = [pop() for _ in before]
    stack.extend(_Value(1 + sum(_weight(i) for i in items)) for _ in op.stack_after)


def _weight(item: Any) -> int:
    return item.weight if isinstance(item, _Value) else 1


def _bounded(weight: int, limit: int) -> int:
    if weight > limit:
        raise PickleBomb(f"walking the pickle's objects would meet more than {limit:,} of them: it reuses the "
                         "same nested containers over and over (a pickle bomb)")
    return weight


def _node(items: list[Any], limit: int, *, keep: bool) -> _Value:
    value = tuple(_plain(i) for i in items) if keep and len(items) <= _KEEP_ITEMS else None
    return _Value(_bounded(1 + sum(_weight(i) for i in items), limit), value)


def _plain(item: Any) -> Any:
    return item.value if isinstance(item, _Value) else None


def _global(scan: PickleScan, name: str) -> str:
    if name not in scan.seen:   # a set beside the list: a hostile pickle may name a million globals
        scan.seen.add(name)
        scan.globals.append(name)
    return name


def _storage(pid: Any, storages: dict[Any, int], scan: PickleScan, limit: int,
             records: Optional[dict[str, int]]) -> _Value:
    """torch.save's persistent id: ('storage', <storage type>, key, location, numel[, view metadata])."""
    value = _plain(pid)
    if not (isinstance(value, tuple) and len(value) >= 5 and value[0] == "storage"):
        return _Value()
    _kind, storage_type, key, _location, numel = value[:5]
    element = _element_bytes(storage_type)
    if not isinstance(numel, int) or numel < 0:
        return _Value()
    nbytes = numel * element
    if key not in storages:
        storages[key] = nbytes
        scan.storage_bytes += nbytes
        if records is not None and str(key) in records and nbytes > records[str(key)] + EXPANSION_BOUND:
            raise PickleBomb(f"storage {key} declares {nbytes:,} bytes but its zip member holds "
                             f"{records[str(key)]:,} (a pickle bomb)")
        if scan.storage_bytes > limit:
            raise PickleBomb(f"the storages declare {scan.storage_bytes:,} bytes, more than the file "
                             f"could hold ({limit:,}): a pickle bomb or a damaged file")
    return _Value(value=("storage", element))


def _element_bytes(storage_type: Any) -> int:
    name = str(storage_type or "").rsplit(".", 1)[-1].removesuffix("Storage")
    return _ELEMENT_BYTES.get(name, 1)   # unknown (newer) dtypes: at least one byte per element


def _reduce(func: Any, args: Any, storages: dict[Any, int], scan: PickleScan, limit: int) -> _Value:
    value, name = _plain(args), _plain(func)
    if name in _WRAPPERS and isinstance(value, tuple) and len(value) >= 3:
        name, value = value[0], value[2]
    if name in _TENSOR_REBUILDERS and isinstance(value, tuple) and len(value) >= 3:
        storage, sizes = value[0], value[2]
        if isinstance(storage, tuple) and storage[:1] == ("storage",) and isinstance(sizes, tuple) and all(
                isinstance(d, int) and d >= 0 for d in sizes):
            scan.tensor_bytes += math.prod(sizes) * storage[1]
            return _Value(1, ("tensor",))
    return _Value(_bounded(1 + _weight(args), limit))
