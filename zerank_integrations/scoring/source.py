"""Where a checkpoint comes from: a local folder or a Hugging Face hub id, its files, and its tokenizer.

Before anything is downloaded a hub id is checked with one request (no retries): a model that does not exist,
is gated, or cannot be reached fails within seconds with one clear ``ModelLoadError``. With the Hub out of
reach, a copy in the local Hugging Face cache is used instead. ``trust_remote_code`` is always off.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zerank_integrations.families import CheckpointFacts, CheckpointReadError, hub_id_from_path

logger = logging.getLogger(__name__)

HUB_PROBE_TIMEOUT_S = 10.0


class ModelLoadError(RuntimeError):
    """A reranker model could not be loaded; the message names it and says what to try."""


@dataclass
class CheckpointSource:
    """A local folder or a hub id, with the loader options that reach it."""

    name: str
    local_dir: Path | None
    hub_id: str | None
    revision: str | None
    local_files_only: bool
    cache_dir: str | os.PathLike[str] | None
    token: str | None

    @classmethod
    def resolve(
        cls,
        model: str,
        revision: str | None,
        local_files_only: bool,
        cache_dir: str | os.PathLike[str] | None,
        token: str | None,
    ) -> CheckpointSource:
        path = Path(model).expanduser()
        if path.is_dir():
            return cls(str(path), path, hub_id_from_path(str(path.resolve())), revision, True, cache_dir, token)
        if _looks_like_path(model) or path.exists():
            what = "not a directory" if path.exists() else "no such directory"
            raise ModelLoadError(f"could not load reranker model {model!r}: {what}")
        unreachable = None
        if not (local_files_only or _hub_offline()):
            unreachable = _probe_hub(model, revision, cache_dir, token)
        offline = local_files_only or _hub_offline() or unreachable is not None
        if offline and not _cached(model, revision, cache_dir):
            why = "local_files_only=True" if local_files_only else "HF_HUB_OFFLINE is set"
            if unreachable is not None:
                why = f"the Hugging Face Hub cannot be reached ({unreachable})"
            raise ModelLoadError(
                f"could not load reranker model {_where(model, revision)}: it is not in the local Hugging Face cache "
                f"and {why}. Download it where there is network (`hf download {model}`) and pass its local "
                "directory instead of the hub id"
            )
        if unreachable is not None:  # said once, and only when the cached copy is what gets used
            logger.warning(
                "the Hugging Face Hub cannot be reached (%s); using the cached copy of %s", unreachable, model
            )
        return cls(model, None, model, revision, offline, cache_dir, token)

    def options(self) -> dict[str, Any]:
        options: dict[str, Any] = {
            "revision": self.revision,
            "local_files_only": self.local_files_only,
            "cache_dir": self.cache_dir,
            "trust_remote_code": False,
        }
        if self.token is not None:
            options["token"] = self.token
        return options

    def file(self, filename: str) -> Path | None:
        """A file of the checkpoint, downloaded if needed; ``None`` when the checkpoint has no such file."""
        if self.local_dir is not None:
            candidate = self.local_dir / filename
            return candidate if candidate.is_file() else None
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

        try:
            return Path(
                hf_hub_download(
                    self.name,
                    filename,
                    revision=self.revision,
                    cache_dir=self.cache_dir,
                    token=self.token,
                    local_files_only=self.local_files_only,
                )
            )
        except (EntryNotFoundError, LocalEntryNotFoundError):
            return None

    def text(self, filename: str) -> str | None:
        path = self.file(filename)
        if path is None:
            return None
        try:
            return path.read_text(encoding="utf-8")
        except (OSError, ValueError) as error:
            raise ModelLoadError(f"model {self.name!r}: cannot read {filename}: {error}") from error

    def facts(self) -> CheckpointFacts:
        """What the checkpoint says about itself (configs, sentence-transformers modules, chat template)."""
        try:
            return CheckpointFacts.read(self.name, self.hub_id, self.text)
        except CheckpointReadError as error:
            raise ModelLoadError(f"model {self.name!r}: {error}") from None

    def tokenizer(self, facts: CheckpointFacts) -> Any:
        """The checkpoint's tokenizer; one whose class lives in the checkpoint's own code is read from its
        ``tokenizer.json`` (vocabulary, special tokens, chat template) without running that code."""
        from transformers import AutoTokenizer, PreTrainedTokenizerFast

        loader = AutoTokenizer
        if facts.tokenizer_remote_code and self.file("tokenizer.json") is not None:
            loader = PreTrainedTokenizerFast
        try:
            return loader.from_pretrained(self.name, **self.options())
        except (OSError, ValueError, ImportError) as error:
            raise ModelLoadError(_load_hint(self.name, self.revision, error)) from error


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def _cached(model: str, revision: str | None, cache_dir: str | os.PathLike[str] | None) -> bool:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(model, "config.json", cache_dir=cache_dir, revision=revision)
    return isinstance(found, str)


def _probe_hub(
    model: str, revision: str | None, cache_dir: str | os.PathLike[str] | None, token: str | None
) -> str | None:
    """One request to the Hub, no retries. ``None`` when it answers; why not, when it is out of reach."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        HFValidationError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        HfApi().model_info(model, revision=revision, timeout=HUB_PROBE_TIMEOUT_S, token=token)
    except GatedRepoError:
        raise ModelLoadError(
            f"could not load reranker model {_where(model, revision)}: it is gated on the Hugging Face Hub; accept "
            "its terms on the model page and pass token= (or set HF_TOKEN)"
        ) from None
    except RepositoryNotFoundError:
        raise ModelLoadError(
            f"could not load reranker model {model!r}: no such model on the Hugging Face Hub (if it is private, "
            "pass token= or set HF_TOKEN; if it is a local folder, check the path)"
        ) from None
    except RevisionNotFoundError:
        raise ModelLoadError(
            f"could not load reranker model {model!r}: the Hub has no revision {revision!r} for it"
        ) from None
    except HFValidationError as error:
        raise ModelLoadError(f"could not load reranker model {model!r}: not a valid hub id ({error})") from None
    except HfHubHTTPError as error:
        status = getattr(getattr(error, "response", None), "status_code", None)
        if status in (401, 403, 404):
            raise ModelLoadError(
                f"could not load reranker model {_where(model, revision)}: the Hugging Face Hub answered HTTP "
                f"{status} (no such model, or a private one: pass token= or set HF_TOKEN)"
            ) from None
        return _unreachable(error)
    except Exception as error:  # transport errors of whatever HTTP client huggingface_hub uses
        return _unreachable(error)
    return None


def _unreachable(error: BaseException) -> str:
    reason = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {reason}" if reason else type(error).__name__


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "~", os.sep)) or name.count("/") > 1 or "\\" in name


def _where(name: str, revision: str | None) -> str:
    return f"{name!r}" + (f" (revision {revision!r})" if revision else "")


def _load_hint(name: str, revision: str | None, error: BaseException) -> str:
    where = _where(name, revision)
    path = Path(name).expanduser()
    reason = str(error).strip().splitlines()[0].rstrip(".") if str(error).strip() else type(error).__name__
    message = f"could not load reranker model {where}: {reason}"
    if path.is_dir():
        if not (path / "config.json").is_file():  # the loader's own error names a tokenizer class, not this
            return (
                f"could not load reranker model {where}: the folder has no config.json, so it is not a "
                "Hugging Face model folder (point at the folder holding config.json, the tokenizer files and "
                "*.safetensors)"
            )
        if not list(path.glob("*.safetensors")) and (list(path.glob("*.bin")) or list(path.glob("*.pt"))):
            message += ". Only .safetensors weights are loaded (pickled weights can run code); convert them first"
        return message
    return message + (
        ". If this machine is offline, download the model where there is network (e.g. `hf download "
        f"{name}`) and pass its local directory instead of the hub id"
    )
