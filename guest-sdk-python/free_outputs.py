"""Patches a component built by componentize-py 0.25.1 so that it frees the
byte lists it returns.

componentize-py 0.25.1 lowers a returned `list<u8>` (a Python `bytes`) by
copying it into a fresh allocation that nothing frees (its runtime's
`maybe_pop_list` does not defer the deallocation the way its other paths do),
so every `flat-map` call leaks its whole output: a guest runs out of memory
after a few million words. This script prepends to the post-return functions
of the calls that return byte lists (0.1.0: `flat-map`, `flat-map-keyed` and
`key-selector`; 0.2.0: `map`, `process`, `window-add`, `window-merge` and
`window-fire`, each with two lists, `output` and `changes`), which run after
the host has read the result, a call to the runtime's own
`wit_dylib_dealloc_bytes(cx, ptr, len, align = 1, deferred = 0)` per list,
which frees the copy with the allocator that made it.

Usage: python3 free_outputs.py COMPONENT.wasm COMPONENTIZE_PY_VERSION
[WIT_VERSION] (rewritten in place; WIT_VERSION is 0.1.0 unless given). It
checks the shape it expects and fails rather than guess; drop it once
componentize-py frees these lists itself.
"""

import os
import sys

EXPECTED_TOOL = "0.25.1"


def targets(wit_version):
    """post-return export -> where each returned list's (ptr, len) sits in
    the return area, and whether a result discriminant (0 = ok) guards it."""
    package = f"sluice:stream/operator@{wit_version}"
    if wit_version == "0.1.0":
        # batch-result { output: list<u8>, failed: option<record-error> };
        # key-selector returns result<list<u8>, record-error>.
        return {
            f"cabi_post_{package}#flat-map": [(0, False)],
            f"cabi_post_{package}#flat-map-keyed": [(0, False)],
            f"cabi_post_{package}#key-selector": [(4, True)],
        }
    if wit_version == "0.2.0":
        # batch-result { output: list<u8>, changes: list<u8>, failed: ... }.
        calls = ("map", "process", "window-add", "window-merge", "window-fire")
        return {f"cabi_post_{package}#{c}": [(0, False), (8, False)] for c in calls}
    raise Shape(f"no post-return layout known for sluice:stream@{wit_version}")


DEALLOC = ("env", "wit_dylib_dealloc_bytes")


class Shape(Exception):
    pass


def leb(buf, pos):
    """Reads an unsigned LEB128 at `pos`; returns (value, next position)."""
    result = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return result, pos


def uleb(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def sections(buf, pos):
    """Yields (id, header start, content start, content end) of the sections
    from `pos`."""
    while pos < len(buf):
        sid = buf[pos]
        size, start = leb(buf, pos + 1)
        yield sid, pos, start, start + size
        pos = start + size


def name(buf, pos):
    n, pos = leb(buf, pos)
    return bytes(buf[pos:pos + n]).decode(), pos + n


def skip_limits(buf, pos):
    flags = buf[pos]
    pos += 1
    _, pos = leb(buf, pos)
    if flags & 1:
        _, pos = leb(buf, pos)
    return pos


def skip_reftype(buf, pos):
    t = buf[pos]
    if t in (0x63, 0x64):  # (ref null? heaptype)
        _, pos = leb(buf, pos + 1)
        return pos
    return pos + 1


def parse_types(buf, start, end):
    types, pos = [], start
    count, pos = leb(buf, pos)
    for _ in range(count):
        if buf[pos] != 0x60:
            raise Shape("a type that is not a plain function type")
        n, pos = leb(buf, pos + 1)
        params = bytes(buf[pos:pos + n])
        pos += n
        n, pos = leb(buf, pos)
        results = bytes(buf[pos:pos + n])
        pos += n
        types.append((params, results))
    return types


def parse_imports(buf, start):
    """Returns [(module, field, typeidx)] of the imported functions, in order."""
    funcs, pos = [], start
    count, pos = leb(buf, pos)
    for _ in range(count):
        module, pos = name(buf, pos)
        field, pos = name(buf, pos)
        kind = buf[pos]
        pos += 1
        if kind == 0:
            t, pos = leb(buf, pos)
            funcs.append((module, field, t))
        elif kind == 1:
            pos = skip_limits(buf, skip_reftype(buf, pos))
        elif kind == 2:
            pos = skip_limits(buf, pos)
        elif kind == 3:
            pos = skip_reftype(buf, pos) + 1
        elif kind == 4:
            _, pos = leb(buf, pos + 1)
        else:
            raise Shape(f"unknown import kind {kind}")
    return funcs


def parse_exports(buf, start):
    exports, pos = {}, start
    count, pos = leb(buf, pos)
    for _ in range(count):
        field, pos = name(buf, pos)
        kind = buf[pos]
        index, pos = leb(buf, pos + 1)
        if kind == 0:
            exports[field] = index
    return exports


def parse_function_types(buf, start):
    count, pos = leb(buf, start)
    out = []
    for _ in range(count):
        t, pos = leb(buf, pos)
        out.append(t)
    return out


def prologue(dealloc, offset, guarded):
    """The instructions that free the list at `offset` of the return area (local 0)."""
    call = (
        b"\x41\x00"  # i32.const 0 (cx: unused when not deferred)
        + b"\x20\x00\x28\x02" + uleb(offset)  # local.get 0; i32.load offset (ptr)
        + b"\x20\x00\x28\x02" + uleb(offset + 4)  # local.get 0; i32.load offset+4 (len)
        + b"\x41\x01"  # i32.const 1 (align)
        + b"\x41\x00"  # i32.const 0 (free now)
        + b"\x10" + uleb(dealloc)  # call wit_dylib_dealloc_bytes
    )
    if not guarded:
        return call
    # if (i32.load8_u (local.get 0)) == 0 (the result is ok) { call }
    return b"\x20\x00\x2d\x00\x00\x45\x04\x40" + call + b"\x0b"


def patch_module(mod, lists_at):
    """Returns the patched core module, or None when it is not the bindings module."""
    if mod[:8] != b"\0asm\x01\0\0\0":
        raise Shape("a core module without the wasm 1 header")
    found = {sid: (h, s, e) for sid, h, s, e in sections(mod, 8) if sid != 0}
    if 7 not in found or 2 not in found:
        return None
    exports = parse_exports(mod, found[7][1])
    if not any(t in exports for t in lists_at):
        return None
    missing = [t for t in lists_at if t not in exports]
    if missing:
        raise Shape(f"no export {missing[0]}")
    types = parse_types(mod, found[1][1], found[1][2])
    imports = parse_imports(mod, found[2][1])
    dealloc = [i for i, (m, f, _) in enumerate(imports) if (m, f) == DEALLOC]
    if len(dealloc) != 1 or types[imports[dealloc[0]][2]] != (b"\x7f" * 5, b""):
        raise Shape("no import env.wit_dylib_dealloc_bytes(i32 x5)")
    dealloc = dealloc[0]
    func_types = parse_function_types(mod, found[3][1])

    # Split the code section into bodies.
    code_header, code_start, code_end = found[10]
    count, pos = leb(mod, code_start)
    bodies = []
    for _ in range(count):
        size, pos = leb(mod, pos)
        bodies.append(bytearray(mod[pos:pos + size]))
        pos += size
    if pos != code_end:
        raise Shape("the code section does not add up")

    for export, lists in lists_at.items():
        index = exports[export] - len(imports)
        if index < 0 or types[func_types[index]] != (b"\x7f", b""):
            raise Shape(f"{export} is not a defined function (i32) -> ()")
        body = bodies[index]
        n, p = leb(body, 0)  # local declarations: n x (count, type)
        for _ in range(n):
            _, p = leb(body, p)
            p += 1
        body[p:p] = b"".join(prologue(dealloc, offset, guarded) for offset, guarded in lists)

    code = uleb(len(bodies)) + b"".join(uleb(len(b)) + b for b in bodies)
    return mod[:code_header] + b"\x0a" + uleb(len(code)) + code + mod[code_end:]


def patch_component(buf, wit_version="0.1.0"):
    lists_at = targets(wit_version)
    if buf[:8] != b"\0asm\x0d\0\x01\0":
        raise Shape("not a component")
    out = bytearray(buf[:8])
    patched = 0
    for sid, _, start, end in sections(buf, 8):
        content = buf[start:end]
        if sid == 1:  # a core module
            new = patch_module(content, lists_at)
            if new is not None:
                content = new
                patched += 1
        out += bytes((sid,)) + uleb(len(content)) + content
    if patched != 1:
        raise Shape(f"{patched} modules export the post-return functions, expected 1")
    return bytes(out)


def main(path, tool_version, wit_version="0.1.0"):
    if tool_version != EXPECTED_TOOL:
        sys.exit(
            f"error: free_outputs.py is written for componentize-py {EXPECTED_TOOL}, not "
            f"{tool_version}: check whether it still leaks returned byte lists (see "
            "guest-sdk-python/README.md) and update or drop the patch"
        )
    with open(path, "rb") as f:
        buf = f.read()
    try:
        patched = patch_component(buf, wit_version)
    except (Shape, IndexError) as e:
        sys.exit(f"error: {path} does not have the shape free_outputs.py expects: {e}")
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(patched)
    os.replace(tmp, path)


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        sys.exit("usage: free_outputs.py COMPONENT.wasm COMPONENTIZE_PY_VERSION [WIT_VERSION]")
    main(*sys.argv[1:])
