"""Round trip with Label Studio, for teams that already run it.

Export writes `config.xml` (a labeling config whose control names are our answer fields) and
`tasks.json` (one task per item; images inline as data URIs, our item id in `data.editcaption_item`).
Import reads Label Studio's JSON export of annotated tasks: each non-cancelled annotation's `result`
regions (`from_name` → `value.choices` / `value.text`) become one answer, validated like a web-form
answer, from the annotator named by `completed_by` (its e-mail's local part, or `labelstudio-<id>`).
"""

from __future__ import annotations

import base64
import json
import re
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path
from typing import Any

from editcaption.review.exports import item_images
from editcaption.review.store import Store, StoreError
from editcaption.review.tasks import TASK_KINDS, BadResult
from editcaption.schema import ERROR_TYPES, SEVERITIES, VERDICTS

_MULTI = {"fixed", "error_types"}  # controls whose answer is a list
_NAME = re.compile(r"[^A-Za-z0-9._-]")


def labeling_config(kind: str) -> str:
    """The Label Studio labeling config (XML) for one task kind."""
    view = ET.Element("View")
    ET.SubElement(view, "Header", value="Source → target")
    ET.SubElement(view, "Image", name="source", value="$source", zoom="true")
    ET.SubElement(view, "Image", name="target", value="$target", zoom="true")
    if kind == "refine":
        ET.SubElement(view, "Header", value="Best candidate")
        ET.SubElement(view, "Text", name="candidate", value="$instruction")
        _choices(view, "action", "candidate", ["accept", "reject"], required=True)
        ET.SubElement(
            view,
            "TextArea",
            name="instruction",
            toName="candidate",
            editable="true",
            maxSubmissions="1",
            placeholder="The refined instruction (required when accepting)",
        )
        _choices(view, "fixed", "candidate", list(ERROR_TYPES), multiple=True)
    elif kind == "prefer":
        ET.SubElement(view, "Header", value="A")
        ET.SubElement(view, "Text", name="a", value="$instruction_a")
        ET.SubElement(view, "Header", value="B")
        ET.SubElement(view, "Text", name="b", value="$instruction_b")
        _choices(view, "chosen", "a", ["a", "b"], required=True)
        _choices(view, "error_type", "a", list(ERROR_TYPES), required=True)
        _choices(view, "severity", "a", list(SEVERITIES), required=True)
    elif kind == "judge":
        ET.SubElement(view, "Text", name="judged", value="$instruction")
        _choices(view, "verdict", "judged", list(VERDICTS), required=True)
        _choices(view, "error_types", "judged", list(ERROR_TYPES), multiple=True)
    else:
        raise ValueError(f"unknown task kind {kind!r}; kinds: {', '.join(TASK_KINDS)}")
    ET.indent(view)
    return ET.tostring(view, encoding="unicode")


def export_labelstudio(
    store: Store,
    kind: str,
    out: str | Path,
    project: str | None = None,
    data_dir: str | Path | None = None,
    actor: str | None = None,
) -> int:
    """Write `config.xml` and `tasks.json` for every `kind` item (an audited export); the number of tasks."""
    config = labeling_config(kind)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tasks = []
    for item in store.items(kind, project):
        source, target = item_images(store, item["id"], item["pair_id"], data_dir)
        images = {"source": _data_uri(source), "target": _data_uri(target)}
        fields = {k: v for k, v in item["payload"].items() if isinstance(v, str)}
        tasks.append(
            {
                "data": {
                    **fields,
                    **images,
                    "pair_id": item["pair_id"],
                    "project": item["project"],
                    "editcaption_item": item["id"],
                    "editcaption_kind": kind,
                }
            }
        )
    (out / "config.xml").write_text(config, encoding="utf-8")
    (out / "tasks.json").write_text(json.dumps(tasks), encoding="utf-8")
    store.record(
        "labelstudio.export",
        actor=actor,
        target=kind,
        rows=len(tasks),
        detail={"project": project, "out": str(out)},
    )
    return len(tasks)


def import_labelstudio(store: Store, path: str | Path, actor: str | None = None) -> dict[str, Any]:
    """Store every annotation in a Label Studio JSON export (an audited import); {"stored": n,
    "skipped": {reason: n}}."""
    try:
        tasks = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a readable Label Studio JSON export ({exc})") from None
    if not isinstance(tasks, list):
        raise ValueError(f"{path}: a Label Studio JSON export is a list of tasks")
    stored, skipped = 0, Counter()
    for task in tasks:
        data = task.get("data") or {}
        item_id, kind = data.get("editcaption_item"), data.get("editcaption_kind")
        if not isinstance(item_id, int) or kind not in TASK_KINDS:
            skipped["not_an_editcaption_task"] += 1
            continue
        for annotation in task.get("annotations") or []:
            if annotation.get("was_cancelled"):
                skipped["cancelled"] += 1
                continue
            answer = _answer(annotation.get("result") or [])
            uid = store.ensure_user(_annotator(annotation.get("completed_by")), actor=actor)
            try:
                aid = store.assign_to(item_id, uid)
                store.submit(uid, aid, answer)
            except (BadResult, StoreError) as exc:
                skipped[f"invalid: {exc}"] += 1
                continue
            stored += 1
    store.record(
        "labelstudio.import", actor=actor, rows=stored, detail={"file": str(path), "skipped": dict(skipped)}
    )
    return {"stored": stored, "skipped": dict(skipped)}


def _answer(regions: list[dict[str, Any]]) -> dict[str, Any]:
    answer: dict[str, Any] = {}
    for region in regions:
        name, value = region.get("from_name"), region.get("value") or {}
        if "choices" in value:
            choices = list(value["choices"])
            answer[name] = choices if name in _MULTI else (choices[0] if choices else None)
        elif "text" in value:
            text = value["text"]
            answer[name] = "\n".join(text) if isinstance(text, list) else text
    return answer


def _annotator(completed_by: Any) -> str:
    if isinstance(completed_by, dict):
        email = completed_by.get("email") or ""
        if email:
            return _NAME.sub("_", email.split("@")[0])[:64] or "labelstudio"
        completed_by = completed_by.get("id")
    return f"labelstudio-{completed_by}"


def _choices(
    view: ET.Element, name: str, to: str, values: list[str], *, required: bool = False, multiple: bool = False
) -> None:
    el = ET.SubElement(view, "Choices", name=name, toName=to, choice="multiple" if multiple else "single")
    if required:
        el.set("required", "true")
    for v in values:
        ET.SubElement(el, "Choice", value=v)


def _data_uri(data: bytes) -> str:
    kind = "jpeg" if data.startswith(b"\xff\xd8") else "png"
    return f"data:image/{kind};base64,{base64.b64encode(data).decode()}"
