"""`/dashboard`: a small self-contained web page (HTML, CSS, JS shipped in `static/`) that
shows an org's yearly report as tables and SVG charts. Not part of the public API."""
