"""Datagram fuzzer for TI-8, run inside a client host: `python -m net.fuzz --client HOST:PORT
--peer HOST:PORT --secret S --rate N --duration S --seed K` (tests/ on PYTHONPATH).

Sends, at `--rate` datagrams a second in all (half to each socket), a seeded mix of:
- random bytes (1..1472 long);
- valid datagrams of real messages (client socket: CRC frames of every client message type,
  ACK and PROBE frames; peer socket: HMAC frames made with the cluster key but claiming a
  node id from this unconfigured address), mutated (bit flips, byte overwrites, truncation,
  extension, header field overwrites), and for the client socket half of them re-sealed with
  a valid CRC so they reach the header checks, reassembly and the message decoder.
Prints one JSON line at the end: datagrams sent per socket and the achieved rate.
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import sys
import time

from codec import messages as M
from transport import frames as F

from .wire import frame

MUTATORS = ("flip", "overwrite", "truncate", "extend", "header")


def corpus_client() -> list[bytes]:
    """Valid client-socket datagrams (CRC): one of each client message type, ACK and PROBE."""
    tok = bytes(range(16))
    upd = M.Update(id="fz#1", kind="grant", owner="fz", borrower="bob", image="a.png", delta=1,
                   addressee="bob", grant=b"g" * 40, created=1.0)  # fmt: skip
    msgs: list[M.Message] = [
        M.StatusQuery(rid="fz#1"), M.DirectoryQuery(rid="fz#2"),
        M.Join(rid="fz#3", user="fz", sign_key=b"k" * 32, box_key=b"b" * 32, stamp=1.7e9,
               proof=b"p" * 64),
        M.ClientHeartbeat(user="fz", token=tok), M.Leave(user="fz", token=tok),
        M.PostUpdate(rid="fz#4", user="fz", token=tok, update=upd),
        M.ConfirmUpdates(rid="fz#5", user="fz", token=tok, ids=("fz#1", "fz#2")),
        M.EncryptRequest(rid="fz#6", image="a.png", data=b"\x89PNG\r\n\x1a\n" + b"\0" * 60,
                         attempt=0),
        M.Ack(rid="fz#7"),
    ]
    crc = F.CrcFramer()
    out = [frame(crc, m, epoch=1, msg_id=i + 1, nonce=7) for i, m in enumerate(msgs)]
    out.append(F.pack(crc, F.ACK, type_code=1, epoch=1, msg_id=1, total=1, echo=7,
                      payload=F.ack_payload(0, b"\x01")))  # fmt: skip
    out.append(F.pack(crc, F.PROBE, nonce=7, echo=5))
    return out


def corpus_peer(secret: bytes) -> list[bytes]:
    """Peer-socket datagrams with a valid tag (cluster key) claiming node 2: refused here for
    the address, and once mutated for the tag."""
    hmac = F.HmacFramer(F.derive_peer_key(secret))
    now = int(time.time() * 1000)
    msgs: list[M.Message] = [
        M.PeerHeartbeat(node=2, epoch=now, state="up", load=0, token_epoch=1, token_holder=2,
                        digest=b"\0" * 16),
        M.Election(rid="fz#1", node=2, priority=5, round=1, bind=0b1110),
        M.Coordinator(rid="fz#1", node=2, round=1),
        M.Token(epoch=9, holder=1, seq=0), M.GoingDown(node=2, epoch=now),
        M.ForgetUpdates(ids=("fz#1",), user="bob", session=bytes(16)), M.StateRequest(node=2),
    ]
    return [frame(hmac, m, sender=2, epoch=now, msg_id=i + 1) for i, m in enumerate(msgs)]


def mutate(rng: random.Random, d: bytes) -> bytes:
    b = bytearray(d)
    kind = rng.choice(MUTATORS)
    if kind == "flip":
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(len(b) * 8)
            b[i // 8] ^= 1 << (i % 8)
    elif kind == "overwrite":
        for _ in range(rng.randint(1, 8)):
            b[rng.randrange(len(b))] = rng.randrange(256)
    elif kind == "truncate":
        del b[rng.randrange(1, len(b)) :]
    elif kind == "extend":
        b += rng.randbytes(rng.randint(1, 200))
    else:  # a header field gets an extreme value
        at = rng.choice([3, 4, 5, 6, 8, 16, 20, 24, 26, 28, 36, 40, 48])
        b[at : at + 4] = rng.choice([b"\xff\xff\xff\xff", b"\0\0\0\0", rng.randbytes(4)])
    return bytes(b)[:1472]


def datagram(rng: random.Random, valid: list[bytes], crc: bool) -> bytes:
    roll = rng.random()
    if roll < 0.2:
        return rng.randbytes(rng.randint(1, 1472))
    d = mutate(rng, rng.choice(valid)) if roll < 0.95 else rng.choice(valid)
    return reseal(d) if crc and rng.random() < 0.5 else d


def reseal(d: bytes) -> bytes:
    import zlib

    if len(d) < F.HEADER_SIZE + 4:
        return d
    body = d[:-4]
    return body + zlib.crc32(body).to_bytes(4, "little")


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m net.fuzz")
    p.add_argument("--client", required=True)
    p.add_argument("--peer", required=True)
    p.add_argument("--secret", required=True)
    p.add_argument("--rate", type=float, default=2500.0)
    p.add_argument("--duration", type=float, default=30.0)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    rng = random.Random(args.seed)
    targets = []
    for spec, valid, crc in ((args.client, corpus_client(), True),
                             (args.peer, corpus_peer(args.secret.encode()), False)):  # fmt: skip
        host, port = spec.rsplit(":", 1)
        targets.append(((host, int(port)), valid, crc))
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(4)]
    sent = [0, 0]
    start = time.monotonic()
    n = 0
    while (elapsed := time.monotonic() - start) < args.duration:
        if n > elapsed * args.rate:  # ahead of the rate: wait a little
            time.sleep(0.001)
            continue
        which = n % 2
        addr, valid, crc = targets[which]
        try:
            socks[rng.randrange(len(socks))].sendto(datagram(rng, valid, crc), addr)
            sent[which] += 1
        except OSError:
            pass
        n += 1
    seconds = time.monotonic() - start
    print(json.dumps({"client": sent[0], "peer": sent[1], "seconds": round(seconds, 2),
                      "rate": round(sum(sent) / seconds)}), flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
