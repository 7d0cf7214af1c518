#!/usr/bin/env python3
"""Mutated SIP over UDP for benches/flood_memory.sh (MODE=garbage): sip_garbage.py HOST PORT RATE SECONDS.
Each datagram is an INVITE with up to 8 random byte flips, cuts and insertions (seeded: the same run each time)."""
import socket, sys, time, random
target=(sys.argv[1], int(sys.argv[2])); rate=int(sys.argv[3]); secs=float(sys.argv[4])
s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); s.setblocking(False)
port=s.getsockname()[1]
base=(f"INVITE sip:gw@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKBR\r\nFrom: <sip:a@127.0.0.1>;tag=T\r\n"
      f"To: <sip:gw@127.0.0.1>\r\nCall-ID: CID\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContact: <sip:a@127.0.0.1:{port}>\r\n"
      "User-to-User: x.y.z;encoding=jwt\r\nContent-Type: application/sdp\r\nContent-Length: 0\r\n\r\n").encode()
rnd=random.Random(7); start=time.time(); n=0
while time.time()-start<secs:
    due=int((time.time()-start)*rate)
    while n<due:
        b=bytearray(base.replace(b"BR", b"%x"%rnd.getrandbits(48)).replace(b"CID", b"%x"%rnd.getrandbits(48)))
        for _ in range(rnd.randint(0,8)):
            i=rnd.randrange(len(b)); op=rnd.random()
            if op<0.4: b[i]=rnd.randrange(256)
            elif op<0.7: del b[i:i+rnd.randint(1,20)]
            else: b[i:i]=bytes(rnd.randrange(256) for _ in range(rnd.randint(1,50)))
        try: s.sendto(bytes(b), target)
        except (BlockingIOError, OSError): pass
        n+=1
    try:
        while True: s.recv(65535)
    except BlockingIOError: pass
    time.sleep(0.001)
print("sent", n, file=sys.stderr)
