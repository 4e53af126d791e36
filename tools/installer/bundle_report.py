"""What a built bundle contains and needs: size, files, the newest glibc symbol version any of its
libraries requires (and which library), and anything that should not be there.

    python -m tools.installer.bundle_report dist/Lensbench [--archive dist/Lensbench-...tar.gz]

The glibc requirement is read from each ELF file's GNU version-needs section (``.gnu.version_r``,
what ``objdump -p`` prints under "Version References"), parsed here so the report needs no
binutils. A program runs on a system whose glibc is at least the highest ``GLIBC_x.y`` any
of its files references.
"""

from __future__ import annotations

import argparse
import json
import re
import struct
import sys
from dataclasses import dataclass, field
from pathlib import Path

SHT_GNU_VERNEED = 0x6FFFFFFE
# Files that must never be in the bundle (bundle_policy keeps them out; this checks the result).
FORBIDDEN = re.compile(
    r"(^|/)(libcuda|libcudart|libcublas|libcudnn|libnvrtc|libnvjitlink|libnccl|libcupti|libnvvm|"
    r"libgtk-|libgdk-|libcairo|libpango|libatk)[^/]*$|"
    r"(^|/)torch/(test|include)/|(^|/)torch/bin/(?!torch_shm_manager$)|(^|/)(wandb|pyarrow|pandas|datasets|pytest|_pytest)/",
    re.IGNORECASE)


def version_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version))


def elf_version_needs(path: Path) -> dict[str, set[str]] | None:
    """{needed library: {symbol versions}} of a 64-bit little-endian ELF file, None otherwise."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
            if len(head) < 64 or head[:4] != b"\x7fELF" or head[4] != 2 or head[5] != 1:
                return None
            shoff, = struct.unpack_from("<Q", head, 0x28)
            shentsize, shnum, _shstrndx = struct.unpack_from("<HHH", head, 0x3A)
            if not shoff or shentsize < 64:
                return {}
            f.seek(shoff)
            table = f.read(shentsize * shnum)
            sections = [struct.unpack_from("<IIQQQQIIQQ", table, i * shentsize)
                        for i in range(shnum)]
            needs: dict[str, set[str]] = {}
            for _name, kind, _fl, _addr, offset, size, link, info, _al, _es in sections:
                if kind != SHT_GNU_VERNEED or link >= len(sections):
                    continue
                f.seek(offset)
                data = f.read(size)
                strtab_off, strtab_size = sections[link][4], sections[link][5]
                f.seek(strtab_off)
                strtab = f.read(strtab_size)

                def text(i: int, strtab: bytes = strtab) -> str:
                    return strtab[i:strtab.index(b"\0", i)].decode("ascii", "replace")

                pos = 0
                for _ in range(info):
                    _ver, cnt, file_i, aux, nxt = struct.unpack_from("<HHIII", data, pos)
                    versions = needs.setdefault(text(file_i), set())
                    apos = pos + aux
                    for _ in range(cnt):
                        _hash, _flags, _other, name_i, anext = struct.unpack_from("<IHHII", data,
                                                                                  apos)
                        versions.add(text(name_i))
                        if not anext:
                            break
                        apos += anext
                    if not nxt:
                        break
                    pos += nxt
            return needs
    except (OSError, struct.error, ValueError):
        return None


@dataclass
class Report:
    folder: str
    files: int = 0
    bytes: int = 0
    archive: str = ""
    archive_bytes: int = 0
    elf_files: int = 0
    max_glibc: str = ""
    glibc_files: list[str] = field(default_factory=list)  # files needing max_glibc
    max_glibcxx: str = ""
    glibcxx_files: list[str] = field(default_factory=list)
    next_glibc: list[tuple[str, str]] = field(default_factory=list)  # (version, file) below max
    forbidden: list[str] = field(default_factory=list)
    largest: list[tuple[str, int]] = field(default_factory=list)


def _max_of(prefix: str, needs: dict[str, set[str]]) -> str:
    found = [v for vs in needs.values() for v in vs if v.startswith(prefix + "_")
             and re.fullmatch(prefix + r"_[\d.]+", v)]
    return max(found, key=version_key) if found else ""


def build_report(folder: Path, archive: Path | None = None) -> Report:
    folder = Path(folder)
    report = Report(str(folder))
    per_file_glibc: list[tuple[str, str]] = []
    per_file_glibcxx: list[tuple[str, str]] = []
    sizes = []
    for path in sorted(folder.rglob("*")):
        if path.is_symlink() or not path.is_file():
            continue
        rel = path.relative_to(folder).as_posix()
        size = path.stat().st_size
        report.files += 1
        report.bytes += size
        sizes.append((rel, size))
        if FORBIDDEN.search(rel):
            report.forbidden.append(rel)
        needs = elf_version_needs(path)
        if needs is None:
            continue
        report.elf_files += 1
        g, gx = _max_of("GLIBC", needs), _max_of("GLIBCXX", needs)
        if g:
            per_file_glibc.append((g, rel))
        if gx:
            per_file_glibcxx.append((gx, rel))
    if per_file_glibc:
        report.max_glibc = max((v for v, _ in per_file_glibc), key=version_key)
        report.glibc_files = sorted(f for v, f in per_file_glibc if v == report.max_glibc)
        below = sorted({v for v, _ in per_file_glibc if v != report.max_glibc}, key=version_key)
        report.next_glibc = [(v, f) for v in below[-2:][::-1] for vv, f in per_file_glibc
                             if vv == v][:6]
    if per_file_glibcxx:
        report.max_glibcxx = max((v for v, _ in per_file_glibcxx), key=version_key)
        report.glibcxx_files = sorted(f for v, f in per_file_glibcxx if v == report.max_glibcxx)
    report.largest = sorted(sizes, key=lambda s: -s[1])[:8]
    if archive is not None and Path(archive).is_file():
        report.archive = str(archive)
        report.archive_bytes = Path(archive).stat().st_size
    return report


def format_report(r: Report) -> str:
    mib = 2 ** 20
    lines = [f"bundle {r.folder}: {r.bytes / mib:.0f} MiB in {r.files} files "
             f"({r.elf_files} ELF)"]
    if r.archive:
        lines.append(f"archive {r.archive}: {r.archive_bytes / mib:.0f} MiB")
    if r.max_glibc:
        lines.append(f"needs glibc >= {r.max_glibc.split('_')[1]} ({r.max_glibc}: "
                     f"{', '.join(r.glibc_files[:4])}{' ...' if len(r.glibc_files) > 4 else ''})")
        for v, f in r.next_glibc:
            lines.append(f"  then {v}: {f}")
    if r.max_glibcxx:
        lines.append(f"needs libstdc++ with {r.max_glibcxx} ({', '.join(r.glibcxx_files[:3])}"
                     f"{' ...' if len(r.glibcxx_files) > 3 else ''})")
    lines.append("largest: " + ", ".join(f"{n} {s / mib:.0f} MiB" for n, s in r.largest[:5]))
    lines.append("forbidden files: " + (", ".join(r.forbidden[:10]) if r.forbidden else "none"))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", type=Path)
    p.add_argument("--archive", type=Path)
    p.add_argument("--json", type=Path, help="also write the report as JSON")
    args = p.parse_args(argv)
    report = build_report(args.folder, args.archive)
    print(format_report(report))
    if args.json:
        args.json.write_text(json.dumps(report.__dict__, indent=1), encoding="utf-8")
    return 1 if report.forbidden else 0


if __name__ == "__main__":
    sys.exit(main())
