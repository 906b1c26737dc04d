"""SIPp scenario text: the pieces of a phone on a SIP line, as SIPp's XML wants them.

The live suite's phones (callers, people rung by a transfer, a person the test cues) and the
phone-call bench are SIPp processes; their scenarios are built from these pieces, so the SIP
they speak is written once. A user trying a trunk by hand can build the same: for example
`XML_HEAD + '<scenario name="call">' + dial() + ... + '</scenario>'`, run with
`sipp -sf call.xml -s NUMBER HOST:5060`.

Every message is PCMA (G.711 A-law, payload type 8), which livekit-sip always accepts; a
caller may also offer RFC 2833 key presses (payload type 101). Placeholders in square brackets
are SIPp's own ([local_ip], [call_id], ...).
"""

from __future__ import annotations

XML_HEAD = '<?xml version="1.0" encoding="ISO-8859-1" ?>'


def send(message: str, *, retrans: bool = False) -> str:
    """A `<send>` of one SIP message (its lines indented six spaces); `retrans`: resent every
    500 ms until answered (over UDP, for requests and answers that must arrive)."""
    attrs = ' retrans="500"' if retrans else ""
    return f"  <send{attrs}><![CDATA[\n{message}\n  ]]></send>"


def request_headers(*, cseq: str, in_dialog: bool) -> str:
    """A caller's request headers: `in_dialog` once the far end has answered (its tag in To)."""
    peer = "[peer_tag_param]" if in_dialog else ""
    return f"""\
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:[field0]@[local_ip]:[local_port]>;tag=[pid]SIPpTag[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>{peer}
      Call-ID: [call_id]
      CSeq: {cseq}
      Contact: sip:[field0]@[local_ip]:[local_port]
      Max-Forwards: 70"""


# The headers of an answer to the last request received: `REPLY` ours in a dialog we answer
# (our tag in To), `ECHO` the request's own (answering the far end's BYE or OPTIONS).
REPLY = """\
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]"""
ECHO = """\
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]"""
CONTACT = "      Contact: <sip:[local_ip]:[local_port];transport=[transport]>"


def sdp(*, key_presses: bool = False) -> str:
    """The body of an offer or an answer: PCMA at the phone's media address, and with
    `key_presses` RFC 2833 telephone events."""
    formats = "8 101" if key_presses else "8"
    events = ""
    if key_presses:
        events = "\n      a=rtpmap:101 telephone-event/8000\n      a=fmtp:101 0-16"
    return f"""\
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP {formats}
      a=rtpmap:8 PCMA/8000{events}"""


def reply(status: str, *, contact: bool = False) -> str:
    """Answer the last request received with `status` (e.g. "486 Busy Here"), in our dialog;
    `contact`: with our Contact (where the far end sends its in-dialog requests)."""
    headers = f"{REPLY}\n{CONTACT}" if contact else REPLY
    return send(f"      SIP/2.0 {status}\n{headers}\n      Content-Length: 0")


def answer(*, retrans: bool = False) -> str:
    """Answer the INVITE: 200 OK with PCMA."""
    return send(f"      SIP/2.0 200 OK\n{REPLY}\n{CONTACT}\n{sdp()}", retrans=retrans)


# 200 OK to the far end's in-dialog request (its BYE, its OPTIONS)
OK = send(f"      SIP/2.0 200 OK\n{ECHO}\n      Content-Length: 0")


def dial(*, key_presses: bool = False) -> str:
    """The caller's INVITE and the provisional answers it may get (100, 180, 183); a
    `<recv response="200">` follows it in the scenario."""
    invite = send(
        "      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0\n"
        f"{request_headers(cseq='1 INVITE', in_dialog=False)}\n{sdp(key_presses=key_presses)}",
        retrans=True,
    )
    provisional = "\n".join(
        f'  <recv response="{code}" optional="true"/>' for code in (100, 180, 183)
    )
    return f"{invite}\n{provisional}\n"


def ack() -> str:
    """The caller's ACK of the 200 OK."""
    return send(
        "      ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0\n"
        f"{request_headers(cseq='1 ACK', in_dialog=True)}\n      Content-Length: 0"
    )


def hang_up() -> str:
    """The caller's BYE (its answer is the scenario's next `<recv response="200">`)."""
    return send(
        "      BYE sip:[service]@[remote_ip]:[remote_port] SIP/2.0\n"
        f"{request_headers(cseq='2 BYE', in_dialog=True)}\n      Content-Length: 0",
        retrans=True,
    )


def play(pcap: object) -> str:
    """Send a pcap's RTP (SIPp's play_pcap_audio), without waiting for it to end."""
    return f'  <nop><action><exec play_pcap_audio="{pcap}"/></action></nop>'
