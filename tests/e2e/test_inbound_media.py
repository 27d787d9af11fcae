"""End to end, the inbound content families (issue 14): an end user's IMAGE, DOCUMENT and
LOCATION reach the CCaaS simulator with their own types, through the Subscriptions
webhook (whose events carry no contentType: Session reads it with Get Messages and
``messageIds``), and the image is a gateway link that streams the file from Infobip."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.support.mesh import Mesh, running_mesh, wait_for

pytestmark = pytest.mark.e2e

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 200


@pytest.fixture(scope="module")
def media_mesh(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    log_dir = Path(tmp_path_factory.mktemp("media-mesh"))
    with running_mesh(redis_url, log_dir, {"CCBRIDGE_MEDIA_PROXY": "true"}) as handle:
        yield handle


_SUBSCRIBED: set[int] = set()  # meshes (id) whose subscription is registered


def _subscribe_only(mesh: Mesh) -> None:
    """The Subscriptions webhook registered with the real CLI (once per mesh); the legacy
    one turned off, so every message comes as an event without its contentType."""
    if id(mesh) in _SUBSCRIBED:
        return
    url = f"http://127.0.0.1:{mesh.ports['gateway']}/webhooks/infobip/events"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "ccbridge.services.cli",
            "infobip",
            "subscribe",
            "--url",
            url,
            "--subscription-id",
            f"e2e-{uuid.uuid4().hex[:8]}",
        ],
        env=mesh.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    mesh.infobip.put("/_sim/config", json={"webhook_url": None}).raise_for_status()
    _SUBSCRIBED.add(id(mesh))


def _send(mesh: Mesh, cid: str, kind: str, content: dict[str, Any]) -> str:
    answer = mesh.infobip.post(
        f"/_sim/conversations/{cid}/send", json={"contentType": kind, "content": content}
    ).json()
    assert answer["webhook_status"] is None and answer["event_status"] == 200
    return str(answer["message"]["id"])


def _get_messages_by_id(log_dir: Path, cid: str) -> list[list[str]]:
    """The ``messageIds`` of every Get Messages call the mesh made for ``cid``."""
    found = []
    for line in (log_dir / "infobip-exchanges.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record.get("kind") == "api" and record["path"].endswith(f"{cid}/messages"):
            ids = record["query"].get("messageIds")
            if record["method"] == "GET" and ids:
                found.append(list(ids))
    return found


def test_image_document_location_arrive_with_their_types(media_mesh: Mesh) -> None:
    mesh = media_mesh
    _subscribe_only(mesh)
    cid = mesh.conversation(history=4)["id"]
    assert mesh.escalate(cid).status_code == 202
    wait_for("ACTIVE", lambda: mesh.handover(cid).get("state") == "ACTIVE")

    stored = mesh.infobip.post(
        "/_sim/media", content=PNG, headers={"content-type": "image/png"}
    ).json()
    on_infobip = stored["url"]
    assert on_infobip.startswith(f"http://127.0.0.1:{mesh.ports['infobip-sim']}/")
    sent = [
        _send(mesh, cid, "IMAGE", {"url": on_infobip, "caption": "the broken lid"}),
        _send(mesh, cid, "DOCUMENT", {"url": "https://files.example.com/invoice"}),
        _send(mesh, cid, "LOCATION", {"latitude": 51.178844, "longitude": -1.826323}),
    ]

    def customer_messages() -> list[dict[str, Any]] | None:
        case = mesh.case_for(cid)
        got = [m for m in (case or {}).get("messages", []) if m.get("from") == "customer"]
        return got if len(got) >= 3 else None

    image, document, location = wait_for("three messages at the CCaaS", customer_messages)
    assert [m["id"] for m in (image, document, location)] == sent
    assert [m["contentType"] for m in (image, document, location)] == [
        "IMAGE",
        "DOCUMENT",
        "LOCATION",
    ]
    assert image["content"]["caption"] == "the broken lid"
    # Not on Infobip: passed as it is (the API key goes to Infobip only).
    assert document["content"] == {"url": "https://files.example.com/invoice"}
    assert location["content"] == {"latitude": 51.178844, "longitude": -1.826323}

    # The image is a gateway link the CCaaS opens without any Infobip credential.
    link = image["content"]["url"]
    assert link.startswith(f"http://127.0.0.1:{mesh.ports['gateway']}/media/")
    opened = mesh.gateway.get(urlsplit(link).path)
    assert opened.status_code == 200
    assert opened.content == PNG and opened.headers["content-type"] == "image/png"
    tampered = mesh.gateway.get(urlsplit(link).path[:-3] + "AAA")
    assert tampered.status_code == 403 and tampered.json()["error"]["code"]

    # The types were read from Infobip (Get Messages with messageIds), never guessed.
    log_dir = mesh.group.log_dir
    assert log_dir is not None
    read = [i for ids in _get_messages_by_id(log_dir, cid) for i in ids]
    assert set(sent) <= set(read)


def test_a_typing_indicator_event_is_never_a_message(media_mesh: Mesh) -> None:
    """The Subscriptions webhook has no typing event (its document's CUSTOMER_ENGAGEMENT
    events are conversation and message ones): an end user's TYPING_INDICATOR comes as a
    message event, and once its type is read back it is dropped, not delivered."""
    mesh = media_mesh
    _subscribe_only(mesh)
    cid = mesh.conversation(history=2)["id"]
    assert mesh.escalate(cid).status_code == 202
    wait_for("ACTIVE", lambda: mesh.handover(cid).get("state") == "ACTIVE")
    _send(mesh, cid, "TYPING_INDICATOR", {})
    after = _send(mesh, cid, "TEXT", {"text": "are you there?"})

    def customer_messages() -> list[dict[str, Any]] | None:
        case = mesh.case_for(cid)
        got = [m for m in (case or {}).get("messages", []) if m.get("from") == "customer"]
        return got if any(m["id"] == after for m in got) else None

    seen = wait_for("the text at the CCaaS", customer_messages)
    assert [(m["id"], m["contentType"]) for m in seen] == [(after, "TEXT")]
    handover = mesh.handover(cid)
    assert handover["inboxPending"] == 0 and handover.get("deadLetters", 0) == 0
