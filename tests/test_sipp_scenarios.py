"""workers.telephony.sipp: the SIPp scenario pieces the live suite's phones and the phone-call
bench are built from. Their SIP is checked live (tests/live/test_phone_calls.py and others);
here, that the pieces compose into XML SIPp can read and say what a phone on a PCMA line must."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from workers.telephony import sipp


def _scenario(*pieces: str) -> ET.Element:
    return ET.fromstring(
        f'{sipp.XML_HEAD}\n<scenario name="t">\n' + "\n".join(pieces) + "\n</scenario>\n"
    )


def _sent(root: ET.Element) -> list[str]:
    return [(el.text or "").strip() for el in root.iter("send")]


def test_a_caller_dials_acks_and_hangs_up_in_its_dialog() -> None:
    root = _scenario(
        sipp.dial(key_presses=True),
        '  <recv response="200" rtd="true"/>',
        sipp.ack(),
        sipp.play("/tmp/line.pcap"),
        sipp.hang_up(),
        '  <recv response="200"/>',
    )
    invite, ack, bye = _sent(root)
    assert invite.startswith("INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0")
    assert "m=audio [media_port] RTP/AVP 8 101" in invite  # PCMA and key presses offered
    assert "a=rtpmap:101 telephone-event/8000" in invite
    assert "CSeq: 1 INVITE" in invite and "[peer_tag_param]" not in invite
    assert "CSeq: 1 ACK" in ack and "[peer_tag_param]" in ack  # the far end's tag: in dialog
    assert "CSeq: 2 BYE" in bye and "[peer_tag_param]" in bye
    provisional = [el.get("response") for el in root.iter("recv") if el.get("optional")]
    assert provisional == ["100", "180", "183"]
    assert [el.get("retrans") for el in root.iter("send")] == ["500", None, "500"]
    play = root.find("nop/action/exec")
    assert play is not None and play.get("play_pcap_audio") == "/tmp/line.pcap"


def test_a_plain_caller_offers_pcma_only() -> None:
    (invite,) = _sent(_scenario(sipp.dial()))
    assert "RTP/AVP 8\n" in invite and "telephone-event" not in invite


def test_a_called_phone_answers_in_its_own_dialog_with_pcma() -> None:
    root = _scenario(
        '  <recv request="INVITE"/>',
        sipp.reply("180 Ringing", contact=True),
        sipp.answer(retrans=True),
        '  <recv request="BYE"/>',
        sipp.OK,
    )
    ringing, ok, bye_ok = _sent(root)
    assert ringing.startswith("SIP/2.0 180 Ringing") and "Contact: <sip:[local_ip]" in ringing
    assert ok.startswith("SIP/2.0 200 OK") and "m=audio [media_port] RTP/AVP 8" in ok
    for answer in (ringing, ok):
        assert "[last_To:];tag=[pid]SIPpTag01[call_number]" in answer  # our tag: our dialog
    assert "[last_To:]\n" in bye_ok and "tag=" not in bye_ok  # the far end's BYE, echoed
    assert "Contact" not in sipp.reply("486 Busy Here")
