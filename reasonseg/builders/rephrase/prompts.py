"""Prompt templates: versioned text files with a [system] and a [user] part and `${name}` placeholders.

A template's identity is its declared version plus the SHA-256 of its bytes, so editing a shipped template without
bumping the version still changes every cache key (a stale answer is never reused for a new prompt).
"""
from __future__ import annotations

import hashlib
import re
import string
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ...errors import BuildError
from ...inputs import check_input

DEFAULT_PROMPTS = {"rephrase": "rephrase-v1.txt", "explain": "explain-v1.txt"}
_VERSION_LINE = re.compile(r"^#\s*version:\s*(\S+)\s*$", re.MULTILINE)
_SECTION = re.compile(r"^\[(system|user)\]\s*$", re.MULTILINE)


@dataclass(frozen=True)
class PromptTemplate:
    version: str  # "rephrase-v1", or "custom" when a file declares none
    sha256: str
    system: str
    user: str
    origin: str  # the file it came from, for messages and the manifest

    @property
    def identity(self) -> str:
        """What the cache key and the manifest record: the version and the first 12 hex digits of the bytes."""
        return f"{self.version}+{self.sha256[:12]}"

    def render(self, **values: object) -> list[dict[str, str]]:
        """Chat messages with every placeholder filled; a placeholder without a value is an error."""
        try:
            system = string.Template(self.system).substitute(values)
            user = string.Template(self.user).substitute(values)
        except (KeyError, ValueError) as exc:
            raise BuildError(f"prompt template has an unknown or malformed placeholder: {exc}", path=self.origin,
                             hint="use ${text}, ${n}, ${form}, ${target_rule} (rephrase) or ${text}, ${target} "
                                  "(explain); write $$ for a literal $") from None
        return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def parse_template(text: str, origin: str) -> PromptTemplate:
    sections = list(_SECTION.finditer(text))
    names = [m.group(1) for m in sections]
    if names != ["system", "user"]:
        raise BuildError("prompt template must hold a [system] line then a [user] line, each followed by its text",
                         path=origin, hint=f"found sections {names}")
    header = text[:sections[0].start()]
    version_match = _VERSION_LINE.search(header)
    system = text[sections[0].end():sections[1].start()].strip("\n")
    user = text[sections[1].end():].strip("\n")
    if not system.strip() or not user.strip():
        raise BuildError("prompt template has an empty [system] or [user] part", path=origin)
    return PromptTemplate(version_match.group(1) if version_match else "custom",
                          hashlib.sha256(text.encode("utf-8")).hexdigest(), system, user, origin)


def load_template(task: str, path: Path | None = None) -> PromptTemplate:
    """The shipped default prompt of a task, or the template file the user passed with --prompt."""
    if path is None:
        name = DEFAULT_PROMPTS[task]
        text = resources.files(__package__).joinpath("prompts", name).read_text(encoding="utf-8")
        return parse_template(text, f"reasonseg/builders/rephrase/prompts/{name}")
    try:
        text = check_input(path, "prompt template", BuildError, "--prompt").read_text(encoding="utf-8")
    except OSError as exc:
        raise BuildError(f"cannot read the prompt template: {exc.strerror}", path=str(path)) from None
    except UnicodeDecodeError:
        raise BuildError("prompt template is not UTF-8 text", path=str(path)) from None
    return parse_template(text, str(path))
