#!/usr/bin/env python3
"""INVITE flood over UDP for benches/flood_memory.sh: sip_flood.py HOST PORT RATE SECONDS [TOKEN].
Each INVITE has a fresh Call-ID and branch and is never ACKed; responses are read and counted."""
import socket, sys, time, random, os
target = (sys.argv[1], int(sys.argv[2])); rate = int(sys.argv[3]); seconds = float(sys.argv[4]); token = sys.argv[5] if len(sys.argv) > 5 else "x.y.z"
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); s.setblocking(False)
port = s.getsockname()[1]
sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
start = time.time(); n = 0; got = 0
while time.time() - start < seconds:
    due = int((time.time() - start) * rate)
    while n < due:
        cid = "%x" % random.getrandbits(64)
        msg = (f"INVITE sip:gw@{target[0]}:{target[1]} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{cid}\r\n"
               f"From: <sip:a@127.0.0.1>;tag={cid}\r\nTo: <sip:gw@{target[0]}>\r\nCall-ID: {cid}\r\nCSeq: 1 INVITE\r\n"
               f"Contact: <sip:a@127.0.0.1:{port}>\r\nMax-Forwards: 70\r\nUser-to-User: {token};encoding=jwt\r\n"
               f"Content-Type: application/sdp\r\nContent-Length: {len(sdp)}\r\n\r\n{sdp}")
        try: s.sendto(msg.encode(), target)
        except BlockingIOError: pass
        n += 1
    try:
        while True: s.recv(65535); got += 1
    except BlockingIOError: pass
    time.sleep(0.001)
print(f"sent {n} INVITEs, received {got} responses", file=sys.stderr)
