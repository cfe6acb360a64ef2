"""Plain-text documents from Debian packages, for export_activations.py.

Each source is a Debian package that reproduce/setup-export.sh installs:

  fortunes             /usr/share/games/fortunes/*         one entry = one document
  fortunes-de          /usr/share/games/fortunes/de/*      one entry = one document
  python3.11-doc       the reST sources of Python's documentation
                       (/usr/share/doc/python3.11/html/_sources/**/*.rst.txt)
  linux-doc            the kernel's Documentation/**/*.rst.gz (translations/ left out)
  debian-reference-en  /usr/share/debian-reference/debian-reference.en.txt.gz

Prose sources are stripped of markup (headings, directives and their code
bodies, literal and doctest blocks, tables, comments, inline roles and link
targets) down to plain paragraphs, and split into documents at section
headings: a document is one section's paragraphs. Paragraphs that do not look
like prose (too few words, too few letters) are dropped. Everything is read in
a sorted, deterministic order; export_activations.py shuffles documents with
its --seed.

`documents(sources)` returns [(source, [paragraph, ...]), ...];
`provenance(source)` returns [(Debian package, installed version), ...].
"""
import glob
import gzip
import os
import re
import subprocess

SOURCES = ("fortunes", "fortunes-de", "python3.11-doc", "linux-doc", "debian-reference-en")
DEFAULT = ",".join(SOURCES)

FORTUNE_DIRS = {"fortunes": "/usr/share/games/fortunes", "fortunes-de": "/usr/share/games/fortunes/de"}
PYTHON_DOC = "/usr/share/doc/python3.11/html/_sources"
LINUX_DOC_GLOB = "/usr/share/doc/linux-doc-*/Documentation"
DEBIAN_REFERENCE = "/usr/share/debian-reference/debian-reference.en.txt.gz"


class SourceError(Exception):
    """A text source is missing or unreadable; the message names it."""


def _missing(src, what):
    return SourceError(f"text source {src!r}: {what} not found (run reproduce/setup-export.sh, "
                       f"or apt-get install {src})")


def source_path(src):
    """The folder or file the source is read from, checked to exist."""
    if src in FORTUNE_DIRS:
        p = FORTUNE_DIRS[src]
    elif src == "python3.11-doc":
        p = PYTHON_DOC
    elif src == "linux-doc":
        found = sorted(glob.glob(LINUX_DOC_GLOB))
        if not found:
            raise _missing(src, LINUX_DOC_GLOB)
        p = found[-1]
    elif src == "debian-reference-en":
        p = DEBIAN_REFERENCE
    else:
        raise SourceError(f"unknown text source {src!r} (known: {DEFAULT})")
    if not os.path.exists(p):
        raise _missing(src, p)
    return p


def _fortune_files(folder):
    return [os.path.join(folder, n) for n in sorted(os.listdir(folder))
            if os.path.isfile(os.path.join(folder, n)) and "." not in n]


def provenance(src):
    """[(package, version), ...]: every Debian package that owns a file the source
    reads (fortunes: fortunes and fortunes-min), the source's own package first."""
    path = source_path(src)
    probes = _fortune_files(path) if src in FORTUNE_DIRS else [path]
    try:
        owners = subprocess.run(["dpkg-query", "-S", *probes], capture_output=True, text=True, check=True).stdout
        packages = []
        for line in owners.splitlines():
            for p in line.split(":", 1)[0].split(","):
                if p.strip() and p.strip() not in packages:
                    packages.append(p.strip())
        packages.sort(key=lambda p: (not p.startswith(src), p))
        result = []
        for package in packages:
            version = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package],
                                     capture_output=True, text=True, check=True).stdout.strip()
            if not version:
                raise SourceError(f"text source {src!r}: dpkg reports no version for {package}")
            result.append((package, version))
    except (OSError, subprocess.CalledProcessError) as e:
        raise SourceError(f"text source {src!r}: cannot find the Debian packages that own {path} ({e})")
    if not result:
        raise SourceError(f"text source {src!r}: no Debian package owns {path}")
    return result


# ---------------------------------------------------------------- fortunes

def fortune_documents(src):
    """Fortune entries (separated by lines of '%'), whitespace collapsed, longer than 40 characters.
    The same entries in the same order as the v1 exporter."""
    docs = []
    for path in _fortune_files(source_path(src)):
        with open(path, encoding="utf-8", errors="replace") as f:
            for entry in f.read().split("\n%\n"):
                entry = " ".join(entry.split())
                if len(entry) > 40:
                    docs.append((src, [entry]))
    return docs


# ---------------------------------------------------------------- prose

_ADORNMENT = re.compile(r"^([=\-~^\"'`#*+:.<>_!$%&,;/?@\\|])\1{2,}\s*$")
_DIRECTIVE = re.compile(r"^\s*\.\.\s+(?:[\w-]+:)?([\w-]+)::(.*)$")
_COMMENT = re.compile(r"^\s*\.\.(\s|$)")
_FIELD = re.compile(r"^\s*:[^:\s][^:]*:(\s|$)")
_BULLET = re.compile(r"^\s*(?:[-*+\u2022]|#\.|\d+[.)]|\(\d+\)|[a-zA-Z][.)])\s+")
_TABLE = re.compile(r"^\s*(\+[-=+]+\+?|\|.*\||=+(\s+=+)+)\s*$")
# Directives whose bodies are code, tables, pictures or machinery, not prose.
_SKIP_BODY = {
    "code-block", "code", "sourcecode", "literalinclude", "doctest", "testcode", "testoutput", "testsetup",
    "testcleanup", "productionlist", "toctree", "image", "figure", "table", "csv-table", "list-table",
    "flat-table", "math", "graphviz", "kernel-doc", "kernel-abi", "kernel-feat", "kernel-include", "include",
    "raw", "highlight", "index", "only", "cssclass", "tabularcolumns", "parsed-literal", "ifconfig",
    "contents", "sectionauthor", "moduleauthor", "codeauthor", "audit-event", "impl-detail", "maxdepth",
    "wavedrom", "rubric", "glossary", "opcode", "describe", "envvar", "program", "option", "cmdoption",
    "c:macro", "c:function", "c:type", "c:member", "c:var", "c:struct", "c:enum", "c:union", "c:enumerator",
}

_ROLE = re.compile(r":[\w:+.-]+:`([^`]*)`")
_LINK = re.compile(r"`([^`<]*?)\s*<[^`>]*>`__?")
_REF = re.compile(r"`([^`]+)`__?")
_LITERAL = re.compile(r"``([^`]+)``")
_STRONG = re.compile(r"\*\*([^*]+)\*\*")
_EMPH = re.compile(r"(?<![\w*])\*([^*\s][^*]*)\*(?![\w*])")
_SUBST = re.compile(r"\|([^|\s][^|]*)\|_?")
_FOOTREF = re.compile(r"\s*\[(?:#\w*|\*|\d+)\]_")
_REFWORD = re.compile(r"\b(\w+)__?(?=\W|$)")


def _inline(text):
    def role(m):
        body = m.group(1)
        inner = re.match(r"^(.*?)\s*<[^>]*>$", body)
        if inner and inner.group(1):
            body = inner.group(1)
        return body.lstrip("~!")
    text = _ROLE.sub(role, text)
    text = _LINK.sub(lambda m: m.group(1), text)
    text = _LITERAL.sub(lambda m: m.group(1), text)
    text = _REF.sub(lambda m: m.group(1), text)
    text = _STRONG.sub(lambda m: m.group(1), text)
    text = _EMPH.sub(lambda m: m.group(1), text)
    text = _SUBST.sub(lambda m: m.group(1), text)
    text = _FOOTREF.sub("", text)
    text = _REFWORD.sub(lambda m: m.group(1), text)
    text = text.replace("\\ ", "").replace("\\", "")
    return " ".join(text.split())


def is_prose(p):
    """A paragraph worth keeping: at least 6 words, mostly letters, not code."""
    words = p.split()
    if len(words) < 6:
        return False
    chars = [c for c in p if not c.isspace()]
    letters = sum(c.isalpha() for c in chars)
    if letters < 0.75 * len(chars):
        return False
    if p.startswith((">>>", "$ ", "# ", "...", "{", "}", "/*", "//")) or p.endswith((";", "{")):
        return False
    return True


def _indent(line):
    return len(line) - len(line.lstrip(" "))


def rst_sections(text):
    """reST text -> list of sections, each a list of prose paragraphs."""
    lines = text.expandtabs(8).splitlines()
    sections, paras, block = [], [], []

    def flush_block():
        if block:
            p = _inline(" ".join(block))
            if is_prose(p):
                paras.append(p)
            block.clear()

    def new_section():
        flush_block()
        if paras:
            sections.append(list(paras))
            paras.clear()

    i, n = 0, len(lines)
    while i < n:
        line = lines[i]
        stripped = line.strip()
        if not stripped:
            flush_block()
            i += 1
            continue
        # A heading: text with an adornment line under it (and maybe over it).
        if _ADORNMENT.match(stripped):
            if block and len(block) == 1 and i > 0 and lines[i - 1].strip():
                block.clear()  # the title itself
                new_section()
            else:
                flush_block()
            i += 1
            continue
        if i + 1 < n and _ADORNMENT.match(lines[i + 1].strip()) and len(lines[i + 1].strip()) >= len(stripped) - 2 \
                and not block:
            new_section()
            i += 2
            continue
        d = _DIRECTIVE.match(line)
        if d or _COMMENT.match(line):
            flush_block()
            base = _indent(line)
            skip = (d is None) or d.group(1).lower() in _SKIP_BODY or (d.group(0).split("::")[0].split()[-1].lower() in _SKIP_BODY)
            i += 1
            # The body: following lines indented deeper (or blank).
            body = []
            while i < n and (not lines[i].strip() or _indent(lines[i]) > base):
                body.append(lines[i])
                i += 1
            if not skip:
                rest = d.group(2).strip()
                head = [rest] if rest and d.group(1).lower() in ("note", "warning", "tip", "important", "hint",
                                                                  "attention", "caution", "danger", "admonition",
                                                                  "seealso", "versionadded", "versionchanged",
                                                                  "deprecated") else []
                inner = rst_sections("\n".join(head + [ln[base + 3:] if len(ln) > base + 3 else ln.strip() for ln in body]))
                for s in inner:
                    paras.extend(s)
            continue
        if _TABLE.match(line) or stripped.startswith(">>>"):
            flush_block()
            # Skip the whole table or doctest block (until a blank line).
            while i < n and lines[i].strip():
                i += 1
            continue
        if _FIELD.match(line):
            flush_block()
            i += 1
            continue
        if _BULLET.match(line) and block:
            flush_block()
        text = _BULLET.sub("", line, count=1) if _BULLET.match(line) else stripped
        literal = text.rstrip().endswith("::")
        if literal:
            text = text.rstrip()[:-2].rstrip()
            text = text + ":" if text and not text.endswith(":") else text
        block.append(text.strip())
        i += 1
        if literal:
            flush_block()
            # The literal block: the indented lines after it.
            base = _indent(line)
            while i < n and not lines[i].strip():
                i += 1
            while i < n and (not lines[i].strip() or _indent(lines[i]) > base):
                i += 1
    new_section()
    return sections


def _read(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as f:
        return f.read()


def rst_documents(src, paths):
    docs = []
    for path in paths:
        for section in rst_sections(_read(path)):
            docs.append((src, section))
    return docs


_DEBREF_HEADING = re.compile(r"^(Chapter \d+\.|Appendix [A-Z]\.|\d+(\.\d+)+\.)\s+\S")


def debian_reference_documents(src):
    """The plain-text Debian Reference: sections start at numbered headings;
    tables, boxes, commands and listings fail the prose test."""
    text = _read(source_path(src))
    docs, paras, block = [], [], []

    def flush_block():
        if block:
            p = " ".join(" ".join(block).split())
            if is_prose(p) and "|" not in p and "+--" not in p:
                paras.append(p)
            block.clear()

    for line in text.splitlines():
        s = line.strip()
        if _DEBREF_HEADING.match(s):
            flush_block()
            if paras:
                docs.append((src, list(paras)))
                paras.clear()
            continue
        if not s or s.startswith(("|", "+-", "$ ", "# ")) or _BULLET.match(line) and block:
            flush_block()
            if not s or s.startswith(("|", "+-", "$ ", "# ")):
                continue
        block.append(_BULLET.sub("", s, count=1) if _BULLET.match(line) else s)
    flush_block()
    if paras:
        docs.append((src, paras))
    return docs


def documents(sources):
    """All documents of the given sources, in a fixed order: [(source, [paragraph, ...]), ...]."""
    docs = []
    for src in sources:
        if src in FORTUNE_DIRS:
            docs += fortune_documents(src)
        elif src == "python3.11-doc":
            root = source_path(src)
            docs += rst_documents(src, sorted(glob.glob(os.path.join(root, "**", "*.rst.txt"), recursive=True)))
        elif src == "linux-doc":
            root = source_path(src)
            paths = sorted(p for p in glob.glob(os.path.join(root, "**", "*.rst.gz"), recursive=True)
                           if "/translations/" not in p)
            docs += rst_documents(src, paths)
        elif src == "debian-reference-en":
            docs += debian_reference_documents(src)
        else:
            raise SourceError(f"unknown text source {src!r} (known: {DEFAULT})")
    return docs


if __name__ == "__main__":
    # python reproduce/text_sources.py [SOURCE ...]: counts, and a few paragraphs of each source.
    import random
    import sys
    for src in sys.argv[1:] or SOURCES:
        docs = documents([src])
        paras = [p for _, ps in docs for p in ps]
        print(f"{src} ({'; '.join(' '.join(pv) for pv in provenance(src))}): {len(docs)} documents, {len(paras)} paragraphs, "
              f"{sum(len(p) for p in paras):,} characters")
        for p in random.Random(0).sample(paras, min(4, len(paras))):
            print("   ", p[:300])
