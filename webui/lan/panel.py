"""The page's "Open on your phone" panel: the QR code of the first network URL, every URL, and
what the phone will ask (accept the self-signed certificate once, log in)."""

from __future__ import annotations

import html

from .serving import PhoneLink

CERT_NOTE = ("The certificate is self-signed: the phone warns the first time. Accept it once "
             "(Safari: Show Details → visit this website; Chrome: Advanced → Proceed), then log in. "
             "证书为自签名：手机首次打开时会提示，接受一次即可。")
HTTP_NOTE = ("This address is plain http: phones may not use the microphone here (start the app with --lan "
             "for HTTPS); upload still works. 普通 http 下手机无法录音，请用 --lan 启动。")


def panel_html(link: PhoneLink) -> str:
    """The panel's HTML: the QR code (an SVG data URI), the URLs as links, the note."""
    first = html.escape(link.urls[0])
    urls = "".join(f'<li><a href="{html.escape(url)}">{html.escape(url)}</a></li>' for url in link.urls)
    note = CERT_NOTE if link.self_signed else "" if link.secure else HTTP_NOTE
    return (f'<div class="cf-phone"><img class="cf-qr" id="cosyfast-phone-qr" src="{link.qr_data_uri}" '
            f'alt="QR code of {first}" width="180" height="180">'
            f'<div><p>Scan the code with the phone\'s camera, or type the address. 用手机相机扫码打开。</p>'
            f'<ul class="cf-phone-urls">{urls}</ul>'
            f'{f"<p class=cf-phone-note>{html.escape(note)}</p>" if note else ""}</div></div>')
