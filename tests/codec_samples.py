"""One realistic, valid sample per message type, for the codec tests (helper module, no tests).

A new message type without a sample here fails `test_every_type_has_a_sample`.
"""

from __future__ import annotations

import hashlib

from codec import messages as m

TOKEN = bytes.fromhex("00112233445566778899aabbccddeeff")
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 20
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(range(256)) * 12
DIGEST = hashlib.sha256(b"directory v1").digest()
NOW = 1_767_225_600.25

GRANT = m.Update(
    id="alice#42", kind="grant", owner="alice", borrower="bob", image="sunset.jpg", delta=5,
    addressee="bob", grant=bytes(range(200)), created=NOW,
)  # fmt: skip
MORE = m.Update(
    id="bob#17", kind="more", owner="alice", borrower="bob", image="sunset.jpg", delta=3,
    addressee="alice", grant=b"", created=NOW + 1.5,
)  # fmt: skip
REVOKE = m.Update(
    id="alice#43", kind="revoke", owner="alice", borrower="carol", image="cat.png", delta=-2,
    addressee="carol", grant=b"", created=NOW + 3,
)  # fmt: skip
BOB = m.UserEntry(
    user="bob", host="10.0.0.7", port=40001, token_digest=hashlib.sha256(TOKEN).digest(),
    sign_key=b"\x11" * 32, box_key=b"\x22" * 32, expires=NOW + 15,
)  # fmt: skip
CAROL = m.UserEntry(
    user="carol", host="::1", port=0, token_digest=b"", sign_key=b"", box_key=b"", expires=0.0
)

SAMPLES: dict[int, m.Message] = {
    msg.TYPE: msg
    for msg in [
        m.EncryptRequest(rid="alice#1", image="sunset.jpg", data=JPEG, attempt=0),
        m.EncryptReply(rid="alice#1", node=2, sealed=PNG, seal_ms=12.75, wait_ms=1.5),
        m.ErrorReply(
            rid="alice#1",
            code="not_in_majority",
            message="node 3 sees 1 of 3 nodes",
            retryable=True,
        ),
        m.Join(rid="bob#0", user="bob", sign_key=b"\x11" * 32, box_key=b"\x22" * 32,
               stamp=1.7e9, proof=b"\x33" * 64),
        m.JoinReply(rid="bob#0", token=TOKEN, updates=(GRANT, REVOKE)),
        m.ClientHeartbeat(user="bob", token=TOKEN),
        m.Leave(user="bob", token=TOKEN),
        m.DirectoryQuery(rid="alice#2"),
        m.DirectoryReply(rid="alice#2", users=(BOB, CAROL)),
        m.StatusQuery(rid="alice#3"),
        m.StatusReply(
            rid="alice#3",
            node=1,
            state="up",
            served=120,
            cached=0,
            token=True,
            users=2,
            pending=4,
            down_since=0.0,
            token_holder=1,
            majority=True, digest=DIGEST,
            pid=48213,
            syncing=True,
        ),
        m.PostUpdate(rid="alice#44", user="alice", token=TOKEN, update=GRANT),
        m.Ack(rid="alice#44"),
        m.ConfirmUpdates(rid="bob#5", user="bob", token=TOKEN, ids=("alice#42", "alice#43")),
        m.PeerHeartbeat(
            node=2,
            epoch=1_767_225_600_123,
            state="down",
            load=3,
            token_epoch=7,
            token_holder=0,
            digest=DIGEST,
        ),
        m.Election(rid="alice#1", node=3, priority=2**40 + 5, round=1, bind=0b1110),
        m.ElectionOk(rid="alice#1", node=3, round=1),
        m.Coordinator(rid="alice#1", node=3, round=1),
        m.Claim(rid="alice#1", node=3, round=1),
        m.EncryptOffer(rid="alice#1", image="photo.png", size=1_900_000, attempt=1),
        m.FetchPayload(rid="alice#1", node=2, attempt=1),
        m.Done(rid="alice#1", node=3, acked=True),
        m.DoneBatch(node=3, acked=("alice#1", "bob#2"), unacked=("carol#3",)),
        m.ElectionBatch(node=3, items=(
            m.ElectionItem(kind="election", rid="alice#1", priority=1_000_200, round=1, bind=0b1110),
            m.ElectionItem(kind="ok", rid="bob#2", priority=0, round=1, bind=0),
            m.ElectionItem(kind="claim", rid="carol#3", priority=0, round=1, bind=0),
            m.ElectionItem(kind="coordinator", rid="dave#4", priority=0, round=1, bind=0),
        ), acked=("erin#5",), unacked=("frank#6",)),
        m.Token(epoch=8, holder=2, seq=1234),
        m.GoingDown(node=1, epoch=1_767_225_600_123),
        m.ComingUp(node=1, epoch=1_767_225_600_124),
        m.StateRequest(node=1),
        m.StateSync(node=2, users=(BOB, CAROL), updates=(GRANT, MORE, REVOKE), forgotten=("alice#1",), digest=DIGEST,
                    pins=(m.Pin(user="bob", sign_key=bytes(32), box_key=bytes(range(32))),)),
        m.DirectoryChange(op="join", entry=BOB),
        m.ReplicateUpdate(update=MORE),
        m.ForgetUpdates(ids=("alice#42", "bob#17"), user="bob", session=bytes(16)),
        m.TokenVote(epoch=9, candidate=3, voter=1),
        m.PreviewRequest(rid="bob#6", user="bob", token=TOKEN),
        m.PreviewReply(
            rid="bob#6",
            previews=(
                m.Preview(image="sunset.jpg", jpeg=JPEG),
                m.Preview(image="cat.png", jpeg=b""),
            ),
        ),
        m.ImageRequest(rid="bob#7", user="bob", token=TOKEN, image="sunset.jpg", views=2, days=2.5),
        m.ImageReply(rid="bob#7", image="sunset.jpg", sealed=PNG, grant=b"signed grant"),
        m.AccessUpdate(rid="alice#45", user="alice", token=TOKEN, update=REVOKE),
        m.MoreViews(rid="bob#8", user="bob", token=TOKEN, image="sunset.jpg", views=1_000_000),
        m.UpdateApplied(rid="alice#45", views_left=0),
    ]
}
